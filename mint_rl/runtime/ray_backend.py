"""The Ray backend: the same actor classes, each in a Ray actor process of its own.

    async with open_system(backend=RayBackend(address="auto")) as system:
        sampler = await system.spawn(SamplerActor, ..., resources=Resources(num_cpus=4))
        await sampler.rollout(...)        # the same call; the method runs in a Ray worker

Only the actor instance moves. Its cell stays in the driver, so everything the runtime promises
holds unchanged: the bounded mailbox and its back-pressure, ordered endpoints one at a time,
concurrent ones up to their bound, supervision (a crash fails the callers in flight, is reported
and restarts the actor under its policy). Each message the cell hands to the instance becomes a
remote call to the actor's `ActorHost`, a Ray actor that constructs the class, runs `setup()`,
the endpoints and `teardown()` on its own event loop. Results and exceptions come back as
values, so an endpoint's error reaches the cell with its own type, as it would in-process.

A restart reuses the host's process when it is alive: the new instance takes over process-wide
state (a sampler's running vLLM engine) exactly as a local restart does. When the process died
(killed, out of memory, its node gone) the call raises Ray's `ActorDiedError`, which is a crash
like any other, and the next incarnation starts in a fresh process. A caller cancelled while it
waits cancels the remote call (`ray.cancel`). When the actor stops for good its process is
killed.

Actors spawned without `resources=` stay in the driver: light coordinators (the advantage actor)
that hold handles to the others. Ray is imported only here, and only when a system uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from mint_rl.runtime.actor import Actor, ActorContext, Resources, endpoint, endpoints_of

Outcome = tuple[bool, Any]
"""(True, the endpoint's return value) or (False, the exception it raised)."""


@dataclass(frozen=True)
class RayBackend:
    """Run actors spawned with `resources=` as Ray actors.

    `address`: the Ray cluster to join ("auto" = the one started on this node with `ray start`,
    or "HOST:6379"); None starts a local cluster for this system and stops it afterwards. If Ray
    is already initialised in this process (a notebook, a test session), that cluster is used
    and left running.
    """

    address: str | None = None
    num_cpus: int | None = None
    """CPUs of a local cluster; None: the cores this process may use."""


_BY_VALUE: set[str] = set()


def ship_by_value(module_name: str) -> None:
    """Actors' arguments from this module travel by value, not by name: for modules Ray's
    workers cannot import by name (a recipe loaded from a file). Ray is not imported here."""
    _BY_VALUE.add(module_name)


@contextlib.contextmanager
def ray_session(backend: RayBackend) -> Iterator[None]:
    """Connects to (or starts) the cluster for the length of the block."""
    import ray
    from ray import cloudpickle

    for name in _BY_VALUE:
        cloudpickle.register_pickle_by_value(sys.modules[name])
    if ray.is_initialized():
        yield
        return
    if backend.address is None:
        num_cpus = backend.num_cpus or len(os.sched_getaffinity(0))
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=backend.address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_gpus() -> float:
    """GPUs in the Ray cluster this process is connected to."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


class ActorHost:
    """The Ray actor holding one mint_rl actor instance, in a Ray worker process."""

    def __init__(self, name: str, factory: Callable[..., Actor], args: tuple[Any, ...],
                 device: str) -> None:
        self._name, self._factory, self._args, self._device = name, factory, args, device
        self._instance: Actor | None = None

    async def start(self, restarts: int) -> Outcome:
        """A fresh instance, set up: incarnation number `restarts` of the actor."""
        try:
            instance = self._factory(*self._args)
            # One actor per process: its own limiter for `ctx.run_blocking`, made on this loop.
            instance._ctx = ActorContext(self._name, self._device, anyio.CapacityLimiter(1),
                                         restarts)
            await instance.setup()
        except Exception as exc:
            return False, self._portable(exc)
        self._instance = instance
        return True, None

    async def call(self, endpoint: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> Outcome:
        assert self._instance is not None, "call before start"
        try:
            return True, await getattr(self._instance, endpoint)(*args, **kwargs)
        except Exception as exc:
            return False, self._portable(exc)

    async def stop(self) -> Outcome:
        """Tears the instance down (the process lives on for the next incarnation, if any)."""
        instance, self._instance = self._instance, None
        try:
            if instance is not None:
                await instance.teardown()
        except Exception as exc:
            return False, self._portable(exc)
        return True, None

    def _portable(self, exc: Exception) -> Exception:
        """`exc` with its remote traceback as a note, or a RuntimeError naming it if it does not
        pickle (the driver must be able to receive it)."""
        where = f"in actor {self._name!r} (Ray worker pid {os.getpid()}):\n"
        note = where + "".join(traceback.format_exception(exc))
        try:
            exc.add_note(note)
            pickle.dumps(exc)
            return exc
        except Exception:
            error = RuntimeError(f"{type(exc).__name__}: {exc}")
            error.add_note(note)
            return error


class RaySlot:
    """The driver's side of one remote actor: its `ActorHost`, kept across restarts while its
    process lives, and the remote calls made to it."""

    def __init__(self, name: str, factory: Callable[..., Actor], args: tuple[Any, ...],
                 device: str, resources: Resources) -> None:
        self.name = name
        self._spec = (name, factory, args, device)
        self._resources = resources
        self._host: Any = None  # a ray.actor.ActorHandle of ActorHost

    async def start(self, restarts: int) -> None:
        if self._host is None:
            self._host = self._create()
        await self._remote(self._host.start.remote(restarts))

    async def call(self, endpoint: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._host is None:
            raise RuntimeError(f"actor {self.name!r}: its Ray process is gone")
        return await self._remote(self._host.call.remote(endpoint, args, kwargs))

    async def stop(self) -> None:
        from ray.exceptions import RayActorError

        if self._host is not None:
            with contextlib.suppress(RayActorError):
                await self._remote(self._host.stop.remote())

    def close(self) -> None:
        """The actor stopped for good: its process goes."""
        import ray

        if self._host is not None:
            ray.kill(self._host)
            self._host = None

    def _create(self) -> Any:
        import ray

        host = ray.remote(ActorHost).options(
            num_cpus=self._resources.num_cpus, num_gpus=self._resources.num_gpus,
            max_restarts=0,  # restarts are the runtime's supervision, not Ray's
            runtime_env={"env_vars": dict(self._resources.env)} if self._resources.env else None)
        return host.remote(*self._spec)

    async def _remote(self, ref: Any) -> Any:
        import ray
        from ray.exceptions import RayActorError

        try:
            ok, value = await ref
        except RayActorError:
            self._host = None  # its process died: the next incarnation starts a new one
            raise
        except BaseException:  # cancelled (a timeout, a crash next door, a stop): so is the call
            ray.cancel(ref)
            raise
        if not ok:
            raise value
        return value


class RemoteActor(Actor):
    """What the cell runs when the instance lives in Ray: setup, teardown and every endpoint
    are calls to the slot's host. `remote_class` gives it the endpoints of the real class."""

    def __init__(self, slot: RaySlot) -> None:
        self._slot = slot

    async def setup(self) -> None:
        await self._slot.start(self.ctx.restarts)

    async def teardown(self) -> None:
        await self._slot.stop()

    async def _call(self, endpoint: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self._slot.call(endpoint, args, kwargs)


_REMOTE_CLASSES: dict[type, type[RemoteActor]] = {}


def remote_class(cls: type) -> type[RemoteActor]:
    """A `RemoteActor` subclass named like `cls`, with each of its endpoints (same ordering,
    concurrency bound and `raises=`) forwarding to the Ray actor."""
    found = _REMOTE_CLASSES.get(cls)
    if found is None:
        forwarders = {name: _forwarder(name, spec.concurrent, spec.max_concurrency, spec.raises)
                      for name, spec in endpoints_of(cls).items()}
        found = type(cls.__name__, (RemoteActor,), {"__module__": __name__, **forwarders})
        _REMOTE_CLASSES[cls] = found
    return found


def _forwarder(name: str, concurrent: bool, max_concurrency: int,
               raises: tuple[type[Exception], ...]) -> Callable[..., Any]:
    async def forward(self: RemoteActor, *args: Any, **kwargs: Any) -> Any:
        return await self._call(name, args, kwargs)

    forward.__name__ = forward.__qualname__ = name
    return endpoint(concurrent=concurrent, max_concurrency=max_concurrency, raises=raises)(forward)

"""The actor system: one task group that owns every actor, so none outlives the `async with`.

    async with open_system(restart=RestartPolicy(max_restarts=3), on_failure=report) as system:
        learner = await system.spawn(LearnerActor, cfg, name="learner", device="cuda:0")
        metrics = await learner.train(datums)
        await system.stop(learner)
    # here every actor has drained its mailbox, run teardown() and exited

`spawn` returns the actor's handle typed as the actor class, so calls read and type-check like
method calls. Everything else about an actor (stopping it, its statistics) is asked of the
system, which keeps the handle free of names that could collide with endpoints.

With `open_system(backend=RayBackend(...))`, an actor spawned with `resources=` runs in a Ray
actor process of its own (mint_rl/runtime/ray_backend.py); its handle, mailbox and supervision
stay here, so callers and the code around them do not change.

Leaving the block normally stops the actors gracefully, last spawned first (later actors usually
hold handles to earlier ones). Leaving it with an exception, or an actor escalating a crash,
cancels every actor instead; teardown() still runs, shielded.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from anyio import TASK_STATUS_IGNORED, create_task_group
from anyio.abc import TaskGroup, TaskStatus

from mint_rl.runtime.actor import Actor, Resources, actor_class
from mint_rl.runtime.cell import ActorCell, ActorStats, CellConfig
from mint_rl.runtime.handle import ActorHandle, actor_name
from mint_rl.runtime.ray_backend import RayBackend, RaySlot, ray_session, remote_class
from mint_rl.runtime.supervisor import FailureCallback, FailureReport, RestartPolicy, Supervisor
from mint_rl.runtime.threads import DeviceLimiters, LimiterStats

A = TypeVar("A", bound=Actor)


@dataclass(frozen=True)
class SystemStats:
    """Snapshot of a whole system: every live actor, every device limiter, crash count."""

    actors: tuple[ActorStats, ...]
    limiters: tuple[LimiterStats, ...]
    failures: int


class ActorSystem:
    """Spawns actors into one task group, stops them and reports on them. Made by `open_system`."""

    def __init__(
        self,
        tg: TaskGroup,
        supervisor: Supervisor,
        limiters: DeviceLimiters,
        restart: RestartPolicy,
        teardown_timeout: float,
        backend: RayBackend | None = None,
    ) -> None:
        self._tg = tg
        self.backend = backend
        self._supervisor = supervisor
        self._limiters = limiters
        self._restart = restart
        self._teardown_timeout = teardown_timeout
        self._cells: dict[str, ActorCell] = {}  # live actors, in spawn order
        self._counter = itertools.count()

    async def spawn(
        self,
        actor_cls: Callable[..., A],
        *args: Any,
        name: str | None = None,
        restart: RestartPolicy | None = None,
        mailbox_size: int = 64,
        device: str = "cpu",
        setup_timeout: float | None = None,
        resources: Resources | None = None,
    ) -> A:
        """Start an actor and return its handle once its `setup()` has finished.

        The handle is typed as the actor class so that `await actor.endpoint(...)` resolves to
        the method; at run time it is an `ActorHandle` that sends the call as a message.

        Args:
            actor_cls: the actor class (or a picklable factory such as `functools.partial`).
            args: positional arguments for it; use `functools.partial` for keyword ones.
            name: unique within the system; defaults to the class name and a number.
            restart: what to do when it crashes; defaults to the system's policy.
            mailbox_size: messages that may wait before senders block.
            device: selects the thread limiter used by `ctx.run_blocking`.
            setup_timeout: seconds `setup()` may take.
            resources: with a Ray backend, run the actor as a Ray actor asking for these; without
                (or with the local backend) it runs in this process.

        Raises:
            ActorSetupError: the constructor or `setup()` raised or timed out.
            ValueError: the name is taken.
        """
        if name is None:
            name = f"{getattr(actor_cls, '__name__', 'actor')}-{next(self._counter)}"
        if name in self._cells:
            raise ValueError(f"an actor named {name!r} is already running")
        config = CellConfig(
            name=name,
            restart=restart or self._restart,
            mailbox_size=mailbox_size,
            device=device,
            setup_timeout=setup_timeout,
            teardown_timeout=self._teardown_timeout,
        )
        slot = None
        if self.backend is not None and resources is not None:
            slot = RaySlot(name, actor_cls, args, device, resources)
            actor_cls, args = remote_class(actor_class(actor_cls)), (slot,)  # type: ignore[assignment]
        cell = ActorCell(actor_cls, args, config, self._supervisor, self._limiters.get(device))
        self._cells[name] = cell
        return await self._tg.start(self._run_cell, cell, slot, name=f"actor:{name}")

    async def _run_cell(
        self, cell: ActorCell, slot: RaySlot | None,
        *, task_status: TaskStatus[ActorHandle] = TASK_STATUS_IGNORED
    ) -> None:
        try:
            await cell.run(task_status=task_status)
        finally:
            del self._cells[cell.name]
            if slot is not None:
                slot.close()  # stopped for good: its Ray process goes too

    async def stop(self, actor: object, grace: float | None = 5.0) -> None:
        """Stop one actor: it finishes the messages already queued, then runs teardown().

        After `grace` seconds it is cancelled instead; messages it did not handle fail with
        `ActorStoppedError`. Returns once the actor is gone; an actor already gone is left be.
        """
        cell = self._cells.get(actor_name(actor))
        if cell is not None and cell.handle is actor:
            await cell.stop(grace)

    @property
    def failures(self) -> tuple[FailureReport, ...]:
        """Every crash so far, oldest first."""
        return tuple(self._supervisor.reports)

    def actors(self) -> tuple[ActorHandle, ...]:
        """Handles of every live actor, in spawn order."""
        return tuple(cell.handle for cell in self._cells.values())

    def statistics(self) -> SystemStats:
        """A snapshot: state, mailbox depth, messages handled and restarts of each live actor."""
        return SystemStats(
            actors=tuple(cell.statistics() for cell in self._cells.values()),
            limiters=self._limiters.statistics(),
            failures=len(self._supervisor.reports),
        )

    async def shutdown(self, grace: float | None = 5.0) -> None:
        """Stop every actor gracefully, last spawned first."""
        for cell in reversed(list(self._cells.values())):
            await cell.stop(grace)

    def cancel(self) -> None:
        """Cancel every actor now; teardown() hooks still run, shielded."""
        self._tg.cancel_scope.cancel()


@asynccontextmanager
async def open_system(
    *,
    restart: RestartPolicy | None = None,
    on_failure: FailureCallback | None = None,
    device_capacity: Mapping[str, int] | None = None,
    stop_grace: float | None = 5.0,
    teardown_timeout: float = 5.0,
    backend: RayBackend | None = None,
) -> AsyncIterator[ActorSystem]:
    """Open an actor system; every actor spawned in it is stopped when the block exits.

    Args:
        restart: default restart policy; `RestartPolicy.never()` (fail fast) if None.
        on_failure: called with each `FailureReport` (may be async).
        device_capacity: threads per device for `run_blocking`, e.g. {"cpu": 2}; default 1.
        stop_grace: per actor, how long a graceful stop may take before it is cancelled.
        teardown_timeout: how long each `teardown()` may take.
        backend: a `RayBackend` runs actors spawned with `resources=` on Ray; None: all local.
    """
    with ray_session(backend) if backend is not None else contextlib.nullcontext():
        async with create_task_group() as tg:
            system = ActorSystem(
                tg,
                Supervisor(on_failure),
                DeviceLimiters(device_capacity),
                restart or RestartPolicy.never(),
                teardown_timeout,
                backend,
            )
            yield system
            await system.shutdown(stop_grace)

"""What an actor is: a class with a few async endpoints, a setup() hook and a teardown() hook.

    class Counter(Actor):
        def __init__(self, start: int) -> None:
            self.total = start

        @endpoint
        async def add(self, n: int) -> int:       # messages run one at a time, in order
            self.total += n
            return self.total

        @endpoint(concurrent=True)
        async def peek(self) -> int:              # may overlap other messages
            return self.total

    async with open_system() as system:
        counter = await system.spawn(Counter, 5)  # typed as Counter; really a handle
        assert await counter.add(1) == 6          # a message to the actor, not a direct call

Only the actor's own task touches its state, so plain endpoints need no locks. An endpoint that
raises crashes the actor (its state may be half-updated) and the supervisor decides what happens
next; exceptions listed in `raises=` are bad-input errors that go back to the caller instead.

This module is the bottom layer of the runtime: it imports nothing from `handle`, `cell` or
`system`, which build on it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from mint_rl.runtime.threads import run_blocking

if TYPE_CHECKING:
    from anyio import CapacityLimiter

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_SPEC_ATTR = "__mint_endpoint__"


@dataclass(frozen=True)
class EndpointSpec:
    """How the runtime delivers messages to one endpoint."""

    name: str
    concurrent: bool = False
    """Run each message in its own task; it may overlap other messages (e.g. `sample`)."""
    max_concurrency: int = 256
    """For concurrent endpoints: messages in flight at once before the mailbox stops draining."""
    raises: tuple[type[Exception], ...] = ()
    """Errors that are the caller's fault: replied to the caller; the actor keeps running."""


@overload
def endpoint(fn: F, /) -> F: ...
@overload
def endpoint(
    *,
    concurrent: bool = False,
    max_concurrency: int = 256,
    raises: tuple[type[Exception], ...] = (),
) -> Callable[[F], F]: ...
def endpoint(
    fn: F | None = None,
    /,
    *,
    concurrent: bool = False,
    max_concurrency: int = 256,
    raises: tuple[type[Exception], ...] = (),
) -> F | Callable[[F], F]:
    """Mark an async method of an `Actor` as callable through its handle.

    The method itself is returned unchanged, so an actor calling its own method runs it directly.

    Args:
        concurrent: handle each message in its own task instead of one after another.
        max_concurrency: bound on concurrent messages in flight (keeps back-pressure).
        raises: exception types that mean "bad request": they reach the caller unchanged and do
            not crash the actor.
    """

    def mark(fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@endpoint needs an async def method, got {fn!r}")
        if fn.__name__.startswith("_"):
            # A handle keeps its own state in underscored names; endpoints never collide with it.
            raise TypeError(f"{fn.__qualname__}: an endpoint name cannot start with '_'")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        setattr(fn, _SPEC_ATTR, EndpointSpec(fn.__name__, concurrent, max_concurrency, raises))
        return fn

    return mark(fn) if fn is not None else mark


_ENDPOINTS: dict[type, dict[str, EndpointSpec]] = {}


def endpoints_of(cls: type) -> dict[str, EndpointSpec]:
    """All endpoints of an actor class, inherited ones included (cached per class)."""
    found = _ENDPOINTS.get(cls)
    if found is None:
        found = {}
        for name in dir(cls):
            spec = getattr(getattr(cls, name, None), _SPEC_ATTR, None)
            if spec is not None:
                found[name] = spec
        _ENDPOINTS[cls] = found
    return found


@dataclass(frozen=True)
class Resources:
    """What one actor asks of a Ray cluster (`spawn(..., resources=...)`): Ray starts it in a
    process of its own on a node that has them free. Fractions below 1 share a CPU or a GPU;
    amounts above 1 must be whole. The local backend runs every actor in this process and
    ignores them (there, `mint_rl.placement` pins cores)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables of the actor's process, e.g. (("OMP_NUM_THREADS", "2"),)."""

    def __post_init__(self) -> None:
        for field, amount in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)):
            if amount < 0 or (amount > 1 and amount != int(amount)):
                raise ValueError(f"resources.{field}: a fraction below 1 or a whole number, "
                                 f"got {amount}")


def actor_class(factory: Any) -> type:
    """The class a factory builds: the class itself, or the one inside a functools.partial."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory if isinstance(factory, type) else type(factory)


class ActorContext:
    """What the runtime gives a running actor: its name, its device and that device's limiter,
    and `restarts`: how many instances crashed before this one (0 for the first)."""

    def __init__(self, name: str, device: str, limiter: CapacityLimiter,
                 restarts: int = 0) -> None:
        self.name = name
        self.device = device
        self.limiter = limiter
        self.restarts = restarts

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking `fn(*args)` in a thread, limited by this actor's device limiter."""
        return await run_blocking(fn, *args, limiter=self.limiter)


class Actor:
    """Base class of actors. Subclasses add `@endpoint` methods and may override the hooks.

    The constructor should only store configuration; heavy loading belongs in `setup()`, which
    runs inside the actor's task so that `spawn` returns only once the actor is ready.
    """

    _ctx: ActorContext | None = None

    @property
    def ctx(self) -> ActorContext:
        """The running actor's context; only available once spawned (from `setup()` on)."""
        if self._ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not running inside an actor system")
        return self._ctx

    async def setup(self) -> None:
        """Load what the actor needs (a model, an engine). Runs before any message."""

    async def teardown(self) -> None:
        """Release resources. Runs once per start, shielded from cancellation, with a timeout."""

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
        counter = await system.spawn(Counter, 5)
        assert await counter.call("add", 1) == 6

Only the actor's own task touches its state, so plain endpoints need no locks. An endpoint that
raises crashes the actor (its state may be half-updated) and the supervisor decides what happens
next; exceptions listed in `raises=` are bad-input errors that go back to the caller instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from mint_rl.runtime.threads import run_blocking

if TYPE_CHECKING:
    from anyio import CapacityLimiter

    from mint_rl.runtime.handle import ActorHandle

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
A = TypeVar("A", bound="Actor")

_SPEC_ATTR = "__mint_endpoint__"


@dataclass(frozen=True)
class EndpointSpec:
    """How the runtime delivers messages to one endpoint."""

    name: str
    concurrent: bool = False
    """Run each message in its own task; it may overlap other messages (e.g. `sample`)."""
    max_concurrency: int = 256
    """For concurrent endpoints: messages in flight at once before the mailbox stops draining."""
    idempotent: bool = False
    """Safe to run twice: redelivered to the restarted actor if it crashed mid-message."""
    raises: tuple[type[Exception], ...] = ()
    """Errors that are the caller's fault: replied to the caller; the actor keeps running."""
    streaming: bool = False
    """An async generator: use `handle.stream(...)` to iterate over its replies."""


@overload
def endpoint(fn: F, /) -> F: ...
@overload
def endpoint(
    *,
    concurrent: bool = False,
    max_concurrency: int = 256,
    idempotent: bool = False,
    raises: tuple[type[Exception], ...] = (),
) -> Callable[[F], F]: ...
def endpoint(
    fn: F | None = None,
    /,
    *,
    concurrent: bool = False,
    max_concurrency: int = 256,
    idempotent: bool = False,
    raises: tuple[type[Exception], ...] = (),
) -> F | Callable[[F], F]:
    """Mark an async method (or async generator) of an `Actor` as callable through its handle.

    Args:
        concurrent: handle each message in its own task instead of one after another.
        max_concurrency: bound on concurrent messages in flight (keeps back-pressure).
        idempotent: the message is redelivered after a crash instead of failing its caller.
        raises: exception types that mean "bad request": they reach the caller unchanged and do
            not crash the actor.
    """

    def mark(fn: F) -> F:
        streaming = inspect.isasyncgenfunction(fn)
        if not (streaming or inspect.iscoroutinefunction(fn)):
            raise TypeError(f"@endpoint needs an async def method, got {fn!r}")
        if "timeout" in inspect.signature(fn).parameters:
            raise TypeError(f"{fn.__qualname__}: 'timeout' is reserved for call(..., timeout=)")
        if streaming and idempotent:
            raise TypeError(f"{fn.__qualname__}: a streaming endpoint cannot be idempotent")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        spec = EndpointSpec(fn.__name__, concurrent, max_concurrency, idempotent, raises, streaming)
        setattr(fn, _SPEC_ATTR, spec)
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


class ActorContext:
    """What the runtime gives a running actor: its name, own handle, device and child spawner."""

    def __init__(
        self,
        name: str,
        handle: ActorHandle[Any],
        device: str,
        limiter: CapacityLimiter,
        spawner: Any,
    ) -> None:
        self.name = name
        self.handle = handle
        self.device = device
        self.limiter = limiter
        self._spawner = spawner

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking `fn(*args)` in a thread, limited by this actor's device limiter."""
        return await run_blocking(fn, *args, limiter=self.limiter)

    async def spawn(
        self, actor_cls: Callable[..., A], *args: Any, **options: Any
    ) -> ActorHandle[A]:
        """Spawn a child actor that lives only as long as this one (same options as
        `ActorSystem.spawn`). Stopping, crashing or cancelling this actor stops its children."""
        return await self._spawner.spawn(actor_cls, *args, **options)


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

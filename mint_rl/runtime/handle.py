"""Handles: how callers talk to an actor. An endpoint is called like the method it is.

    learner = await system.spawn(LearnerActor, cfg)   # typed LearnerActor, really a handle
    metrics = await learner.train(datums)             # a message: queued, handled, replied to
    with anyio.fail_after(5):                         # a timeout is a cancel scope around it
        await learner.save_state("step-10")

`handle.train` posts a message to the actor's mailbox and waits for the reply; the method never
runs in the caller's task. Because `spawn` is typed to return the actor class, editors and type
checkers resolve `learner.train` to `LearnerActor.train`, arguments and return type included.
Only `@endpoint` methods can be reached this way; any other attribute raises `AttributeError`.
The handle keeps its own state in underscored names, which endpoints may not use, so no name of
the handle can shadow an endpoint. Managing an actor (stop, statistics) goes through the system.

Timeouts and cancellation are cancel scopes around the call (`anyio.fail_after`,
`move_on_after`, a cancelled task group), as in Trio, not a parameter of the call. A caller
cancelled while waiting marks its message abandoned: this backend then drops it if the actor has
not started it (a started message runs to the end; its reply is discarded). A Ray backend would
do the same by `ray.cancel`ling the remote task when the caller is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import anyio

from mint_rl.runtime.actor import EndpointSpec
from mint_rl.runtime.channel import ChannelSender
from mint_rl.runtime.errors import ActorStoppedError

Call = Callable[..., Coroutine[Any, Any, Any]]


class Message:
    """One call in a mailbox, and the slot its reply goes into; the caller waits on `event`."""

    __slots__ = ("abandoned", "args", "error", "event", "kwargs", "spec", "value")

    def __init__(self, spec: EndpointSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.spec = spec
        self.args = args
        self.kwargs = kwargs
        self.event = anyio.Event()
        self.abandoned = False
        """Set when the caller stopped waiting: the actor skips the message if not started."""
        self.error: BaseException | None = None
        self.value: Any = None

    def set_result(self, value: Any) -> None:
        self.value = value
        self.event.set()

    def set_error(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


class ActorHandle:
    """A reference to a running actor, cheap to share between actors: `await handle.endpoint()`.

    `spawn` returns it typed as the actor class; at run time every endpoint attribute is a
    coroutine function that sends a message and returns the endpoint's reply.
    """

    def __init__(
        self,
        name: str,
        actor_type: str,
        specs: Mapping[str, EndpointSpec],
        mailbox: ChannelSender[Message],
    ) -> None:
        self._name = name
        self._actor_type = actor_type
        self._specs = specs
        self._mailbox = mailbox

    def __repr__(self) -> str:
        return f"<ActorHandle {self._name} ({self._actor_type})>"

    def __getattr__(self, name: str) -> Call:
        # Only runs for names not found normally: an endpoint's first use, or a mistake.
        if name.startswith("_"):  # internals and dunders (copy, pickle probes): never endpoints
            raise AttributeError(name)
        spec = self._specs.get(name)
        if spec is None:
            raise AttributeError(
                f"actor {self._name!r} ({self._actor_type}) has no endpoint {name!r}: only "
                "@endpoint methods can be called through a handle"
            )
        call = _caller(self._name, spec, self._mailbox)
        self.__dict__[name] = call  # later lookups find it without calling __getattr__
        return call


def _caller(actor: str, spec: EndpointSpec, mailbox: ChannelSender[Message]) -> Call:
    """The coroutine function behind `handle.<endpoint>`: post a message, await its reply."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        """Raises ActorCrashedError (crashed while handling it), ActorStoppedError (stopped
        before handling it), or an exception listed in the endpoint's `raises=`, unchanged."""
        message = Message(spec, args, kwargs)
        try:
            try:
                await mailbox.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise ActorStoppedError(actor) from None
            await message.event.wait()
        except BaseException:
            message.abandoned = True  # cancelled: the actor skips it if it has not started yet
            raise
        if message.error is not None:
            raise message.error
        return message.value

    call.__name__ = spec.name
    call.__qualname__ = f"{actor}.{spec.name}"
    return call


def actor_name(actor: object) -> str:
    """The name an actor was spawned under, from the handle `spawn` returned."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"expected an actor handle from spawn(), got {actor!r}")
    return actor._name

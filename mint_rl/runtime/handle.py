"""Handles: how callers talk to an actor. Three verbs, nothing else.

    total = await counter.call("add", 1, timeout=5)   # wait for the reply
    await counter.cast("add", 1)                        # fire and forget (still back-pressured)
    async for token in sampler.stream("generate", p):  # an async generator endpoint
        ...

An endpoint may be named by string or by the method itself (`counter.call(Counter.add, 1)`, which
lets "go to definition" work). `timeout` is reserved for the call and covers both waiting for room
in the mailbox and waiting for the reply. It is a parameter rather than a `fail_after` around the
call because the backend must act on it: drop the message if it was not started (here), or
`ray.cancel` the remote task (Ray).

`ActorRef` is the interface a handle offers; the Ray backend will implement the same one, which is
why arguments and replies must be picklable (`open_system(check_pickle=True)` checks it locally).
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from mint_rl.runtime.actor import EndpointSpec
from mint_rl.runtime.errors import ActorCallTimeout, ActorStoppedError, MessageNotPicklableError

if TYPE_CHECKING:
    from mint_rl.runtime.cell import ActorCell, ActorStats

A = TypeVar("A")
EndpointName = str | Callable[..., Any]

STREAM_BUFFER = 16
"""Replies a streaming endpoint may run ahead of its consumer."""


class CallReply:
    """Where the actor puts the answer to one `call`; the caller waits on `event`."""

    __slots__ = ("abandoned", "error", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.abandoned = False
        self.error: BaseException | None = None
        self.value: Any = None

    def set_result(self, value: Any) -> None:
        self.value = value
        self.event.set()

    def set_error(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


class StreamReply:
    """Where a streaming endpoint sends its items; an error is raised after the last item."""

    __slots__ = ("abandoned", "error", "send")

    def __init__(self, send: MemoryObjectSendStream[Any]) -> None:
        self.send = send
        self.abandoned = False
        self.error: BaseException | None = None

    def set_error(self, error: BaseException) -> None:
        self.error = error
        self.send.close()


class Envelope:
    """One message in a mailbox. Local only: the Ray backend sends (endpoint, args) instead."""

    __slots__ = ("args", "kwargs", "reply", "spec")

    def __init__(
        self,
        spec: EndpointSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reply: CallReply | StreamReply | None,
    ) -> None:
        self.spec = spec
        self.args = args
        self.kwargs = kwargs
        self.reply = reply


def check_picklable(where: str, value: object) -> None:
    """Raise `MessageNotPicklableError` if `value` could not cross a process boundary."""
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise MessageNotPicklableError(where, exc) from exc


class ActorRef(Protocol[A]):
    """The interface every backend's handle implements (local anyio now, Ray later)."""

    name: str

    async def call(self, endpoint: EndpointName, /, *args: Any, **kwargs: Any) -> Any: ...
    async def cast(self, endpoint: EndpointName, /, *args: Any, **kwargs: Any) -> None: ...
    def stream(
        self, endpoint: EndpointName, /, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]: ...
    async def stop(self, grace: float | None = ...) -> None: ...
    def statistics(self) -> ActorStats: ...


class ActorHandle(Generic[A]):
    """A reference to a running actor. Cheap to copy and share between actors."""

    __slots__ = ("_cell", "_mailbox", "_specs", "name")

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell
        self._mailbox = cell.mailbox
        self._specs = cell.specs
        self.name = cell.name

    def __repr__(self) -> str:
        return f"<ActorHandle {self.name}>"

    async def call(
        self,
        endpoint: EndpointName,
        /,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (the backend acts on it; see module doc)
        **kwargs: Any,
    ) -> Any:
        """Send a message and wait for the endpoint's return value.

        Raises:
            ActorCallTimeout: no reply within `timeout` seconds.
            ActorCrashedError: the actor crashed while handling this message.
            ActorStoppedError: the actor stopped before handling it.
            Any exception listed in the endpoint's `raises=`, unchanged.
        """
        reply = CallReply()
        env = self._envelope(endpoint, args, kwargs, reply, streaming=False)
        try:
            if timeout is None:
                await self._post(env)
                await reply.event.wait()
            else:
                with anyio.fail_after(timeout):
                    await self._post(env)
                    await reply.event.wait()
        except TimeoutError:
            reply.abandoned = True
            raise ActorCallTimeout(self.name, env.spec.name, timeout or 0.0) from None
        except BaseException:
            reply.abandoned = True  # cancelled: the actor skips it if it has not started yet
            raise
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def cast(self, endpoint: EndpointName, /, *args: Any, **kwargs: Any) -> None:
        """Send a message without waiting for it to be handled (only for room in the mailbox)."""
        # The runtime's hottest path: a plain cast by name skips `_envelope` and `_post`.
        spec = self._specs.get(endpoint) if isinstance(endpoint, str) else None
        if spec is None or spec.streaming or self._cell.check_pickle:
            env = self._envelope(endpoint, args, kwargs, None, streaming=False)
        else:
            env = Envelope(spec, args, kwargs, None)
        try:
            await self._mailbox.send(env)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ActorStoppedError(self.name) from None

    async def stream(
        self,
        endpoint: EndpointName,
        /,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (the backend acts on it; see module doc)
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Iterate over the items a streaming endpoint yields; `timeout` applies per item.

        Leaving the loop early tells the actor to stop generating.
        """
        send, receive = anyio.create_memory_object_stream[Any](STREAM_BUFFER)
        reply = StreamReply(send)
        try:
            env = self._envelope(endpoint, args, kwargs, reply, streaming=True)
        except Exception:
            send.close()
            receive.close()
            raise
        with receive:
            try:
                try:
                    with anyio.fail_after(timeout):
                        await self._post(env)
                except BaseException:
                    send.close()  # never reached the actor, which would otherwise own it
                    raise
                while True:
                    try:
                        with anyio.fail_after(timeout):
                            item = await receive.receive()
                    except anyio.EndOfStream:
                        break
                    yield item
            except TimeoutError:
                raise ActorCallTimeout(self.name, env.spec.name, timeout or 0.0) from None
            finally:
                reply.abandoned = True
        if reply.error is not None:
            raise reply.error

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop the actor: it finishes the messages already queued, then runs teardown().

        After `grace` seconds it is cancelled instead; messages it did not handle fail with
        `ActorStoppedError`. Returns once the actor and its children are gone.
        """
        await self._cell.stop(grace)

    def statistics(self) -> ActorStats:
        """A snapshot: state, mailbox depth, messages handled, restarts."""
        return self._cell.statistics()

    def _envelope(
        self,
        endpoint: EndpointName,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reply: CallReply | StreamReply | None,
        streaming: bool,
    ) -> Envelope:
        name = endpoint if isinstance(endpoint, str) else endpoint.__name__
        spec = self._specs.get(name)
        if spec is None:
            raise AttributeError(f"{self.name} has no endpoint {name!r}")
        if spec.streaming != streaming:
            verb = "stream()" if spec.streaming else "call() or cast()"
            raise TypeError(f"{self.name}.{name} must be used with {verb}")
        if self._cell.check_pickle:
            check_picklable(f"message to {self.name}.{name}", (args, kwargs))
        return Envelope(spec, args, kwargs, reply)

    async def _post(self, env: Envelope) -> None:
        try:
            await self._mailbox.send(env)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ActorStoppedError(self.name) from None

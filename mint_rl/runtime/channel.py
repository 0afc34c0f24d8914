"""Bounded channels: the only way messages queue up between actors.

A channel is an anyio memory object stream with a fixed capacity, so a fast producer waits for a
slow consumer instead of filling memory, plus counters so its depth can be read as a metric.
Closing works as in anyio: every producer owns a `clone()` of the sender, and consumers see the
end of the stream once all sender clones are closed. No sentinels, no polling.

    tx, rx = channel(16, name="trajectories")
    async with tx:
        await tx.send(item)          # blocks while 16 items wait unread
    async for item in rx: ...        # ends when every sender clone is closed
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


@dataclass(frozen=True)
class ChannelStats:
    """A snapshot of one channel, for metrics and the live status line."""

    name: str
    capacity: int
    depth: int
    """Items sent but not yet received (buffered, or held by a blocked sender)."""
    high_water: int
    """The largest depth seen since the channel was made."""
    sent: int
    received: int
    waiting_senders: int
    """Producers blocked because the channel is full: back-pressure in action."""
    waiting_receivers: int
    open_senders: int
    open_receivers: int


class _Counters:
    __slots__ = ("high_water", "name", "received", "sent")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.received = 0
        self.high_water = 0


def channel(capacity: int, name: str = "channel") -> tuple[ChannelSender[T], ChannelReceiver[T]]:
    """Make a bounded channel and return its two ends.

    Args:
        capacity: how many items may wait unread before `send` blocks; 0 makes every send
            wait for a receiver (a rendezvous).
        name: shown in `statistics()`.

    Raises:
        ValueError: if capacity is negative or not an int (an unbounded channel is refused).
    """
    if not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"channel capacity must be an int >= 0, got {capacity!r}")
    send, receive = anyio.create_memory_object_stream[T](capacity)
    counters = _Counters(name)
    return ChannelSender(send, counters), ChannelReceiver(receive, counters)


def _stats(
    stream: MemoryObjectSendStream[Any] | MemoryObjectReceiveStream[Any], c: _Counters
) -> ChannelStats:
    s = stream.statistics()
    return ChannelStats(
        name=c.name,
        capacity=int(s.max_buffer_size),
        depth=s.current_buffer_used + s.tasks_waiting_send,
        high_water=c.high_water,
        sent=c.sent,
        received=c.received,
        waiting_senders=s.tasks_waiting_send,
        waiting_receivers=s.tasks_waiting_receive,
        open_senders=s.open_send_streams,
        open_receivers=s.open_receive_streams,
    )


class ChannelSender(Generic[T]):
    """The sending end. Clone it once per producer; close each clone when that producer is done."""

    __slots__ = ("_counters", "_stream")

    def __init__(self, stream: MemoryObjectSendStream[T], counters: _Counters) -> None:
        self._stream = stream
        self._counters = counters

    def send(self, item: T) -> Coroutine[Any, Any, None]:
        """Send one item, waiting while the channel is full: `await tx.send(item)`.

        A plain function returning anyio's coroutine, to keep a frame off the hot path; the item
        counts as sent (and in the depth) from the moment the send starts.

        Raises:
            anyio.BrokenResourceError: every receiver is closed.
            anyio.ClosedResourceError: this end was closed.
        """
        c = self._counters
        c.sent += 1
        if c.sent - c.received > c.high_water:
            c.high_water = c.sent - c.received
        return self._stream.send(item)

    def send_nowait(self, item: T) -> None:
        """Send one item or raise `anyio.WouldBlock` if the channel is full."""
        self._stream.send_nowait(item)
        c = self._counters
        c.sent += 1
        if c.sent - c.received > c.high_water:
            c.high_water = c.sent - c.received

    def clone(self) -> ChannelSender[T]:
        return ChannelSender(self._stream.clone(), self._counters)

    def close(self) -> None:
        self._stream.close()

    def statistics(self) -> ChannelStats:
        return _stats(self._stream, self._counters)

    def __enter__(self) -> ChannelSender[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> ChannelSender[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class ChannelReceiver(Generic[T]):
    """The receiving end. `async for` over it ends when every sender clone is closed."""

    __slots__ = ("_counters", "_stream")

    def __init__(self, stream: MemoryObjectReceiveStream[T], counters: _Counters) -> None:
        self._stream = stream
        self._counters = counters

    async def receive(self) -> T:
        """Wait for the next item.

        Raises:
            anyio.EndOfStream: the channel is empty and every sender is closed.
        """
        item = await self._stream.receive()
        self._counters.received += 1
        return item

    def receive_nowait(self) -> T:
        """Take the next item or raise `anyio.WouldBlock` (or `anyio.EndOfStream`)."""
        item = self._stream.receive_nowait()
        self._counters.received += 1
        return item

    def clone(self) -> ChannelReceiver[T]:
        return ChannelReceiver(self._stream.clone(), self._counters)

    def close(self) -> None:
        self._stream.close()

    def statistics(self) -> ChannelStats:
        return _stats(self._stream, self._counters)

    def __aiter__(self) -> ChannelReceiver[T]:
        return self

    async def __anext__(self) -> T:
        try:
            item = await self._stream.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        self._counters.received += 1
        return item

    def __enter__(self) -> ChannelReceiver[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> ChannelReceiver[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

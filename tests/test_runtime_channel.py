"""Bounded channels and mailboxes: producers block at the bound and memory stays flat."""

from __future__ import annotations

import tracemalloc

import anyio
import anyio.lowlevel
import pytest

from mint_rl.runtime import Actor, actor_name, channel, endpoint, open_system

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_producer_blocks_at_the_bound_until_the_consumer_reads() -> None:
    tx, rx = channel(4, name="items")
    sent = 0

    async def produce() -> None:
        nonlocal sent
        async with tx:
            for i in range(100):
                await tx.send(i)
                sent += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await anyio.sleep(0.01)
        stats = rx.statistics()
        assert sent == 4
        assert (stats.depth, stats.waiting_senders, stats.capacity) == (5, 1, 4)
        received = [item async for item in rx]
    assert received == list(range(100))
    assert rx.statistics().high_water <= 5
    rx.close()


async def test_the_stream_ends_when_every_sender_clone_is_closed() -> None:
    tx, rx = channel(2)
    clones = [tx.clone(), tx.clone()]
    tx.close()

    async def produce(sender, base: int) -> None:  # type: ignore[no-untyped-def]
        with sender:
            for i in range(3):
                await sender.send(base + i)

    async with anyio.create_task_group() as tg:
        for n, clone in enumerate(clones):
            tg.start_soon(produce, clone, 10 * n)
        with rx:
            items = sorted([item async for item in rx])
    assert items == [0, 1, 2, 10, 11, 12]


def test_a_channel_must_be_bounded() -> None:
    with pytest.raises(ValueError, match="capacity"):
        channel(float("inf"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        channel(-1)


class SlowSink(Actor):
    def __init__(self) -> None:
        self.total = 0

    @endpoint
    async def take(self, payload: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        self.total += len(payload)

    @endpoint
    async def total_bytes(self) -> int:
        return self.total


async def test_callers_of_a_slow_actor_block_at_the_mailbox_bound_and_memory_stays_flat() -> None:
    n, size, mailbox, callers = 2000, 100_000, 8, 16  # 200 MB if every payload were kept
    async with open_system() as system:
        sink = await system.spawn(SlowSink, mailbox_size=mailbox)
        name = actor_name(sink)
        payloads = iter(range(n))  # shared: the callers take turns until all n are sent
        buffered, waiting = 0, 0

        async def call() -> None:
            for _ in payloads:
                await sink.take(bytes(size))

        async def watch() -> None:
            nonlocal buffered, waiting
            while True:
                [stats] = [s.mailbox for s in system.statistics().actors if s.name == name]
                buffered = max(buffered, stats.depth - stats.waiting_senders)
                waiting = max(waiting, stats.waiting_senders)
                await anyio.lowlevel.checkpoint()

        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                async with anyio.create_task_group() as senders:
                    for _ in range(callers):
                        senders.start_soon(call)
                tg.cancel_scope.cancel()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert await sink.total_bytes() == n * size
        [stats] = [s.mailbox for s in system.statistics().actors if s.name == name]
        assert buffered <= mailbox  # the mailbox never held more than its bound
        assert waiting > 0  # callers past the bound waited for room: back-pressure
        assert stats.high_water <= callers
        assert stats.sent == n + 1
        assert peak - base < 30 * size  # about one payload per caller, not 2000 payloads

"""How much the actor runtime costs: throughput through a chain of hops, and latency per hop.

Every variant moves the same messages (ints, one at a time, nothing batched) through the same
number of hops with the same channel bound, in the same process and run:

  plain     anyio memory object streams, one task per hop (the peer: no runtime at all)
  actors    one actor per hop; each (concurrent) endpoint calls the next actor and returns its
            reply; `capacity` callers keep that many messages in flight, as the stream bound does
  call      the same chain of calls, one message at a time (latency only)

Throughput is the best of `--repeats` runs (variants interleaved, so machine noise hits all of
them alike). Latency sends one message at a time and waits for it at the end of the chain.

    .venv/bin/python bench/bench_runtime.py [--messages 20000] [--hops 4] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mint_rl.runtime import Actor, ActorSystem, endpoint, open_system

DOCS = Path(__file__).resolve().parent.parent / "docs" / "runtime.md"


class Timer:
    """Wall-clock and process CPU seconds; CPU time is steadier on a machine shared with others."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


# -- plain anyio chain (the peer) --------------------------------------------------------------


async def _relay(rx: MemoryObjectReceiveStream[int], tx: MemoryObjectSendStream[int]) -> None:
    async with rx, tx:
        async for item in rx:
            await tx.send(item)


async def plain_chain(
    messages: int, hops: int, capacity: int, latency: bool = False
) -> tuple[float, float]:
    """Seconds to push `messages` through `hops` relay tasks (or round trips, if latency)."""
    async with anyio.create_task_group() as tg:
        first_tx, rx = anyio.create_memory_object_stream[int](capacity)
        for _ in range(hops):
            tx, next_rx = anyio.create_memory_object_stream[int](capacity)
            tg.start_soon(_relay, rx, tx)
            rx = next_rx
        timer = Timer()
        async with first_tx, rx:
            if latency:
                for i in range(messages):
                    await first_tx.send(i)
                    await rx.receive()
            else:
                tg.start_soon(_feed_plain, first_tx.clone(), messages)
                for _ in range(messages):
                    await rx.receive()
        return timer.stop()


async def _feed_plain(tx: MemoryObjectSendStream[int], messages: int) -> None:
    async with tx:
        for i in range(messages):
            await tx.send(i)


# -- actor chain -------------------------------------------------------------------------------


class Relay(Actor):
    """One hop: passes each message to the next actor and returns its reply (the last hop
    replies itself). Concurrent, so a hop holds many messages at once, as a stream does."""

    def __init__(self, next_hop: Relay | None) -> None:
        self.next_hop = next_hop

    @endpoint(concurrent=True)  # never more than `capacity` in flight: the callers bound it
    async def hop(self, item: int) -> int:
        return item if self.next_hop is None else await self.next_hop.hop(item)


async def _spawn_chain(system: ActorSystem, hops: int, capacity: int) -> Relay:
    head: Relay | None = None
    for _ in range(hops):
        head = await system.spawn(Relay, head, mailbox_size=capacity)
    assert head is not None
    return head


async def actor_chain(messages: int, hops: int, capacity: int) -> tuple[float, float]:
    """Seconds for `capacity` callers to push `messages` calls through `hops` actors."""
    async with open_system() as system:
        head = await _spawn_chain(system, hops, capacity)
        items = iter(range(messages))  # shared: the callers take turns

        async def caller() -> None:
            for i in items:
                await head.hop(i)

        timer = Timer()
        async with anyio.create_task_group() as tg:
            for _ in range(capacity):
                tg.start_soon(caller)
        elapsed = timer.stop()
        system.cancel()
    return elapsed


async def call_chain(messages: int, hops: int, capacity: int) -> tuple[float, float]:
    """Round trips through `hops` nested calls: each hop waits for the next one's reply."""
    async with open_system() as system:
        head = await _spawn_chain(system, hops, capacity)
        timer = Timer()
        for i in range(messages):
            await head.hop(i)
        elapsed = timer.stop()
        system.cancel()
    return elapsed


# -- driver ------------------------------------------------------------------------------------


async def best_of(
    repeats: int, variants: dict[str, Callable[[], Awaitable[tuple[float, float]]]]
) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall and best CPU seconds of each variant, runs interleaved."""
    wall = dict.fromkeys(variants, float("inf"))
    cpu = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, run in variants.items():
            w, c = await run()
            wall[name], cpu[name] = min(wall[name], w), min(cpu[name], c)
    return wall, cpu


async def measure(messages: int, hops: int, capacity: int, repeats: int) -> list[dict[str, Any]]:
    m, n, c, lat = messages, hops, capacity, max(200, messages // 10)
    await actor_chain(1000, n, c)  # warm-up
    wall, cpu = await best_of(
        repeats,
        {
            "plain": lambda: plain_chain(m, n, c),
            "actors": lambda: actor_chain(m, n, c),
        },
    )
    lat_wall, _ = await best_of(
        repeats,
        {
            "plain": lambda: plain_chain(lat, n, c, latency=True),
            "call": lambda: call_chain(lat, n, c),
        },
    )
    rows = []
    for name in ("plain", "actors", "call"):
        row: dict[str, Any] = {"variant": name}
        if name in wall:
            row["msgs_per_s"] = m / wall[name]
            row["ratio"] = wall["plain"] / wall[name]
            row["cpu_ratio"] = cpu["plain"] / cpu[name]
        if name in lat_wall:
            hop = lat_wall[name] / lat / n
            row["hop_us"] = hop * 1e6
            row["added_hop_us"] = (hop - lat_wall["plain"] / lat / n) * 1e6
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], messages: int, hops: int, capacity: int) -> str:
    def cell(row: dict[str, Any], key: str, spec: str) -> str:
        return format(row[key], spec) if key in row else "—"

    header = (
        f"{messages} messages through {hops} hops, channel bound {capacity}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    lines = [
        header,
        "",
        "| variant | msgs/s | ratio to plain | ratio, CPU time | µs per hop | added µs per hop |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {cell(r, 'msgs_per_s', ',.0f')} | {cell(r, 'ratio', '.2f')} "
            f"| {cell(r, 'cpu_ratio', '.2f')} | {cell(r, 'hop_us', '.1f')} "
            f"| {cell(r, 'added_hop_us', '+.1f')} |"
        )
    return "\n".join(lines)


def write_docs(text: str) -> None:
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    doc = DOCS.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    DOCS.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run")
    parser.add_argument("--hops", type=int, default=4, help="channels between feeder and sink")
    parser.add_argument("--capacity", type=int, default=16, help="bound of every channel")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; best is kept")
    parser.add_argument("--write-docs", action="store_true", help="update docs/runtime.md")
    args = parser.parse_args()
    rows = anyio.run(measure, args.messages, args.hops, args.capacity, args.repeats)
    text = table(rows, args.messages, args.hops, args.capacity)
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()

"""Blocking work (torch) off the event loop, at most N calls per device at a time.

An actor that runs a training step directly in an endpoint would stall every other actor on the
loop for seconds. `run_blocking` moves the call to a worker thread; the `CapacityLimiter` of its
device keeps two steps from fighting over one GPU (or the two cores of a small CPU box).

The awaiting task stays shielded until the thread returns (anyio's default), so a cancelled actor
never leaves a thread running behind its back: shutdown waits for the call in progress.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
from anyio import CapacityLimiter

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def run_blocking(
    fn: Callable[[Unpack[Ts]], T], *args: *Ts, limiter: CapacityLimiter | None = None
) -> T:
    """Run `fn(*args)` in a worker thread and return its result.

    Args:
        fn: a blocking function (torch forward/backward, file I/O).
        limiter: bounds how many such calls run at once; None uses anyio's default (40 threads).
    """
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


@dataclass(frozen=True)
class LimiterStats:
    device: str
    capacity: int
    busy: int
    waiting: int


class DeviceLimiters:
    """One `CapacityLimiter` per device name ("cpu", "cuda:0", ...), made on first use.

    Limiters belong to the event loop that first uses them, so each actor system owns its own
    registry rather than sharing a global one.
    """

    def __init__(self, capacities: Mapping[str, int] | None = None, default: int = 1) -> None:
        """
        Args:
            capacities: threads allowed per device, e.g. {"cpu": 2}; devices not listed get
                `default`.
            default: 1 serialises torch work per device, which is what a GPU wants.
        """
        for device, n in {**(capacities or {}), "<default>": default}.items():
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"capacity for {device!r} must be an int >= 1, got {n!r}")
        self._capacities = dict(capacities or {})
        self._default = default
        self._limiters: dict[str, CapacityLimiter] = {}

    def get(self, device: str) -> CapacityLimiter:
        """The limiter for `device`, created with its configured capacity on first use."""
        limiter = self._limiters.get(device)
        if limiter is None:
            limiter = CapacityLimiter(self._capacities.get(device, self._default))
            self._limiters[device] = limiter
        return limiter

    def statistics(self) -> tuple[LimiterStats, ...]:
        return tuple(
            LimiterStats(
                device=device,
                capacity=int(lim.total_tokens),
                busy=lim.borrowed_tokens,
                waiting=lim.statistics().tasks_waiting,
            )
            for device, lim in self._limiters.items()
        )

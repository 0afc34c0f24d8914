"""`LatestVersion`: a policy version that only goes up, shared by the side that advances it and
the sides that wait for it (anyio's memory streams share one state object between their two
ends in the same way: neither end imports or holds the other)."""

from __future__ import annotations

import anyio


class LatestVersion:
    """The newest policy version reached so far (-1: none yet). `advance` moves it up (never
    down); `wait_for(v)` returns once it is >= v."""

    def __init__(self, value: int = -1) -> None:
        self._value = value
        self._changed = anyio.Event()

    @property
    def value(self) -> int:
        return self._value

    def advance(self, value: int) -> None:
        if value <= self._value:
            return
        self._value = value
        # An anyio.Event fires once: every waiter wakes, and the next wait gets a fresh one.
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, value: int) -> None:
        while self._value < value:
            await self._changed.wait()

    def __repr__(self) -> str:
        return f"LatestVersion({self._value})"

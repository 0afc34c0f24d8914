"""Actors for the runtime tests that run on both backends (tests/test_runtime_backends.py).

In a module of their own, so that Ray's worker processes import them by name. Their state is
asked through endpoints, never read from module globals: on Ray the instance lives in another
process.
"""

from __future__ import annotations

import os

import anyio
import anyio.lowlevel

from mint_rl.runtime import Actor, endpoint


class Recorder(Actor):
    """Records what it is sent, counts overlapping messages, crashes on demand."""

    def __init__(self, label: str = "", teardown_log: str | None = None) -> None:
        self.label = label
        self.teardown_log = teardown_log  # a file teardown() appends a line to
        self.seen: list[int] = []
        self.active = 0
        self.max_active = 0

    async def setup(self) -> None:
        await anyio.sleep(0.01)  # "loading a model"

    async def teardown(self) -> None:
        if self.teardown_log is not None:
            with open(self.teardown_log, "a") as f:
                f.write(f"{self.label} seen {self.seen}\n")

    @endpoint
    async def record(self, x: int) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await anyio.lowlevel.checkpoint()  # give other messages every chance to overlap
        self.seen.append(x)
        self.active -= 1
        return x

    @endpoint(concurrent=True, max_concurrency=2)
    async def slow(self, delay: float) -> int:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await anyio.sleep(delay)
        self.active -= 1
        return self.max_active

    @endpoint
    async def sleep(self, delay: float) -> None:
        await anyio.sleep(delay)

    @endpoint(raises=(ValueError,))
    async def checked(self, x: int) -> int:
        if x < 0:
            raise ValueError(f"x must be >= 0, got {x}")
        self.seen.append(x)
        return x

    @endpoint
    async def crash(self, why: str) -> None:
        raise RuntimeError(why)

    @endpoint(concurrent=True)
    async def crash_soon(self) -> None:
        await anyio.sleep(0.05)
        raise RuntimeError("concurrent crash")

    @endpoint
    async def state(self) -> dict[str, object]:
        return {"label": self.label, "seen": self.seen[:], "max_active": self.max_active,
                "restarts": self.ctx.restarts, "pid": os.getpid()}


class BrokenSetup(Actor):
    async def setup(self) -> None:
        raise OSError("weights not found")

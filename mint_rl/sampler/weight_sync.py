"""Getting policy versions into the engine: the `adapter` and `merged` strategies.

adapter (GPU default): every version is its own PEFT folder, registered under a new LoRA id and
    the name `policy@<version>`. A request names its version's LoRA, so it finishes on the version
    it started with; vLLM keeps `max_loras` versions resident per batch and reloads older ones from
    disk on demand. Every token of a request carries the same version.

merged (CPU default): the engine serves one set of weights at a time, W0 + (alpha/r)·B@A of one
    version, rebuilt in the worker for the LoRA-targeted matrices only (`worker_ext.py`).
    - A push switches the engine to the pushed version at once. Requests in flight keep going on
      the new weights; the worker reports how many tokens each had made, so every token is stamped
      with the version that actually sampled it (its logprob too is from that version).
    - A request for another version (a client created before the push) waits until the engine has
      nothing in flight, then the engine switches to that version, serves what waits for it, and
      switches back when newer requests wait. Meanwhile new requests queue behind it, so nobody
      starves. Every switch costs one rebuild (~0.2-0.5 s for 135M params on 2 CPU cores).
    Prefix-cache entries are salted with the weights epoch, so cached KV never crosses versions.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mint_rl.sampler.engine import SamplerEngine


class WeightSync:
    """What the engine asks of a strategy."""

    name = "base"

    def __init__(self, engine: SamplerEngine) -> None:
        self.engine = engine

    async def setup(self) -> None:
        """Runs once on the engine loop after the engine started."""

    async def install(self, version: int) -> float:
        """Makes `version` (already in `engine.versions`) servable now; returns seconds taken."""
        raise NotImplementedError

    @asynccontextmanager
    async def serve(self, version: int, key: str) -> AsyncIterator[dict[str, Any]]:
        """Admits one request for `version`; yields `generate` kwargs (lora_request, cache_salt)."""
        raise NotImplementedError
        yield {}

    def forget(self, version: int) -> None:
        """`version` will not be requested again (its files are gone)."""


class AdapterSync(WeightSync):
    name = "adapter"

    def __init__(self, engine: SamplerEngine) -> None:
        super().__init__(engine)
        self._lora: dict[int, Any] = {}
        self._next_id = 1
        self._inflight: dict[int, int] = {}

    def _request(self, version: int) -> Any:
        path = self.engine.versions[version]
        if path is None:
            return None
        if version not in self._lora:
            from vllm.lora.request import LoRARequest

            # A new int id and name per version: vLLM keeps old weights if an id is reused.
            self._lora[version] = LoRARequest(f"policy@{version}", self._next_id, str(path))
            self._next_id += 1
        return self._lora[version]

    async def install(self, version: int) -> float:
        start = time.perf_counter()
        request = self._request(version)
        if request is not None:
            await self.engine.llm.add_lora(request)
        return time.perf_counter() - start

    @asynccontextmanager
    async def serve(self, version: int, key: str) -> AsyncIterator[dict[str, Any]]:
        request = self._request(version)
        self._inflight[version] = self._inflight.get(version, 0) + 1
        self.engine.stamps.start(key, version)
        try:
            yield {"lora_request": request}
        finally:
            self._inflight[version] -= 1

    def forget(self, version: int) -> None:
        request = self._lora.pop(version, None)
        if request is not None and not self._inflight.get(version):
            asyncio.ensure_future(self.engine.llm.remove_lora(request.lora_int_id))


class MergedSync(WeightSync):
    name = "merged"

    def __init__(self, engine: SamplerEngine) -> None:
        super().__init__(engine)
        self.current: Path | None = None  # the adapter merged into the served weights
        self.epoch = 0
        self.inflight = 0
        self.switching = False
        self.waiting: deque[tuple[int, int]] = deque()  # (ticket, version), arrival order
        self._tickets = 0
        self.last_swap: dict[str, Any] = {}
        self._cond: asyncio.Condition | None = None

    async def setup(self) -> None:
        self._cond = asyncio.Condition()
        facts = (await self.engine.llm.collective_rpc("mint_setup"))[0]
        if facts["async_scheduling"]:
            raise RuntimeError("merged weight sync needs async scheduling off (token counts)")

    @property
    def cond(self) -> asyncio.Condition:
        assert self._cond is not None, "setup() not run"
        return self._cond

    async def _swap(self, version: int) -> float:
        """Rebuilds the weights for `version`, between two engine steps. Caller set `switching`."""
        path = self.engine.versions[version]
        start = time.perf_counter()
        report = (
            await self.engine.llm.collective_rpc(
                "mint_apply_adapter", args=(str(path) if path else None,)
            )
        )[0]
        self.engine.stamps.switch(report["counts"], version)
        self.current = path
        self.epoch += 1
        seconds = time.perf_counter() - start
        self.last_swap = {"version": version, "seconds": seconds, "worker": report["seconds"]}
        return seconds

    async def install(self, version: int) -> float:
        async with self.cond:
            await self.cond.wait_for(lambda: not self.switching)
            self.switching = True
        try:
            return await self._swap(version)
        finally:
            async with self.cond:
                self.switching = False
                self.cond.notify_all()

    def _admissible(self, ticket: tuple[int, int]) -> bool:
        """Admitted once its weights are up and no other version's request queued ahead of it."""
        if self.switching:
            return False
        for queued in self.waiting:
            if self.engine.versions[queued[1]] != self.current:
                return False
            if queued is ticket:
                return True
        return False

    async def _switch_to_waiting(self) -> None:
        try:
            await self._swap(self.waiting[0][1])
        finally:
            async with self.cond:
                self.switching = False
                self.cond.notify_all()

    @asynccontextmanager
    async def serve(self, version: int, key: str) -> AsyncIterator[dict[str, Any]]:
        async with self.cond:
            self._tickets += 1
            ticket = (self._tickets, version)
            self.waiting.append(ticket)
            try:
                while not self._admissible(ticket):
                    head = self.engine.versions[self.waiting[0][1]]
                    if not self.switching and self.inflight == 0 and head != self.current:
                        self.switching = True  # nothing runs: switch to the oldest waiter
                        asyncio.ensure_future(self._switch_to_waiting())
                    await self.cond.wait()
            finally:
                self.waiting.remove(ticket)
                self.cond.notify_all()
            self.inflight += 1
            self.engine.stamps.start(key, version)
            salt = f"mint-w{self.epoch}"
        try:
            yield {"cache_salt": salt}
        finally:
            async with self.cond:
                self.inflight -= 1
                if self.inflight == 0:
                    self.cond.notify_all()


def make_sync(strategy: str, engine: SamplerEngine) -> WeightSync:
    return {"adapter": AdapterSync, "merged": MergedSync}[strategy](engine)

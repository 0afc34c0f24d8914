"""Loading policy versions into the engine: the `adapter` and `merged` strategies.

adapter (GPU default): every version is its own PEFT folder, loaded under a new LoRA id and the
    name `policy@<version>`. A request names its version's LoRA, so it finishes on the version it
    started with; vLLM keeps `max_loras` versions resident per batch and reloads older ones from
    disk on demand. Every token of a request carries the same version.

merged (CPU default): the engine serves one set of weights at a time, W0 + (alpha/r)·B@A of one
    version, rebuilt in the worker for the LoRA-targeted matrices only (`worker_ext.py`).
    - Loading a version switches the engine to it at once. Requests in flight keep going on the
      new weights; the worker reports how many tokens each had made, so every token is stamped
      with the version that actually sampled it (its logprob too is from that version).
    - A request for another version (a client created before the load) waits until the engine has
      nothing in flight, then the engine switches to that version, serves what waits for it, and
      switches back when newer requests wait. Meanwhile new requests queue behind it, so nobody
      starves. Every switch costs one rebuild (~0.2-0.5 s for 135M params on 2 CPU cores).
    Prefix-cache entries are salted with the weights epoch, so cached KV never crosses versions.

After a load, the probe (a fixed token sequence, `PROBE_TEXT`) is scored and compared with the
learner's logprobs of it (docs/sampling.md, "Probe convention"): the check that the weights
arrived.

A strategy is given the vLLM engine it loads into, the per-token stamps it starts each admitted
request on, and the version store it reads adapter folders from; it runs on the engine's loop.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from mint_rl.errors import InvalidInputError, WeightSyncError
from mint_rl.sampler.versions import VersionStamps, VersionStore
from mint_rl.sampler.vllm_engine import VllmEngine


class WeightSync(ABC):
    """What the sampler asks of a strategy."""

    name = "base"
    # The folder the served weights were built from, if the strategy serves one at a time: the
    # store keeps its files when its version is evicted.
    serving_folder: Path | None = None

    def __init__(self, vllm: VllmEngine, stamps: VersionStamps, store: VersionStore) -> None:
        self.vllm = vllm
        self.stamps = stamps
        self.store = store

    @abstractmethod
    async def setup(self) -> None:
        """Runs once on the engine loop after the engine started."""

    @abstractmethod
    async def load(self, policy_version: int) -> float:
        """Loads `policy_version` (already in the store) so that it is served now; returns
        seconds taken."""

    @abstractmethod
    def serve(self, policy_version: int, key: str) -> AbstractAsyncContextManager[dict[str, Any]]:
        """Admits one request for `policy_version` and starts its stamps under `key`; yields its
        `extra` for `VllmEngine.generate` (lora_request, cache_salt)."""

    @abstractmethod
    def forget(self, policy_version: int) -> None:
        """`policy_version` will not be requested again (its files are gone)."""


class AdapterSync(WeightSync):
    name = "adapter"

    def __init__(self, vllm: VllmEngine, stamps: VersionStamps, store: VersionStore) -> None:
        super().__init__(vllm, stamps, store)
        self._lora: dict[int, Any] = {}
        self._next_id = 1
        self._inflight: dict[int, int] = {}

    async def setup(self) -> None:
        pass  # vLLM's own LoRA support needs nothing more

    def _request(self, policy_version: int) -> Any:
        path = self.store.folder(policy_version)
        if path is None:
            return None
        if policy_version not in self._lora:
            from vllm.lora.request import LoRARequest

            # A new int id and name per version: vLLM keeps old weights if an id is reused.
            self._lora[policy_version] = LoRARequest(
                f"policy@{policy_version}", self._next_id, str(path))
            self._next_id += 1
        return self._lora[policy_version]

    async def load(self, policy_version: int) -> float:
        start = time.perf_counter()
        request = self._request(policy_version)
        if request is not None:
            await self.vllm.load_lora(request)
        return time.perf_counter() - start

    @asynccontextmanager
    async def serve(self, policy_version: int, key: str) -> AsyncIterator[dict[str, Any]]:
        request = self._request(policy_version)
        self._inflight[policy_version] = self._inflight.get(policy_version, 0) + 1
        self.stamps.start(key, policy_version)
        try:
            yield {"lora_request": request}
        finally:
            self._inflight[policy_version] -= 1

    def forget(self, policy_version: int) -> None:
        request = self._lora.pop(policy_version, None)
        if request is not None and not self._inflight.get(policy_version):
            asyncio.ensure_future(self.vllm.remove_lora(request.lora_int_id))


class MergedSync(WeightSync):
    name = "merged"

    def __init__(self, vllm: VllmEngine, stamps: VersionStamps, store: VersionStore) -> None:
        super().__init__(vllm, stamps, store)
        self.serving_folder = None  # the adapter merged into the served weights (None: base)
        self.epoch = 0
        self.inflight = 0
        self.switching = False
        self.waiting: deque[tuple[int, int]] = deque()  # (ticket, policy_version), arrival order
        self._tickets = 0
        self.last_switch: dict[str, Any] = {}
        self._cond: asyncio.Condition | None = None

    async def setup(self) -> None:
        self._cond = asyncio.Condition()
        facts = (await self.vllm.call_workers("mint_setup"))[0]
        if facts["async_scheduling"]:
            raise RuntimeError("merged weight sync needs async scheduling off (token counts)")

    def forget(self, policy_version: int) -> None:
        pass  # nothing is held per version: the served weights are rebuilt on each switch

    @property
    def cond(self) -> asyncio.Condition:
        assert self._cond is not None, "setup() not run"
        return self._cond

    async def _switch_to(self, policy_version: int) -> float:
        """Rebuilds the weights for `policy_version`, between two engine steps. Caller set
        `switching`."""
        path = self.store.folder(policy_version)
        start = time.perf_counter()
        report = (
            await self.vllm.call_workers("mint_load_merged", str(path) if path else None)
        )[0]
        self.stamps.switch(report["counts"], policy_version)
        self.serving_folder = path
        self.epoch += 1
        seconds = time.perf_counter() - start
        self.last_switch = {"policy_version": policy_version, "seconds": seconds,
                            "worker": report["seconds"]}
        return seconds

    async def load(self, policy_version: int) -> float:
        async with self.cond:
            await self.cond.wait_for(lambda: not self.switching)
            self.switching = True
        try:
            return await self._switch_to(policy_version)
        finally:
            async with self.cond:
                self.switching = False
                self.cond.notify_all()

    def _admissible(self, ticket: tuple[int, int]) -> bool:
        """Admitted once its weights are up and no other version's request queued ahead of it."""
        if self.switching:
            return False
        for queued in self.waiting:
            if self.store.folder(queued[1]) != self.serving_folder:
                return False
            if queued is ticket:
                return True
        return False

    async def _switch_to_waiting(self) -> None:
        try:
            await self._switch_to(self.waiting[0][1])
        finally:
            async with self.cond:
                self.switching = False
                self.cond.notify_all()

    @asynccontextmanager
    async def serve(self, policy_version: int, key: str) -> AsyncIterator[dict[str, Any]]:
        async with self.cond:
            self._tickets += 1
            ticket = (self._tickets, policy_version)
            self.waiting.append(ticket)
            try:
                while not self._admissible(ticket):
                    head = self.store.folder(self.waiting[0][1])
                    if not self.switching and self.inflight == 0 and head != self.serving_folder:
                        self.switching = True  # nothing runs: switch to the oldest waiter
                        asyncio.ensure_future(self._switch_to_waiting())
                    await self.cond.wait()
            finally:
                self.waiting.remove(ticket)
                self.cond.notify_all()
            self.inflight += 1
            self.stamps.start(key, policy_version)
            salt = f"mint-w{self.epoch}"
        try:
            yield {"cache_salt": salt}
        finally:
            async with self.cond:
                self.inflight -= 1
                if self.inflight == 0:
                    self.cond.notify_all()


def make_sync(
    strategy: str, vllm: VllmEngine, stamps: VersionStamps, store: VersionStore,
) -> WeightSync:
    """The strategy named `strategy` ("adapter" or "merged")."""
    return {"adapter": AdapterSync, "merged": MergedSync}[strategy](vllm, stamps, store)


# ---------------------------------------------------------------- the probe
# A fixed token sequence whose logprobs tell which weights an engine serves.

PROBE_TEXT = "The capital of France is Paris. What is 3 + 4? The answer is 7."


def probe_tokens(tokenizer: Any) -> list[int]:
    """BOS + the tokens of PROBE_TEXT."""
    tokens = tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + list(tokens)


def check_expected_count(probe: Sequence[int], expected: Sequence[float]) -> None:
    """`expected` holds one logprob per probe token after the first."""
    if len(expected) != len(probe) - 1:
        raise InvalidInputError(
            "expected_probe_logprobs",
            f"needs {len(probe) - 1} values (logprobs of probe[1:]), got {len(expected)}",
        )


def check_arrival(
    policy_version: int, got: Sequence[float], expected: Sequence[float], tolerance: float,
    exact: bool = True,
) -> None:
    """Raises WeightSyncError unless the sampler's probe logprobs `got` match `expected`: at
    every position (`exact`, fp32), else on average over the positions (bf16, whose rounding
    alone moves single positions by over 0.5 nats while the mean moves by a few hundredths)."""
    diffs = [abs(g - float(e)) for g, e in zip(got, expected, strict=True)]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    if exact and not diffs[worst] <= tolerance:  # also catches NaN
        raise WeightSyncError(
            f"policy version {policy_version}: the sampler's probe logprobs differ from the "
            f"learner's by {diffs[worst]:.3g} nats at position {worst + 1} (tolerance "
            f"{tolerance}); the sampler is not serving the loaded weights"
        )
    mean = sum(diffs) / len(diffs)
    if not exact and not mean <= tolerance:
        raise WeightSyncError(
            f"policy version {policy_version}: the sampler's probe logprobs differ from the "
            f"learner's by {mean:.3g} nats on average (at most {diffs[worst]:.3g}, tolerance "
            f"{tolerance} on the mean); the sampler is not serving the loaded weights"
        )

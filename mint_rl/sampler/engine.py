"""The sampler engine: one vLLM engine per base model serving its policy versions.

`SamplerEngine` composes the vLLM engine (vllm_engine.py: loop thread, start-up, requests), the
version store and the per-token version stamps (versions.py: policy_version -> adapter copy, the
version of each token) and a weight-sync strategy (weight_sync.py: how a version gets into the
engine, and the probe that checks it arrived). Engines are shared per (base model,
`EngineConfig.slot`) by their owner, a `SamplerEngines`: a run's (handed to its sampler actors;
several sampler actors each have their own slot, so their own vLLM engine process), or
`IN_PROCESS`, the in-process API's (closed at interpreter exit, so no engine process outlives
us).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mint_rl.errors import ConflictError, InvalidInputError
from mint_rl.models import model_config, resolve_model
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.versions import VersionStamps, VersionStore
from mint_rl.sampler.vllm_engine import Completion, VllmEngine
from mint_rl.sampler.weight_sync import (
    WeightSync,
    check_arrival,
    check_expected_count,
    make_sync,
    probe_tokens,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Generation(Completion):
    """A finished request with the policy version of each generated token."""

    policy_versions: list[int]


def _within_context(config: EngineConfig, model_dir: Path) -> EngineConfig:
    """`config` with `max_model_len` no longer than the model's context (vLLM refuses to start
    otherwise; the default 4096 is longer than a small model's 512 or 2048)."""
    context = model_config(model_dir).get("max_position_embeddings")
    if config.max_model_len is None or not context or config.max_model_len <= context:
        return config
    return dataclasses.replace(config, max_model_len=int(context))


class SamplerEngine:
    """A vLLM engine serving policy versions of one base model."""

    def __init__(self, base_model: str, config: EngineConfig | None = None) -> None:
        from transformers import AutoTokenizer

        self.base_model = base_model
        model_dir = resolve_model(base_model)
        self.config = _within_context((config or EngineConfig()).resolve(), model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        start = time.perf_counter()
        name = base_model if self.config.slot == 0 else f"{base_model} (slot {self.config.slot})"
        self.vllm = VllmEngine(model_dir, self.config, name)  # closes itself if it fails
        self.store = VersionStore(self.config.keep_versions)
        self.stamps = VersionStamps()
        self.sync: WeightSync = make_sync(self.config.strategy, self.vllm, self.stamps,
                                          self.store)
        try:
            self.run(self.sync.setup())
        except BaseException:
            self.close()
            raise
        c = self.config
        log.info("sampler engine for %s up in %.1f s (%s, %s, cores %s)", name,
                 time.perf_counter() - start, c.strategy, c.dtype, c.cpu_cores)

    # ---------------------------------------------------------------- lifecycle

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs `coro` on the engine loop and waits (not from the engine loop itself)."""
        return self.vllm.run(coro, timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedules `coro` on the engine loop."""
        return self.vllm.submit(coro)

    def close(self) -> None:
        """Shuts the engine (and its processes) down in order. Safe to call twice."""
        self.vllm.close()
        self.store.close()

    @property
    def closed(self) -> bool:
        return self.vllm.closed

    @property
    def dead(self) -> bool:
        """Its vLLM engine process died; its owner (`SamplerEngines.acquire`) replaces it."""
        return self.vllm.dead

    # ---------------------------------------------------------------- policy versions

    def add(self, adapter_dir: str | Path | None, policy_version: int | None, *,
            exclusive: bool = True) -> int:
        """Makes a policy servable under `policy_version` (None: look the folder up, or number
        it); returns the number it is served under (see `VersionStore.add`). Does not switch
        what the engine serves (that is `load`)."""
        return self.run(self._add(adapter_dir, policy_version, exclusive))

    async def _add(self, adapter_dir: str | Path | None, policy_version: int | None,
                   exclusive: bool = True) -> int:
        # On the engine loop, as all engine state: evicting tells the strategy to forget.
        policy_version = self.store.add(adapter_dir, policy_version, exclusive=exclusive)
        for evicted in self.store.evict(in_use=self.sync.serving_folder):
            self.sync.forget(evicted)
        return policy_version

    async def load(
        self, adapter_dir: str | Path | None, policy_version: int,
        expected_probe_logprobs: Sequence[float] | None = None,
    ) -> float:
        """Adds `policy_version`, makes it the one served, checks it arrived; returns seconds."""
        start = time.perf_counter()
        await self._add(adapter_dir, policy_version)
        await self.sync.load(policy_version)
        if expected_probe_logprobs is not None:
            await self.check_arrival(policy_version, expected_probe_logprobs)
        return time.perf_counter() - start

    def reset(self) -> None:
        """Forgets every policy version, so the next run numbers its versions from 0 again.

        Saves a new engine start (half a minute on a small CPU) when one process trains twice.
        Clients of the old versions stop working; the prefix cache is salted per weight switch
        (merged) or per LoRA id (adapter), so no cached state crosses over.
        """
        self.run(self._reset())

    async def _reset(self) -> None:
        # Requests of the ending run may still be unwinding their cancellation.
        for _ in range(300):
            if not len(self.stamps):
                break
            await asyncio.sleep(0.1)
        else:
            raise ConflictError(f"reset: {len(self.stamps)} requests are still in flight")
        for removed in self.store.reset(in_use=self.sync.serving_folder):
            self.sync.forget(removed)

    # ---------------------------------------------------------------- probe

    def probe_tokens(self) -> list[int]:
        """The fixed token sequence used to check weight arrival (BOS + PROBE_TEXT)."""
        return probe_tokens(self.tokenizer)

    async def check_arrival(self, policy_version: int, expected: Sequence[float]) -> None:
        """Raises WeightSyncError unless the sampler's probe logprobs of `policy_version` match
        the learner's. Served like any request: it switches nothing under other requests."""
        tokens = self.probe_tokens()
        check_expected_count(tokens, expected)
        logprobs = await self.prompt_logprobs(tokens, policy_version)
        got = [lp for lp in logprobs[1:] if lp is not None]
        assert len(got) == len(logprobs) - 1  # only position 0 (no context) has no logprob
        assert self.config.probe_tolerance is not None  # resolved in __init__
        check_arrival(policy_version, got, expected, self.config.probe_tolerance,
                      exact=self.config.dtype == "float32")

    # ---------------------------------------------------------------- requests

    async def generate(
        self, prompt: Sequence[int], params: Any, policy_version: int,
    ) -> Generation:
        """One request (vLLM `n=1`) on `policy_version`; each token is stamped with its version."""
        self.store.folder(policy_version)  # raises PolicyVersionNotFoundError
        key = self.vllm.new_request_id()
        async with self.sync.serve(policy_version, key) as extra:
            try:
                out = await self.vllm.generate(prompt, params, key, extra)
            except BaseException:
                self.stamps.discard(key)
                raise
        return Generation(out.tokens, out.logprobs, out.finish_reason, out.prompt_logprobs,
                          out.cached_prompt_tokens, out.sampled_topk,
                          self.stamps.finish(key, len(out.tokens)))

    async def prompt_logprobs(
        self, tokens: Sequence[int], policy_version: int,
    ) -> list[float | None]:
        """[None, log p(t1|t0), log p(t2|t0 t1), ...] under `policy_version`."""
        if len(tokens) < 1:
            raise InvalidInputError("prompt", "needs at least one token")
        self.store.folder(policy_version)  # raises PolicyVersionNotFoundError
        key = self.vllm.new_request_id()
        async with self.sync.serve(policy_version, key) as extra:
            try:
                return await self.vllm.prompt_logprobs(tokens, key, extra)
            finally:
                self.stamps.discard(key)


# ---------------------------------------------------------------------------- owners

# One engine starts at a time in a process: vLLM's start reads the process's environment, which
# VllmEngine sets for the engine it starts. Looking up a running engine never waits for a start
# (a sampler whose engine is being replaced must not hold up the others).
_START_LOCK = threading.Lock()


class SamplerEngines:
    """The sampler engines one owner holds, one per (base model, `EngineConfig.slot`), each
    started on first use (20-60 s on the 2-core CPU, docs/startup.md); an engine whose process
    died is replaced by a new one.

    A run hands its `SamplerEngines` to every sampler actor it spawns, so an actor restarted
    after a crash takes its slot's engine over (the runtime builds the new instance from the same
    arguments). `IN_PROCESS` holds the engines of the in-process API (`SamplingClient`) and of
    runs not given their own: a second run in a notebook, or the test suite, reuses the engine
    instead of starting one. Sent to another process (a Ray actor), it arrives empty: engines
    belong to the process that started them.
    """

    def __init__(self) -> None:
        self._engines: dict[tuple[Path, int], SamplerEngine] = {}
        self._lock = threading.Lock()  # guards _engines; held only briefly
        _OPEN.add(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SamplerEngines, ())

    def get(self, base_model: str, config: EngineConfig | None = None) -> SamplerEngine:
        """The engine for `base_model` in `config.slot` (default 0), started if none runs."""
        return self.acquire(base_model, config)[0]

    def acquire(self, base_model: str, config: EngineConfig | None = None,
                ) -> tuple[SamplerEngine, bool]:
        """`get`, and whether this call started the engine (its caller then owns it)."""
        key = (resolve_model(base_model), config.slot if config is not None else 0)
        engine = self._running(key, config, base_model)
        if engine is not None:
            return engine, False
        with _START_LOCK:
            engine = self._running(key, config, base_model)  # started by another thread
            if engine is not None:
                return engine, False
            with self._lock:
                old = self._engines.pop(key, None)
            if old is not None and old.dead:
                log.warning("the sampler engine for %s (slot %d) died; starting a new one",
                            base_model, key[1])
            if old is not None:
                old.close()
            engine = SamplerEngine(base_model, config)
            with self._lock:
                self._engines[key] = engine
            return engine, True

    def running(self, base_model: str, slot: int = 0) -> SamplerEngine | None:
        """The engine for `base_model` in `slot` if one runs (never starts one)."""
        return self._running((resolve_model(base_model), slot), None, base_model)

    def _running(self, key: tuple[Path, int], config: EngineConfig | None,
                 base_model: str) -> SamplerEngine | None:
        """The live engine under `key` (its config must match `config`); None if there is none."""
        with self._lock:
            engine = self._engines.get(key)
        if engine is None or engine.closed or engine.dead:
            return None
        if config is not None and not config.served_by(engine.config):
            raise InvalidInputError(
                "engine_config", f"an engine for {base_model!r} (slot {key[1]}) already runs "
                f"with {engine.config}; close it first to change it"
            )
        return engine

    def close(self) -> None:
        """Shuts every engine down. Safe to call twice; engines start again on next use."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()


_OPEN: weakref.WeakSet[SamplerEngines] = weakref.WeakSet()  # closed at exit, never looked up


@atexit.register
def _close_at_exit() -> None:
    """No engine process outlives us (a script may end without closing its engines)."""
    for engines in list(_OPEN):
        engines.close()


IN_PROCESS = SamplerEngines()


def get_engine(base_model: str, config: EngineConfig | None = None) -> SamplerEngine:
    """The in-process API's engine for `base_model` (`IN_PROCESS.get`)."""
    return IN_PROCESS.get(base_model, config)


def close_all() -> None:
    """Shuts the in-process API's engines down (also runs at interpreter exit)."""
    IN_PROCESS.close()

"""One vLLM engine per base model, living on its own event-loop thread.

vLLM's `AsyncLLM` is bound to the loop it starts on. Giving it a private loop thread lets sync
callers (`future.result()`) and async callers on any loop share one engine; all engine state is
touched on that thread only. Engines are shared per base model within a process (`get_engine`)
and closed by `close_all()` (also registered with atexit), so no engine process outlives us.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mint_rl.errors import ConflictError, InvalidInputError, NotFoundError, WeightSyncError
from mint_rl.models import resolve_model
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.lora_merge import check_adapter_dir
from mint_rl.sampler.versions import VersionStamps
from mint_rl.sampler.weight_sync import WeightSync, make_sync

T = TypeVar("T")
log = logging.getLogger(__name__)

# Seconds the engine processes get to exit after SIGTERM before vLLM kills them.
_SHUTDOWN_SECONDS = 20.0

# A fixed text whose tokens probe weight arrival after each push (see `probe_tokens`).
PROBE_TEXT = "The capital of France is Paris. What is 3 + 4? The answer is 7."


@dataclass
class Generation:
    """One finished request: generated tokens, their logprobs and versions, and prompt scores."""

    tokens: list[int]
    logprobs: list[float]
    versions: list[int]
    finish_reason: str
    prompt_logprobs: list[dict[int, Any] | None] | None


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Sets environment variables for the duration of the block, then restores them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _thread_affinity(cores: tuple[int, ...] | None) -> Iterator[None]:
    """Confines the calling thread (and processes it starts) to `cores` for the block."""
    if cores is None:
        yield
        return
    saved = os.sched_getaffinity(0)  # pid 0: the calling thread
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


@contextlib.contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """Blocks SIGINT in the calling thread; processes started meanwhile keep it blocked.

    A terminal's Ctrl-C goes to every process in the foreground group. vLLM's engine process
    would abort its requests and exit on its own, racing our shutdown and failing the requests
    in flight; with SIGINT blocked there, this process alone handles Ctrl-C and shuts the
    engine down in order (SIGTERM). The signal mask survives fork and exec.
    """
    if threading.current_thread() is threading.main_thread():
        yield  # the main thread must keep receiving Ctrl-C itself
        return
    # multiprocessing starts its resource tracker with the first child and unblocks SIGINT in
    # the calling thread as it does: start it first.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)


class _LoopThread:
    """An asyncio loop running forever on a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


class SamplerEngine:
    """A vLLM engine serving policy versions of one base model."""

    def __init__(self, base_model: str, config: EngineConfig | None = None) -> None:
        from transformers import AutoTokenizer

        self.base_model = base_model
        self.model_dir = resolve_model(base_model)
        self.config = (config or EngineConfig()).resolve()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.versions: dict[int, Path | None] = {}
        self._sources: dict[int, Path | None] = {}  # version -> the folder it was pushed from
        self._synthetic = itertools.count(-1, -1)  # versions for paths nobody numbered
        self.stamps = VersionStamps()
        self._ids = itertools.count()
        self._store = Path(tempfile.mkdtemp(prefix="mint-sampler-"))
        self._closed = False
        self.llm: Any = None
        self._thread = _LoopThread(f"mint-sampler-{self.model_dir.name}")
        self.sync: WeightSync = make_sync(self.config.strategy, self)
        try:
            self.run(self._start())
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        c = self.config
        # The worker imports our extension by name in a spawned process: make sure it can.
        root = str(Path(__file__).resolve().parents[2])
        if root not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (root, os.environ.get("PYTHONPATH")) if p
            )
        kwargs: dict[str, Any] = dict(
            model=str(self.model_dir),
            dtype=c.dtype,
            seed=c.seed,
            max_model_len=c.max_model_len,
            logprobs_mode="processed_logprobs",  # logprobs of the distribution sampled from
            max_logprobs=c.max_logprobs,
            enable_prefix_caching=c.enable_prefix_caching,
            enforce_eager=c.enforce_eager,
            worker_extension_cls="mint_rl.sampler.worker_ext.MintWorkerExtension",
            disable_log_stats=True,
        )
        if c.device == "cpu":
            kwargs["kv_cache_memory_bytes"] = c.kv_cache_bytes
        else:
            kwargs["gpu_memory_utilization"] = c.gpu_memory_utilization
        if c.strategy == "adapter":
            kwargs.update(enable_lora=True, max_lora_rank=c.max_lora_rank, max_loras=c.max_loras,
                          max_cpu_loras=max(c.max_loras, c.keep_versions))
        start = time.perf_counter()
        # The engine process spawned here inherits this thread's environment and CPU affinity.
        with (_environment(c.vllm_environment()), _thread_affinity(c.engine_cores()),
              _interrupts_blocked()):
            self.llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        # Started from this loop thread, which lives as long as the engine: when our process
        # dies, even by SIGKILL, the engine process is told to shut down.
        await self.llm.collective_rpc("mint_exit_with_parent")
        await self.sync.setup()
        log.info("sampler engine for %s up in %.1f s (%s, %s, cores %s)", self.base_model,
                 time.perf_counter() - start, c.strategy, c.dtype, c.cpu_cores)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs `coro` on the engine loop and waits (not from the engine loop itself)."""
        return self.submit(coro).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"sampler engine for {self.base_model!r} is closed")
        return self._thread.submit(coro)

    def close(self) -> None:
        """Shuts the engine (and its processes) down in order. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                self._thread.submit(self._shutdown(llm)).result(timeout=_SHUTDOWN_SECONDS + 5)
            except Exception as e:  # shutting down anyway
                log.warning("sampler engine shutdown: %s", e)
        self._thread.stop()
        shutil.rmtree(self._store, ignore_errors=True)

    @staticmethod
    async def _shutdown(llm: Any) -> None:
        # vLLM's own shutdown stops the engine processes first and cancels the task that reads
        # their outputs last; that task then sees a dead engine and logs EngineDeadError. Stop
        # the reader first, on the loop it runs on, then the processes, with time to exit
        # cleanly (the engine core waits for its worker; a short timeout ends in SIGKILL).
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await handler
        await asyncio.to_thread(llm.shutdown, _SHUTDOWN_SECONDS)

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- versions

    def register(self, model_path: str | Path | None, version: int | None) -> int:
        """Makes a policy servable under `version` (None: look the path up, or number it)."""
        return self.run(self._register(model_path, version))

    async def _register(self, model_path: str | Path | None, version: int | None) -> int:
        path = check_adapter_dir(model_path, "model_path") if model_path is not None else None
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise InvalidInputError("policy_version", f"must be an int, got {version!r}")
        if version is None:
            known = [v for v, p in self._sources.items() if p == path] if path else []
            if path is None:
                version = 0
            elif known:
                return known[-1]
            else:
                version = next(self._synthetic)
        if version in self.versions:
            if self._sources.get(version) != path:
                raise InvalidInputError(
                    "policy_version",
                    f"{version} is already registered with {self._sources[version]}",
                )
            return version
        self.versions[version] = self._keep(path, version)
        self._sources[version] = path
        self._evict_old()
        return version

    def _keep(self, path: Path | None, version: int) -> Path | None:
        """Copies the adapter: the learner may overwrite its folder while we still serve it."""
        if path is None:
            return None
        dest = self._store / f"v{version}-{next(self._ids)}"
        shutil.copytree(path, dest)
        return dest

    def _evict_old(self) -> None:
        adapters = sorted(v for v, p in self.versions.items() if p is not None and v >= 0)
        for version in adapters[: -self.config.keep_versions]:
            self._drop_version(version)

    def _drop_version(self, version: int) -> None:
        """Stops serving `version` and deletes its copy (unless its weights are the served ones)."""
        path = self.versions.pop(version)
        self.sync.forget(version)
        if path is not None and path != getattr(self.sync, "current", None):
            shutil.rmtree(path, ignore_errors=True)

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
        for version in list(self.versions):
            self._drop_version(version)
        self._sources.clear()

    def check_version(self, version: int) -> None:
        if version not in self.versions:
            raise NotFoundError(
                f"policy_version: {version} is not served (evicted, or never pushed); "
                f"the sampler keeps the newest {self.config.keep_versions} versions"
            )

    async def push(
        self, adapter_dir: str | Path | None, version: int,
        expected_probe_logprobs: Sequence[float] | None = None,
    ) -> float:
        """Registers `version`, makes it the one served, checks it arrived; returns seconds."""
        start = time.perf_counter()
        await self._register(adapter_dir, version)
        await self.sync.install(version)
        if expected_probe_logprobs is not None:
            await self.verify(version, expected_probe_logprobs)
        return time.perf_counter() - start

    # ---------------------------------------------------------------- probe

    def probe_tokens(self) -> list[int]:
        """The fixed token sequence used to check weight arrival (BOS + PROBE_TEXT)."""
        tokens = self.tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + list(tokens)

    async def verify(self, version: int, expected: Sequence[float]) -> None:
        """Raises WeightSyncError unless the sampler's probe logprobs match the learner's."""
        probe = self.probe_tokens()
        if len(expected) != len(probe) - 1:
            raise InvalidInputError(
                "expected_probe_logprobs",
                f"needs {len(probe) - 1} values (logprobs of probe[1:]), got {len(expected)}",
            )
        got = (await self.prompt_logprobs(probe, version))[1:]
        diffs = [abs(g - float(e)) for g, e in zip(got, expected, strict=True)]
        worst = max(range(len(diffs)), key=diffs.__getitem__)
        if not diffs[worst] <= self.config.probe_tolerance:  # also catches NaN
            raise WeightSyncError(
                f"policy version {version}: the sampler's probe logprobs differ from the "
                f"learner's by {diffs[worst]:.3g} nats at position {worst + 1} (tolerance "
                f"{self.config.probe_tolerance}); the sampler is not serving the pushed weights"
            )

    # ---------------------------------------------------------------- requests

    async def generate(
        self, prompt: Sequence[int], params: Any, version: int,
    ) -> Generation:
        """One request (vLLM `n=1`) on `version`; tokens are stamped with their versions."""
        from vllm.inputs import TokensPrompt

        self.check_version(version)
        key = f"mint{next(self._ids)}"
        async with self.sync.serve(version, key) as extra:
            lora = extra.get("lora_request")
            inputs = TokensPrompt(prompt_token_ids=list(prompt))
            if extra.get("cache_salt"):
                inputs["cache_salt"] = extra["cache_salt"]
            final = None
            try:
                async for out in self.llm.generate(inputs, params, key, lora_request=lora):
                    final = out
            except BaseException:
                self.stamps.discard(key)
                raise
        assert final is not None
        completion = final.outputs[0]
        tokens = list(completion.token_ids)
        versions = self.stamps.finish(key, len(tokens))
        steps = completion.logprobs if params.logprobs is not None else None
        logprobs = [s[t].logprob for s, t in zip(steps, tokens, strict=True)] if steps else []
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with {completion.finish_reason!r}")
        return Generation(tokens, logprobs, versions, completion.finish_reason,
                          final.prompt_logprobs)

    async def prompt_logprobs(self, tokens: Sequence[int], version: int) -> list[float | None]:
        """[None, log p(t1|t0), log p(t2|t0 t1), ...] under `version`."""
        from vllm import SamplingParams as VllmSamplingParams

        if len(tokens) < 1:
            raise InvalidInputError("prompt", "needs at least one token")
        params = VllmSamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        gen = await self.generate(tokens, params, version)
        return [None] + [
            d[t].logprob for d, t in zip(gen.prompt_logprobs[1:], tokens[1:], strict=True)
        ]


# ---------------------------------------------------------------------------- registry

_ENGINES: dict[Path, SamplerEngine] = {}
_LOCK = threading.Lock()


def get_engine(base_model: str, config: EngineConfig | None = None) -> SamplerEngine:
    """The process's engine for `base_model`, started on first use (1-2 min on the 2-core CPU:
    vLLM compiles the model at every start, see docs/sampling.md)."""
    key = resolve_model(base_model)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is not None and not engine.closed:
            if config is not None and config.resolve() != engine.config:
                raise InvalidInputError(
                    "engine_config", f"an engine for {base_model!r} already runs with "
                    f"{engine.config}; close_all() first to change it"
                )
            return engine
        engine = SamplerEngine(base_model, config)
        _ENGINES[key] = engine
        return engine


def running_engine(base_model: str) -> SamplerEngine | None:
    """The engine for `base_model` if one runs in this process (never starts one)."""
    engine = _ENGINES.get(resolve_model(base_model))
    return engine if engine is not None and not engine.closed else None


def close_all() -> None:
    """Shuts every sampler engine of this process down (also runs at interpreter exit)."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.close()


atexit.register(close_all)

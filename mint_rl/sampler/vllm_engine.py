"""vLLM's `AsyncLLM` for one model, living on its own event-loop thread.

`AsyncLLM` is bound to the loop it starts on. Giving it a private loop thread lets sync callers
(`future.result()`) and async callers on any loop share one engine; all engine state is touched
on that thread only. This module knows nothing of policy versions: a request's `extra` (what a
weight-sync strategy asks of it, see weight_sync.py) is passed through to vLLM as it is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mint_rl.errors import SamplerEngineDeadError
from mint_rl.sampler.config import EngineConfig, kv_cache_size

T = TypeVar("T")
log = logging.getLogger(__name__)

# Seconds the engine processes get to exit after SIGTERM before vLLM kills them.
_SHUTDOWN_SECONDS = 20.0


@dataclass
class Completion:
    """One finished request: generated tokens, their logprobs, and the prompt's scores."""

    tokens: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_logprobs: list[dict[int, Any] | None] | None
    cached_prompt_tokens: int  # prompt tokens served from the prefix cache, not prefilled
    # The k most likely (token, logprob) at each generated position, when asked (logprobs=k).
    sampled_topk: list[list[tuple[int, float]]] | None

    def scored_prompt(self) -> list[dict[int, Any]]:
        """vLLM's scores of the prompt positions after the first (which has no context, so no
        score); empty when the request did not ask for prompt logprobs."""
        out = []
        for scores in (self.prompt_logprobs or [])[1:]:
            assert scores is not None  # vLLM scores every prompt position after the first
            out.append(scores)
        return out



def top_k(scores: Mapping[int, Any], k: int) -> list[tuple[int, float]]:
    """The k best (token, logprob) of one position's vLLM scores, best first (vLLM adds the
    chosen token to its top k when it is not among them: that one is left out)."""
    ranked = [(tok, lp.logprob) for tok, lp in scores.items()
              if lp.rank is not None and lp.rank <= k]
    return sorted(ranked, key=lambda pair: -pair[1])[:k]


def engine_args(c: EngineConfig, model_dir: Path) -> dict[str, Any]:
    """vLLM's engine arguments for a resolved `c` (the benches start raw vLLM with them too)."""
    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        dtype=c.dtype,
        seed=c.seed,
        max_model_len=c.max_model_len,
        logprobs_mode="processed_logprobs",  # logprobs of the distribution sampled from
        max_logprobs=c.max_logprobs,
        enable_prefix_caching=c.enable_prefix_caching,
        enable_chunked_prefill=c.chunked_prefill,
        enforce_eager=c.enforce_eager,
        worker_extension_cls="mint_rl.sampler.worker_ext.MintWorkerExtension",
        disable_log_stats=True,
    )
    if c.block_size is not None:
        kwargs["block_size"] = c.block_size
    if c.device == "cpu":
        import psutil
        from transformers import AutoConfig

        kv = kv_cache_size(c, AutoConfig.from_pretrained(model_dir),
                           psutil.virtual_memory().available)
        kwargs["kv_cache_memory_bytes"] = kv.bytes
        if kv.max_num_seqs is not None:
            kwargs["max_num_seqs"] = kv.max_num_seqs
    else:
        kwargs["gpu_memory_utilization"] = c.gpu_memory_utilization
    if c.strategy == "adapter":
        kwargs.update(enable_lora=True, max_lora_rank=c.max_lora_rank, max_loras=c.max_loras,
                      max_cpu_loras=max(c.max_loras, c.keep_versions))
    return kwargs


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


class VllmEngine:
    """One started `AsyncLLM` (settings from a resolved `EngineConfig`) and its loop thread.

    `name` (the base model id) only labels messages.
    """

    def __init__(self, model_dir: Path, config: EngineConfig, name: str) -> None:
        self.model_dir = model_dir
        self.config = config
        self.name = name
        self._closed = False
        self._llm: Any = None
        self._request_ids = itertools.count()
        self._thread = _LoopThread(f"mint-sampler-{model_dir.name}-{config.slot}")
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
        # The engine process spawned here inherits this thread's environment and CPU affinity.
        with (_environment(c.vllm_environment()), _thread_affinity(c.engine_cores()),
              _interrupts_blocked()):
            self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args(c, self.model_dir)))
        # Started from this loop thread, which lives as long as the engine: when our process
        # dies, even by SIGKILL, the engine process is told to shut down.
        await self._llm.collective_rpc("mint_exit_with_parent")

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs `coro` on the engine loop and waits (not from the engine loop itself).

        Raises SamplerEngineDeadError if the engine process dies meanwhile: vLLM fails the
        requests in flight, but a call into its workers (a weight switch) would wait forever."""
        future = self.submit(coro)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            try:
                return future.result(wait)
            except concurrent.futures.TimeoutError:
                if self.dead:
                    future.cancel()
                    raise SamplerEngineDeadError(
                        f"the vLLM engine process of {self.name!r} died") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedules `coro` on the engine loop."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"sampler engine for {self.name!r} is closed")
        return self._thread.submit(coro)

    def close(self) -> None:
        """Shuts the engine (and its processes) down in order. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        llm, self._llm = self._llm, None
        if llm is not None:
            try:
                self._thread.submit(self._shutdown(llm)).result(timeout=_SHUTDOWN_SECONDS + 5)
            except Exception as e:  # shutting down anyway
                log.warning("sampler engine shutdown: %s", e)
        self._thread.stop()

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
        await _in_thread(llm.shutdown, _SHUTDOWN_SECONDS)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dead(self) -> bool:
        """The engine process died (killed, out of memory): every request fails from now on."""
        return self._llm is not None and bool(self._llm.errored)

    # ---------------------------------------------------------------- requests

    def new_request_id(self) -> str:
        """An id no other request of this engine has (vLLM appends a suffix to it)."""
        return f"mint{next(self._request_ids)}"

    async def generate(
        self, prompt: Sequence[int], params: Any, request_id: str, extra: Mapping[str, Any],
    ) -> Completion:
        """One request (vLLM `n=1`). `extra`: `lora_request` and/or `cache_salt`, or nothing."""
        from vllm.inputs import TokensPrompt

        inputs = TokensPrompt(prompt_token_ids=list(prompt))
        if extra.get("cache_salt"):
            inputs["cache_salt"] = extra["cache_salt"]
        final = None
        async for out in self._llm.generate(inputs, params, request_id,
                                            lora_request=extra.get("lora_request")):
            final = out
        assert final is not None
        completion = final.outputs[0]
        tokens = list(completion.token_ids)
        steps = completion.logprobs if params.logprobs is not None else None
        logprobs = [s[t].logprob for s, t in zip(steps, tokens, strict=True)] if steps else []
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with {completion.finish_reason!r}")
        k = params.logprobs or 0
        topk = [top_k(step, k) for step in steps] if steps and k > 0 else None
        return Completion(tokens, logprobs, completion.finish_reason, final.prompt_logprobs,
                          final.num_cached_tokens or 0, topk)

    async def prompt_logprobs(
        self, tokens: Sequence[int], request_id: str, extra: Mapping[str, Any],
    ) -> list[float | None]:
        """[None, log p(t1|t0), log p(t2|t0 t1), ...] of at least one token; `extra` as for
        `generate`."""
        from vllm import SamplingParams as VllmSamplingParams

        params = VllmSamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        out = await self.generate(tokens, params, request_id, extra)
        assert out.prompt_logprobs is not None  # asked for above (prompt_logprobs=0)
        return [None, *(
            d[t].logprob for d, t in zip(out.scored_prompt(), tokens[1:], strict=True)
        )]

    # ---------------------------------------------------------------- weights

    async def load_lora(self, lora_request: Any) -> None:
        """Loads a LoRA (vLLM `LoRARequest`) so that requests naming it start at once."""
        await self._llm.add_lora(lora_request)

    async def remove_lora(self, lora_id: int) -> None:
        await self._llm.remove_lora(lora_id)

    async def call_workers(self, method: str, *args: Any) -> list[Any]:
        """Calls a `MintWorkerExtension` method in every worker, between two engine steps."""
        return await self._llm.collective_rpc(method, args=args)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> None:
    """Runs `fn(*args)` in a thread of its own and waits for it, without blocking the loop.

    Not `asyncio.to_thread`: at interpreter exit (when atexit closes the engines) the loop's
    default executor refuses new work ("cannot schedule new futures after interpreter
    shutdown"), which left the engine processes to die with their parent."""
    result: concurrent.futures.Future[None] = concurrent.futures.Future()

    def work() -> None:
        try:
            fn(*args)
            result.set_result(None)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting coroutine
            result.set_exception(e)

    threading.Thread(target=work, name="mint-engine-shutdown", daemon=True).start()
    await asyncio.wrap_future(result)

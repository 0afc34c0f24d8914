"""Engine settings, with defaults chosen per hardware (CPU: fp32 + merged; GPU: bf16 + adapter)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from mint_rl.errors import InvalidInputError
from mint_rl.placement import available_cores, format_cores, parse_cores

Strategy = Literal["auto", "merged", "adapter"]
DType = Literal["auto", "float32", "bfloat16", "float16"]

GiB = 1 << 30


@dataclass(frozen=True)
class EngineConfig:
    """How one vLLM engine is started. `auto` fields are resolved by `resolve()`."""

    strategy: Strategy = "auto"
    dtype: DType = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU: KV cache bytes (vLLM's default fraction of a NUMA node fails on small boxes). None =
    # sized for the workload below from the model's shape, within KV_CACHE_SHARE of the memory
    # available when the engine starts (see `kv_cache_size`).
    kv_cache_bytes: int | None = None
    # The workload the KV cache is sized for: sequences decoding at once, each up to
    # `sequence_tokens` (prompt + completion). A run knows both from its batch and max_tokens.
    sequences: int = 32
    sequence_tokens: int = 1024
    gpu_memory_utilization: float = 0.5
    max_model_len: int | None = 4096
    max_lora_rank: int = 32  # adapter strategy: the largest adapter rank served
    max_loras: int = 4  # adapter strategy: versions resident per batch (>= staleness + 1)
    keep_versions: int = 16  # adapter copies kept on disk for clients of older versions
    max_logprobs: int = 20
    enable_prefix_caching: bool = True
    # KV cache block, in tokens; prefix caching shares whole blocks only. None = auto: 32 on CPU,
    # where vLLM's default of 128 is longer than most RL prompts, so the samples of a group each
    # prefilled the whole prompt again (8 x 8 arithmetic samples: 5.5 s, 3.6 s with 32-token
    # blocks; docs/sampling.md); 32 is the smallest vLLM's CPU attention takes. GPU: vLLM's.
    block_size: int | None = None
    chunked_prefill: bool = True
    """Off: a prompt is always prefilled in one engine step. Needed for seeded requests on CPU,
    where vLLM cannot rewind a seeded generator after a partial prefill (the engine dies with
    "CPU Generator does not use offset")."""
    # Nats: how far the sampler's probe logprobs may be from the learner's after a load. None =
    # by dtype: float32, 1e-3 at every position (they agree to ~1e-5). bf16/fp16: 0.25 on the
    # mean over positions. Precision alone (vLLM keeps the residual stream in bf16, the learner's
    # autocast in fp32) moves single positions of the default model by up to 0.57 nats and the
    # mean by 0.04-0.09 over a 30-step run (bench/probe_precision.py), close enough to the
    # earlier 0.1 that it stopped a run. A gross mismatch (another model, weights not applied)
    # fails, a one-step lag may not.
    probe_tolerance: float | None = None
    seed: int = 0
    # Which of the process's engines for this base model: engines with different slots are
    # separate vLLM engines (each its own engine-core process, cores and KV cache). A run with
    # `--samplers N` gives sampler i slot i; everything else (clients, the server) uses slot 0.
    slot: int = 0
    # CPU: the cores vLLM's model threads are bound to. "all" = every core this process may use
    # (vLLM's own "auto" keeps one core per NUMA node for its scheduler: half of a 2-core box,
    # 119 vs 186 tok/s measured); "auto" = vLLM's binding; "nobind"; or a list like "0-1", "2,3".
    cpu_cores: str = "all"
    # Skip torch.compile (and CUDA graphs). None = auto: eager on CPU, where compiling costs
    # ~70 s per engine start on 2 cores for ~15% more decode speed, repaid only after ~80k
    # tokens (docs/startup.md); compiled on GPU.
    enforce_eager: bool | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ("auto", "merged", "adapter"):
            raise InvalidInputError(
                "strategy", f"must be auto, merged or adapter, got {self.strategy!r}"
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise InvalidInputError("dtype", f"unsupported {self.dtype!r}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 16 * (1 << 20):
            raise InvalidInputError("kv_cache_bytes", f"at least 16 MiB, got {self.kv_cache_bytes}")
        if self.sequences < 1 or self.sequence_tokens < 1:
            raise InvalidInputError("sequences", "and sequence_tokens must be >= 1, got "
                                                 f"{self.sequences}, {self.sequence_tokens}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise InvalidInputError("gpu_memory_utilization", "must be in (0, 1]")
        for name in ("max_lora_rank", "max_loras", "keep_versions", "max_logprobs"):
            if getattr(self, name) < 1:
                raise InvalidInputError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.slot < 0:
            raise InvalidInputError("slot", f"must be >= 0, got {self.slot}")
        if self.block_size is not None and (self.block_size < 1 or self.block_size % 16):
            raise InvalidInputError("block_size",
                                    f"must be a positive multiple of 16, got {self.block_size}")
        if self.probe_tolerance is not None and not self.probe_tolerance > 0:
            raise InvalidInputError("probe_tolerance", "must be > 0")
        if self.cpu_cores not in ("all", "auto", "nobind"):
            parse_cores(self.cpu_cores, "cpu_cores")

    def resolve(self) -> EngineConfig:
        """Fills `auto` fields from the hardware."""
        device = self.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        strategy = self.strategy
        if strategy == "auto":
            # vLLM-CPU LoRA kernels are 4-6x slower than merged weights; GPUs serve LoRA fast.
            strategy = "merged" if device == "cpu" else "adapter"
        dtype = self.dtype
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else "bfloat16"
        cpu_cores = self.cpu_cores
        if cpu_cores == "all":
            cpu_cores = format_cores(available_cores())
        elif cpu_cores not in ("auto", "nobind"):
            cpu_cores = format_cores(parse_cores(cpu_cores, "cpu_cores"))
        enforce_eager = self.enforce_eager
        if enforce_eager is None:
            enforce_eager = device == "cpu"
        block_size = self.block_size
        if block_size is None and device == "cpu":
            block_size = 32
        probe_tolerance = self.probe_tolerance
        if probe_tolerance is None:
            probe_tolerance = 1e-3 if dtype == "float32" else 0.25
        return replace(self, device=device, strategy=strategy, dtype=dtype, cpu_cores=cpu_cores,
                       enforce_eager=enforce_eager, probe_tolerance=probe_tolerance,
                       block_size=block_size)

    def served_by(self, running: EngineConfig) -> bool:
        """Whether an engine started with `running` (resolved) serves this config: the same but
        for the workload the KV cache was sized for, which mattered only at its start (a second
        run in a notebook or a test session reuses the engine)."""
        return replace(self.resolve(), sequences=running.sequences,
                       sequence_tokens=running.sequence_tokens) == running

    def vllm_environment(self) -> dict[str, str]:
        """Environment for the engine's processes that applies `cpu_cores` (resolved config).

        On CPU with our own binding, the model worker runs inside vLLM's engine-core process
        (`VLLM_ENABLE_V1_MULTIPROCESSING=0` lets vLLM pick its one-process executor, as on a
        single GPU): one spawned process instead of two, each of which re-imports vLLM and
        torch, saves ~10 s per engine start on 2 cores at the same decode speed
        (docs/startup.md). vLLM binds OpenMP threads only when it spawns a separate worker;
        here the engine process inherits the cores from the thread that starts it
        (`VllmEngine` sets that thread's affinity) and gets one OpenMP thread per core.
        """
        if self.device != "cpu" or self.cpu_cores == "auto":
            return {}
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        if self.cpu_cores == "nobind":
            return env
        return {**env, "OMP_NUM_THREADS": str(len(parse_cores(self.cpu_cores, "cpu_cores")))}

    def engine_cores(self) -> tuple[int, ...] | None:
        """The cores the engine process is confined to (resolved config); None = not ours."""
        if self.device != "cpu" or self.cpu_cores in ("auto", "nobind"):
            return None
        return parse_cores(self.cpu_cores, "cpu_cores")


# CPU: the most of the memory available at engine start that the KV cache may take. The rest is
# the learner's (its weights, and activations planned from what is free at each call:
# mint_rl/learner/memory.py) and the processes' own. See docs/memory.md.
KV_CACHE_SHARE = 0.25
MIN_KV_CACHE = 256 << 20


@dataclass(frozen=True)
class KVCacheSize:
    bytes: int
    # vLLM's max_num_seqs where the cache cannot hold `sequences` at full length (else None):
    # admitted sequences then always finish, instead of evicting each other (preemption).
    max_num_seqs: int | None
    bytes_per_token: int


def kv_bytes_per_token(model_config: Any, dtype: str) -> int:
    """KV cache bytes one token takes: a key and a value per layer and KV head."""
    heads = getattr(model_config, "num_key_value_heads", None) or model_config.num_attention_heads
    head_dim = getattr(model_config, "head_dim", None) or (
        model_config.hidden_size // model_config.num_attention_heads)
    element = 4 if dtype == "float32" else 2
    return 2 * model_config.num_hidden_layers * heads * head_dim * element


def kv_cache_size(c: EngineConfig, model_config: Any, available: int) -> KVCacheSize:
    """The CPU KV cache for a resolved config: `c.kv_cache_bytes` when set, else room for
    `c.sequences` x `c.sequence_tokens`, between MIN_KV_CACHE and KV_CACHE_SHARE of `available`."""
    per_token = kv_bytes_per_token(model_config, c.dtype)
    tokens = min(c.sequence_tokens, c.max_model_len or c.sequence_tokens)
    need = c.sequences * tokens * per_token
    size = c.kv_cache_bytes
    if size is None:
        size = int(max(MIN_KV_CACHE, min(need, KV_CACHE_SHARE * available)))
    fits = size // (tokens * per_token)
    return KVCacheSize(size, max(1, int(fits)) if fits < c.sequences else None, per_token)

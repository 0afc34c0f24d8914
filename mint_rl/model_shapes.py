"""Models of real architectures with random weights, built here from their published configs.

Nothing can be downloaded on the machines this project runs on, but a model's shape is public.
Memory and speed depend on the shape (layers, widths, heads, context), not on the weights' values,
so a folder with the architecture of Qwen3-0.6B or Llama-3.2-1B, random weights and the bundled
tokenizer measures what the real model would cost. It loads like any HF folder: the learner, vLLM
and `mint-rl serve` take it as `base_model`. It learns nothing useful; the bundled SmolLM2 stays
the model that learns.

One difference from the real model: the vocabulary is the bundled tokenizer's (49,152 tokens), so
the embedding (and LM head) is smaller than the real one (Qwen3's is 151,936): 491M parameters
instead of 596M for qwen3-0.6b. Every other dimension is the published one.

    mint-rl prepare-model --shape qwen3-0.6b --random      # -> $MINT_RL_HOME/models/random-...
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from mint_rl.errors import InvalidInputError
from mint_rl.models import DEFAULT_MODEL, mint_home, resolve_model


@dataclass(frozen=True)
class ModelShape:
    """The published architecture numbers of one model (from its config.json on the hub)."""

    model_type: str  # transformers' model_type: "qwen3", "llama", "qwen2"
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    source: str  # the hub id whose config the numbers are from
    vocab_size: int  # the published vocabulary (a folder built here uses the bundled tokenizer's)
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific config keys


SHAPES: dict[str, ModelShape] = {
    # Qwen/Qwen3-0.6B: the size prime-rl and the Tinker cookbook use for small RL runs.
    "qwen3-0.6b": ModelShape("qwen3", 1024, 3072, 28, 16, 8, 128, 40960, 1_000_000.0, 1e-6, True,
                             "Qwen/Qwen3-0.6B", 151936),
    "qwen3-1.7b": ModelShape("qwen3", 2048, 6144, 28, 16, 8, 128, 40960, 1_000_000.0, 1e-6, True,
                             "Qwen/Qwen3-1.7B", 151936),
    # Qwen/Qwen2.5-0.5B-Instruct: biases on q, k, v (Qwen2's attention).
    "qwen2.5-0.5b": ModelShape("qwen2", 896, 4864, 24, 14, 2, 64, 32768, 1_000_000.0, 1e-6, True,
                               "Qwen/Qwen2.5-0.5B-Instruct", 151936),
    # meta-llama/Llama-3.2-1B-Instruct: Llama 3's long-context RoPE scaling.
    "llama-3.2-1b": ModelShape("llama", 2048, 8192, 16, 32, 8, 64, 131072, 500_000.0, 1e-5, True,
                               "meta-llama/Llama-3.2-1B-Instruct", 128256,
                               {"rope_scaling": {"rope_type": "llama3", "factor": 32.0,
                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 8192}}),
    # HuggingFaceTB/SmolLM2-360M-Instruct: the bundled model's bigger sibling (same tokenizer).
    "smollm2-360m": ModelShape("llama", 960, 2560, 32, 15, 5, 64, 8192, 100_000.0, 1e-5, True,
                               "HuggingFaceTB/SmolLM2-360M-Instruct", 49152),
}


def shape_config(name: str, vocab_size: int | None = None, **special_tokens: int | None) -> Any:
    """The transformers config of shape `name`, with the published vocabulary unless another is
    given, and the given special tokens."""
    from transformers import AutoConfig

    shape = _shape(name)
    vocab_size = vocab_size or shape.vocab_size
    return AutoConfig.for_model(
        shape.model_type,
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        rms_norm_eps=shape.rms_norm_eps,
        tie_word_embeddings=shape.tie_word_embeddings,
        **shape.extra,
        **special_tokens,
    )


def random_model_dir(name: str) -> Path:
    """Where `prepare_random_model(name)` writes by default."""
    _shape(name)
    return mint_home() / "models" / f"random-{name}"


def prepare_random_model(name: str, out: Path | None = None, seed: int = 0) -> Path:
    """Writes an HF folder (config, safetensors, tokenizer) of shape `name` with random weights,
    once: a folder already there is returned as it is. Written atomically under a file lock."""
    _shape(name)  # an unknown shape fails before anything is written
    target = Path(out).expanduser().resolve() if out is not None else random_model_dir(name)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # another process finished while we waited
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
            _write_random_model(name, Path(tmp) / "model", seed)
            os.replace(Path(tmp) / "model", target)
    return target


def _write_random_model(name: str, out: Path, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    config = shape_config(name, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    config.name_or_path = f"random-{name}"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _shape(name: str) -> ModelShape:
    if name not in SHAPES:
        raise InvalidInputError("shape", f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    return SHAPES[name]

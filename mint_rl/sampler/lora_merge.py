"""Reading a PEFT LoRA adapter and merging it into (fused) base weights, in plain torch.

The `merged` weight-sync strategy needs W' = W0 + (alpha/r)·B@A for every LoRA-targeted matrix,
laid out the way vLLM stores it: q/k/v stacked row-wise into `qkv_proj`, gate/up into
`gate_up_proj`. This module knows nothing of vLLM so it can be tested on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from mint_rl.errors import InvalidInputError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."


@dataclass
class LoraDelta:
    """One targeted matrix: delta = scale · B @ A (B: out x r, A: r x in)."""

    a: torch.Tensor
    b: torch.Tensor
    scale: float


@dataclass
class Adapter:
    """A PEFT LoRA adapter: per checkpoint module name (e.g. `model.layers.0.self_attn.q_proj`)."""

    path: Path
    rank: int
    deltas: dict[str, LoraDelta] = field(default_factory=dict)


def check_adapter_dir(path: str | Path, field_name: str = "adapter_dir") -> Path:
    """Raises InvalidInputError unless `path` is a standard PEFT adapter folder."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise InvalidInputError(field_name, f"{p} is not a folder")
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        if not (p / name).exists():
            raise InvalidInputError(field_name, f"{p} has no {name} (expected a PEFT LoRA folder)")
    return p.resolve()


def read_adapter(path: str | Path, dtype: torch.dtype = torch.float32) -> Adapter:
    """Loads A, B and the scaling of each targeted module; rejects what cannot be merged."""
    p = check_adapter_dir(path)
    config = json.loads((p / ADAPTER_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidInputError("adapter_config.peft_type", f"only LORA, got {config['peft_type']}")
    for key in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise InvalidInputError(f"adapter_config.{key}", "not supported by the sampler")
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    a_mats: dict[str, torch.Tensor] = {}
    b_mats: dict[str, torch.Tensor] = {}
    with safe_open(str(p / ADAPTER_WEIGHTS), framework="pt") as f:
        for key in f.keys():
            name = key.removeprefix(_PEFT_PREFIX)
            if ".lora_A." in name:
                a_mats[name.split(".lora_A.")[0]] = f.get_tensor(key).to(dtype)
            elif ".lora_B." in name:
                b_mats[name.split(".lora_B.")[0]] = f.get_tensor(key).to(dtype)
            else:
                raise InvalidInputError("adapter_model", f"unexpected tensor {key!r}")
    if a_mats.keys() != b_mats.keys():
        raise InvalidInputError("adapter_model", "lora_A and lora_B name different modules")
    deltas = {}
    for name, a in a_mats.items():
        if name.endswith(("embed_tokens", "lm_head")):
            raise InvalidInputError(
                "adapter_model", f"LoRA on {name} is not supported (linear layers only)"
            )
        deltas[name] = LoraDelta(a=a, b=b_mats[name], scale=scale)
    return Adapter(path=p, rank=rank, deltas=deltas)


@dataclass
class FusedTarget:
    """A model matrix and the checkpoint matrices stacked row-wise into it, in order."""

    name: str  # e.g. model.layers.0.self_attn.qkv_proj
    shards: list[str]  # e.g. [...q_proj, ...k_proj, ...v_proj]


def fused_target(checkpoint_module: str, packed: Mapping[str, list[str]]) -> tuple[str, int]:
    """Maps `...self_attn.k_proj` to (`...self_attn.qkv_proj`, 1) using the packed mapping."""
    parent, _, leaf = checkpoint_module.rpartition(".")
    for fused, parts in packed.items():
        if leaf in parts:
            return f"{parent}.{fused}", parts.index(leaf)
    return checkpoint_module, 0


def shard_names(fused_name: str, packed: Mapping[str, list[str]]) -> list[str]:
    parent, _, leaf = fused_name.rpartition(".")
    if leaf in packed:
        return [f"{parent}.{part}" for part in packed[leaf]]
    return [fused_name]


def targets_of(adapter: Adapter | None, packed: Mapping[str, list[str]]) -> set[str]:
    """The fused model matrices an adapter touches."""
    if adapter is None:
        return set()
    return {fused_target(name, packed)[0] for name in adapter.deltas}


def merged_weight(
    fused_name: str,
    adapter: Adapter | None,
    packed: Mapping[str, list[str]],
    base: Callable[[str], torch.Tensor],
) -> torch.Tensor:
    """W0 + scale·B@A for each shard of `fused_name` (a new tensor; W0 is left untouched).

    `base(checkpoint_name)` returns the base weight of one shard (out x in).
    """
    shards = shard_names(fused_name, packed)
    bases = [base(s) for s in shards]
    out = torch.empty(
        (sum(b.shape[0] for b in bases), bases[0].shape[1]), dtype=bases[0].dtype
    )
    row = 0
    for shard, w0 in zip(shards, bases, strict=True):
        rows = slice(row, row + w0.shape[0])
        delta = adapter.deltas.get(shard) if adapter is not None else None
        if delta is None:
            out[rows].copy_(w0)
        else:
            b = delta.b.to(w0.dtype)
            a = delta.a.to(w0.dtype)
            if b.shape[0] != w0.shape[0] or a.shape[1] != w0.shape[1]:
                raise InvalidInputError(
                    "adapter_model",
                    f"{shard}: LoRA shapes B{tuple(b.shape)} A{tuple(a.shape)} do not fit "
                    f"the base weight {tuple(w0.shape)}",
                )
            torch.addmm(w0, b, a, alpha=delta.scale, out=out[rows])
        row += w0.shape[0]
    return out

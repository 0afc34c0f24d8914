"""Building the LoRA model with peft from Tinker's train_attn / train_mlp / train_unembed flags."""

from __future__ import annotations

import logging
import math
from typing import cast

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel

from mint_rl.types import LoraConfig

log = logging.getLogger(__name__)

# Tinker's LoRA alpha is not documented; a fixed alpha (with alpha/r scaling and B = 0 at init)
# keeps the best learning rate roughly independent of the rank, as Tinker's docs say it is.
LORA_ALPHA = 32

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj", "w1", "w2", "w3", "fc1", "fc2")


def target_modules(model: PreTrainedModel, config: LoraConfig) -> list[str]:
    """Leaf linear-layer names to adapt, found in the model rather than assumed."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear)}
    wanted: list[str] = []
    if config.train_attn:
        wanted += [n for n in _ATTN if n in names]
    if config.train_mlp:
        wanted += [n for n in _MLP if n in names]
    if config.train_unembed:
        if model.config.tie_word_embeddings:
            # The unembedding is the embedding matrix here; vLLM cannot serve a LoRA on it and
            # merging would change the input embeddings too. Train the rest, say so once.
            log.info("train_unembed ignored: %s ties lm_head to the embeddings",
                     model.config.model_type)
        elif "lm_head" in names:
            wanted.append("lm_head")
    return wanted


def add_lora(model: PreTrainedModel, config: LoraConfig) -> PeftModel:
    """Wraps `model` with a fresh LoRA adapter (B = 0, so it starts as the base model).

    `config.seed` makes A reproducible on any device: it is drawn on the CPU from its own
    generator (peft's init, kaiming-uniform, in parameter-name order) and copied to the layer's
    device, so a seed gives the same adapter on a CPU and a GPU."""
    peft_config = PeftLoraConfig(
        r=config.rank,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=target_modules(model, config),
        bias="none",
        task_type="CAUSAL_LM",
    )
    lora_model = get_peft_model(model, peft_config)
    if config.seed is not None:
        generator = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            for name, param in sorted(lora_model.named_parameters()):
                if ".lora_A." in name:
                    init = torch.empty(param.shape, dtype=param.dtype)
                    torch.nn.init.kaiming_uniform_(init, a=math.sqrt(5), generator=generator)
                    param.copy_(init)
    return cast(PeftModel, lora_model)

"""Sampler test and benchmark helpers: random PEFT adapters and HF+peft reference logprobs.

The reference path is deliberately independent of vLLM (plain transformers + peft), so agreement
between the two is evidence that the sampler serves the weights it claims to. Imported by the
tests as `sampler_reference` (pytest puts tests/ on sys.path) and by bench/bench_sampler.py as
`tests.sampler_reference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_random_adapter(
    base_dir: str | Path, out: str | Path, *, rank: int = 16, alpha: int = 32, seed: int = 0,
    b_std: float = 0.02,
) -> Path:
    """A PEFT LoRA folder on all attention+MLP linears with B non-zero (so it changes outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=ALL_LINEAR, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_std)
    peft_model.save_pretrained(out)
    return Path(out)


class HFReference:
    """HF transformers (+ optional peft adapter) scoring, fp32, for checking sampler logprobs."""

    def __init__(self, base_dir: str | Path) -> None:
        from transformers import AutoModelForCausalLM

        self.base_dir = Path(base_dir)
        self.model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        self._adapted: dict[str, torch.nn.Module] = {}

    @torch.no_grad()
    def logprobs(
        self, tokens: Sequence[int], adapter_dir: str | Path | None = None,
        temperature: float = 1.0,
    ) -> list[float]:
        """Per-position next-token logprobs: out[i] = log p(tokens[i+1] | tokens[:i+1])."""
        model = self._with_adapter(adapter_dir)
        ids = torch.tensor([list(tokens)])
        logits = model(input_ids=ids).logits[0, :-1].float() / temperature
        lp = torch.log_softmax(logits, dim=-1)
        return lp.gather(1, ids[0, 1:, None])[:, 0].tolist()

    @torch.no_grad()
    def logprobs_after_switch(
        self, tokens: Sequence[int], cut: int, before: str | Path | None,
        after: str | Path | None,
    ) -> list[float]:
        """What an engine whose weights changed from `before` to `after` computes: the keys and
        values of positions [0, cut) come from `before` (cached), the rest from `after`.
        out[i] = log p(tokens[cut + 1 + i] | tokens[:cut + 1 + i])."""
        ids = torch.tensor([list(tokens)])
        cache = self._with_adapter(before)(input_ids=ids[:, :cut], use_cache=True).past_key_values
        logits = self._with_adapter(after)(input_ids=ids[:, cut:-1], past_key_values=cache,
                                           use_cache=True).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)
        return lp.gather(1, ids[0, cut + 1:, None])[:, 0].tolist()

    def _with_adapter(self, adapter_dir: str | Path | None) -> torch.nn.Module:
        if adapter_dir is None:
            return self.model
        import copy

        from peft import PeftModel

        key = str(adapter_dir)
        if key not in self._adapted:
            model = copy.deepcopy(self.model)
            self._adapted[key] = PeftModel.from_pretrained(model, key).eval()
        return self._adapted[key]

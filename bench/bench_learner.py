"""Learner throughput: mint_rl's forward_backward against a hand-written torch + peft step.

One run, default model (SmolLM2-135M, fp32 weights), LoRA rank 16 on every attention and MLP
linear layer. Two batches:

  rl   an 8-prompt x 4-sample GRPO batch: prompts of 40..50 tokens, completions of 16 tokens,
       loss weights only on the completion tokens (where prompt sharing and selective logprobs
       help). Timed with cross_entropy and with ppo.
  sft  16 sequences of uniform 16..256 tokens, every weight 1 (nothing to share).

Two hand-written torch + peft steps, both peft.get_peft_model with the same LoRA config and every
sequence right-padded to the longest:

  naive    model(input_ids, attention_mask) -> logits at every position -> log_softmax -> gather
           -> weighted loss -> backward: what a first version looks like.
  careful  the decoder's hidden states, then the LM head and log_softmax only at the positions
           with a nonzero weight (the completion tokens of an RL batch): what a careful engineer
           writes, and the baseline mint_rl is compared with. bfloat16 rows autocast it the way
           mint_rl's bf16 learner does (fp32 weights, bf16 matmuls).

Tokens = real (non-padding) model input tokens of the batch, the same count for every row. Each
variant is warmed up once, then the repeats are interleaved across variants (so load from other
processes hits them alike) and the median is reported. Optimizer steps run between repeats,
untimed. mint_rl's ppo rows are compared with the cross_entropy baseline: ppo's elementwise
arithmetic on the gathered logprobs is negligible next to the model, so a hand-written ppo step
costs the same.

Also reported: the padding fraction of mint_rl's packed rows against padding to the longest.

    .venv/bin/python bench/bench_learner.py [--repeats 3] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from mint_rl import types
from mint_rl.client import ServiceClient
from mint_rl.learner.engine import LearnerSettings
from mint_rl.learner.lora import LORA_ALPHA, target_modules
from mint_rl.learner.packing import pack
from mint_rl.models import DEFAULT_MODEL, resolve_model

RANK = 16
PPO_CONFIG = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
ADAM = types.AdamParams(learning_rate=1e-5)


# ------------------------------------------------------------------------------------------------
# batches


@dataclass
class Seq:
    tokens: list[int]  # model input (length N)
    targets: list[int]  # next tokens (length N)
    weights: list[float]
    advantages: list[float]


def rl_batch(rng: np.random.Generator, vocab: int) -> list[Seq]:
    """8 prompts x 4 samples; prompt 40..50 tokens, completion 16; weights on completions."""
    out = []
    for _ in range(8):
        prompt = rng.integers(100, vocab - 100, int(rng.integers(40, 51))).tolist()
        rewards = rng.normal(size=4)
        for reward in rewards - rewards.mean():
            completion = rng.integers(100, vocab - 100, 16).tolist()
            full = prompt + completion
            n = len(full) - 1
            w = [0.0] * (len(prompt) - 1) + [1.0] * len(completion)
            out.append(Seq(full[:-1], full[1:], w, [float(reward) * x for x in w]))
            assert len(out[-1].weights) == n
    return out


def sft_batch(rng: np.random.Generator, vocab: int) -> list[Seq]:
    """16 sequences of uniform 16..256 tokens, all weights 1."""
    out = []
    for _ in range(16):
        full = rng.integers(100, vocab - 100, int(rng.integers(16, 257)) + 1).tolist()
        n = len(full) - 1
        out.append(Seq(full[:-1], full[1:], [1.0] * n, [0.0] * n))
    return out


def to_datums(batch: list[Seq], loss: str, sampler_logprobs: list[list[float]] | None = None):
    data = []
    for i, s in enumerate(batch):
        inputs = {
            "target_tokens": types.TensorData.from_list(s.targets, "int64"),
            "weights": types.TensorData.from_list(s.weights, "float32"),
        }
        if loss == "ppo":
            assert sampler_logprobs is not None
            inputs["advantages"] = types.TensorData.from_list(s.advantages, "float32")
            inputs["logprobs"] = types.TensorData.from_list(sampler_logprobs[i], "float32")
        data.append(types.Datum(model_input=types.ModelInput.from_ints(s.tokens),
                                loss_fn_inputs=inputs))
    return data


def real_tokens(batch: list[Seq]) -> int:
    return sum(len(s.tokens) for s in batch)


# ------------------------------------------------------------------------------------------------
# the hand-written baseline


class HandWritten:
    """peft LoRA model on a padded batch; `careful` computes logits only where a weight is set."""

    def __init__(self, model_dir, careful: bool, dtype: str = "float32") -> None:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        config = PeftLoraConfig(
            r=RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
            target_modules=target_modules(base, types.LoraConfig(rank=RANK)),
        )
        self.model = get_peft_model(base, config)
        self.model.train()
        self.careful = careful
        self.autocast = dtype == "bfloat16"
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=ADAM.learning_rate,
            betas=(ADAM.beta1, ADAM.beta2), eps=ADAM.eps, weight_decay=0.0,
        )

    @staticmethod
    def tensors(batch: list[Seq]) -> dict[str, torch.Tensor]:
        width = max(len(s.tokens) for s in batch)

        def padded(rows, dtype, fill=0):
            out = torch.full((len(batch), width), fill, dtype=dtype)
            for i, r in enumerate(rows):
                out[i, : len(r)] = torch.tensor(r, dtype=dtype)
            return out

        return {
            "input_ids": padded([s.tokens for s in batch], torch.long),
            "attention_mask": padded([[1] * len(s.tokens) for s in batch], torch.long),
            "targets": padded([s.targets for s in batch], torch.long),
            "weights": padded([s.weights for s in batch], torch.float32),
        }

    def forward_backward(self, t: dict[str, torch.Tensor]) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            if self.careful:
                causal_lm = self.model.get_base_model()
                hidden = causal_lm.model(
                    input_ids=t["input_ids"], attention_mask=t["attention_mask"]
                ).last_hidden_state
                trained = t["weights"] != 0
                logits = causal_lm.lm_head(hidden[trained])
                targets, weights = t["targets"][trained], t["weights"][trained]
            else:
                logits = self.model(
                    input_ids=t["input_ids"], attention_mask=t["attention_mask"]
                ).logits
                targets, weights = t["targets"], t["weights"]
        logp = torch.log_softmax(logits.float(), dim=-1)
        logp = logp.gather(-1, targets[..., None]).squeeze(-1)
        loss = -(weights * logp).sum()
        loss.backward()
        return float(loss.detach())

    def optim_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------------
# timing


@dataclass
class Variant:
    shape: str
    impl: str
    loss: str
    dtype: str
    tokens: int
    step: Callable[[], object]  # one forward_backward, returns when done
    after: Callable[[], object]  # untimed: optimizer step between repeats
    times: list[float]
    baseline: str | None = None  # name of the row this one is compared to

    @property
    def name(self) -> str:
        return f"{self.shape}/{self.impl}/{self.loss}/{self.dtype}"

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


def release_memory() -> None:
    """Hands freed heap back to the OS between steps.

    The steps allocate GBs of activations from three threads (main + one worker per client);
    glibc keeps freed arenas, and interleaving the variants in one process otherwise grows the
    resident set past what a 24 GB machine shared with other jobs has.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return (f"rss {int(fields['VmRSS'].split()[0]) / 2**20:.1f} GB, "
                f"peak {int(fields['VmHWM'].split()[0]) / 2**20:.1f} GB")
    return "rss ?"


def run(variants: list[Variant], repeats: int, log: Callable[[str], None]) -> None:
    for v in variants:  # warm-up: first-call allocations, lazy init, autocast caches
        t0 = time.perf_counter()
        v.step()
        v.after()
        release_memory()
        log(f"  warm-up {v.name}: {time.perf_counter() - t0:.1f}s ({peak_rss()})")
    for r in range(repeats):
        for v in variants:
            t0 = time.perf_counter()
            v.step()
            v.times.append(time.perf_counter() - t0)
            v.after()
            release_memory()
        log(f"  repeat {r + 1}/{repeats} ({peak_rss()}): "
            + ", ".join(f"{v.shape}/{v.impl.split()[0]}/{v.loss}/{v.dtype} {v.times[-1]:.1f}s"
                        for v in variants))


# ------------------------------------------------------------------------------------------------
# report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    flags = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            text = f.read()
        have = [x for x in ("avx512f", "avx512_bf16", "amx_bf16") if f" {x}" in text]
        flags = f" ({', '.join(have)})" if have else ""
    gpu = "CUDA GPU" if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}{flags}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__} with "
            f"{torch.get_num_threads()} intra-op threads")


def table(variants: list[Variant], padding: list[tuple[str, float, float]]) -> str:
    by_name = {v.name: v for v in variants}
    lines = [
        "| batch | implementation | loss | dtype | real tokens | median s | tokens/s "
        "| vs careful hand-written | best s | vs careful (best) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        tps = v.tokens / v.median
        ratio = best_ratio = "baseline"
        if v.baseline is not None:
            base = by_name[v.baseline]
            ratio = f"{base.median / v.median:.2f}x"
            best_ratio = f"{base.best / v.best:.2f}x"
        lines.append(f"| {v.shape} | {v.impl} | {v.loss} | {v.dtype} | {v.tokens} "
                     f"| {v.median:.2f} | {tps:,.0f} | {ratio} | {v.best:.2f} | {best_ratio} |")
    lines += ["", "| batch | mint_rl packed rows: padding | padded to the longest: padding |",
              "|---|---:|---:|"]
    for shape, packed, longest in padding:
        lines.append(f"| {shape} | {packed:.1%} | {longest:.1%} |")
    return "\n".join(lines)


def print_rich(variants: list[Variant], padding) -> bool:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    by_name = {v.name: v for v in variants}
    t = Table(title="forward_backward throughput (median)")
    for col in ("batch", "impl", "loss", "dtype", "tokens", "median s", "tok/s", "ratio",
                "best s", "ratio (best)"):
        t.add_column(col, justify="left" if col in ("batch", "impl", "loss", "dtype") else "right")
    for v in variants:
        tps = v.tokens / v.median
        ratio = best_ratio = "-"
        if v.baseline is not None:
            base = by_name[v.baseline]
            ratio = f"{base.median / v.median:.2f}x"
            best_ratio = f"{base.best / v.best:.2f}x"
        impl = v.impl.split(" (")[0]
        t.add_row(v.shape, impl, v.loss.replace("cross_entropy", "ce"), v.dtype, str(v.tokens),
                  f"{v.median:.2f}", f"{tps:,.0f}", ratio, f"{v.best:.2f}", best_ratio)
    p = Table(title="padding fraction")
    for col in ("batch", "mint_rl packed rows", "padded to longest"):
        p.add_column(col)
    for shape, packed, longest in padding:
        p.add_row(shape, f"{packed:.1%}", f"{longest:.1%}")
    console = Console()
    console.print(t)
    console.print(p)
    return True


# ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="also write the markdown tables to this file")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows")
    args = parser.parse_args()

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    torch.manual_seed(args.seed)
    log(machine())
    model_dir = resolve_model(DEFAULT_MODEL)
    fp32 = ServiceClient().create_lora_training_client(DEFAULT_MODEL, rank=RANK, seed=args.seed)
    clients = {"float32": fp32}
    if not args.no_bf16:
        settings = LearnerSettings(dtype="bfloat16")
        clients["bfloat16"] = ServiceClient(learner_settings=settings).create_lora_training_client(
            DEFAULT_MODEL, rank=RANK, seed=args.seed
        )
    naive = HandWritten(model_dir, careful=False)
    careful = {dtype: HandWritten(model_dir, careful=True, dtype=dtype) for dtype in clients}
    log("models loaded")

    vocab = fp32.engine.vocab_size
    rng = np.random.default_rng(args.seed)
    batches = {"rl": rl_batch(rng, vocab), "sft": sft_batch(rng, vocab)}
    # The sampler's logprobs for ppo: the current policy's own, so ratios start at 1.
    ce_rl = to_datums(batches["rl"], "cross_entropy")
    fwd = fp32.forward(ce_rl, "cross_entropy").result()
    sampler_lp = [o["logprobs"].to_numpy().tolist() for o in fwd.loss_fn_outputs]

    variants: list[Variant] = []
    for shape, batch in batches.items():
        n = real_tokens(batch)
        tensors = HandWritten.tensors(batch)
        baselines = {}
        for dtype, hand in careful.items():
            base = Variant(shape, "hand-written careful (logits where trained)",
                           "cross_entropy", dtype, n, lambda t=tensors, h=hand:
                               h.forward_backward(t), hand.optim_step, [])
            variants.append(base)
            baselines[dtype] = base.name
        variants.append(Variant(shape, "hand-written naive (all logits)", "cross_entropy",
                                "float32", n, lambda t=tensors: naive.forward_backward(t),
                                naive.optim_step, [], baseline=baselines["float32"]))
        losses = ["cross_entropy", "ppo"] if shape == "rl" else ["cross_entropy"]
        for loss in losses:
            lp = sampler_lp if loss == "ppo" else None
            data = to_datums(batch, loss, lp)
            config = PPO_CONFIG if loss == "ppo" else None
            for dtype, client in clients.items():
                variants.append(Variant(
                    shape, "mint_rl", loss, dtype, n,
                    lambda c=client, d=data, loss=loss, cfg=config:
                        c.forward_backward(d, loss, cfg).result(),
                    lambda c=client: c.optim_step(ADAM).result(),
                    [], baseline=baselines[dtype],
                ))

    log(f"timing {len(variants)} variants: 1 warm-up + {args.repeats} repeats each")
    run(variants, args.repeats, log)

    settings = fp32.engine.settings
    padding = []
    for shape, batch in batches.items():
        seqs = [s.tokens for s in batch]
        packed = pack(seqs, row_capacity=settings.row_capacity,
                      share_prefixes=settings.share_prefixes)
        longest = 1 - real_tokens(batch) / (len(batch) * max(len(s) for s in seqs))
        padding.append((shape, packed.padding_fraction, longest))

    md = table(variants, padding)
    if not print_rich(variants, padding):
        print(md)
    log("done")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Machine: {machine()}\n\n{md}\n")


if __name__ == "__main__":
    main()

"""The learner's tokens/s on a GPU at Qwen3-0.6B's shape, built from its config alone.

For a machine with a CUDA GPU, torch, transformers and peft, and nothing else: no download, no
vLLM, no model files to copy. The script builds the published Qwen3-0.6B architecture (its real
151,936-token vocabulary) with random weights in a temporary folder, with a small stand-in
tokenizer (the learner reads only its pad id), and times mint_rl's learner: `forward_backward`
(ppo, weights on the completion) + `optim_step`, LoRA rank 16 on every linear layer, bf16
autocast, on RL batches of 16 x 512 and 64 x 1024 tokens (groups of 4 samples sharing a
128-token prompt). prime-rl publishes 13.3k tokens/s per H100 for Qwen3-0.6B with LoRA r16.

    python bench/gpu_learner.py [--device cuda] [--shape qwen3-0.6b] \
        [--batch 4x4x512 --batch 16x4x1024] [--steps 3] [--out results.json]

On a CPU with a tiny shape (what the test suite runs):
    python bench/gpu_learner.py --device cpu --shape tiny --batch 1x2x32 --steps 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run from a checkout: the repository root on the path, nothing installed but the dependencies.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = 128
PRIME_RL_H100_TOKENS_PER_S = 13_300  # Qwen3-0.6B, LoRA r16 (prime-rl's published figure)


def stand_in_tokenizer(out: Path) -> None:
    """A byte-level tokenizer with a pad token: the learner reads nothing else from it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.add_special_tokens(["<|endoftext|>"])
    PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>",
                            eos_token="<|endoftext|>").save_pretrained(out)


def build_model(shape: str, out: Path) -> Path:
    """An HF folder of `shape` with random weights and the stand-in tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if shape == "tiny":
        config: Any = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=4096)
    else:
        from mint_rl.model_shapes import shape_config

        config = shape_config(shape, pad_token_id=0)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    stand_in_tokenizer(out)
    return out


def rl_batch(groups: int, samples: int, tokens: int, vocab: int) -> list[Any]:
    import torch

    from mint_rl import types

    g = torch.Generator().manual_seed(0)
    prompt = min(PROMPT, tokens // 2)
    data = []
    for _ in range(groups):
        shared = torch.randint(100, vocab, (prompt,), generator=g).tolist()
        for s in range(samples):
            full = shared + torch.randint(100, vocab, (tokens + 1 - prompt,), generator=g).tolist()
            weights = [0.0] * (prompt - 1) + [1.0] * (tokens + 1 - prompt)
            sign = 1.0 if s % 2 else -1.0
            data.append(types.Datum(
                model_input=types.ModelInput.from_ints(full[:-1]),
                loss_fn_inputs={"target_tokens": full[1:], "weights": weights,
                                "advantages": [sign * w for w in weights],
                                "logprobs": [-12.0] * tokens}))
    return data


def measure(model_dir: Path, device: str, batch: str, steps: int) -> dict[str, Any]:
    import torch

    from mint_rl import types
    from mint_rl.learner.engine import LearnerEngine, LearnerSettings

    settings = LearnerSettings(device=device, dtype="bfloat16")
    engine = LearnerEngine(model_dir, types.LoraConfig(rank=16, seed=0), settings)
    groups, samples, tokens = (int(x) for x in batch.split("x"))
    data = rl_batch(groups, samples, tokens, engine.vocab_size)
    adam = types.AdamParams(learning_rate=1e-5)
    cuda = engine.device.type == "cuda"

    def step() -> tuple[float, dict[str, float]]:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, prepared = engine.prepare(data, "ppo")
        out = engine.forward_backward(prepared, loss, loss.config(None), backward=True)
        engine.optim_step(adam)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out.metrics

    step()  # warm-up: kernels, allocator, autocast caches
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, metrics = [], {}
    for _ in range(steps):
        seconds, metrics = step()
        times.append(seconds)
    n = groups * samples * tokens
    best = min(times)
    return {"batch": batch, "tokens": n, "seconds": times, "tokens_per_s": n / best,
            "peak_gpu_memory": torch.cuda.max_memory_allocated() if cuda else None,
            "plan": {k: v for k, v in metrics.items() if k.startswith("memory/")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="qwen3-0.6b", help="a mint_rl.model_shapes name or tiny")
    parser.add_argument("--batch", action="append", default=None,
                        help="GROUPSxSAMPLESxTOKENS (default 4x4x512 and 16x4x1024)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-learner-") as tmp:
        model_dir = build_model(args.shape, Path(tmp) / "model")
        for batch in args.batch or ["4x4x512", "16x4x1024"]:
            row = measure(model_dir, args.device, batch, args.steps)
            rows.append(row)
            print(f"{args.shape} {batch}: {row['tokens_per_s']:,.0f} tokens/s "
                  f"(best of {args.steps}; prime-rl publishes {PRIME_RL_H100_TOKENS_PER_S:,} "
                  f"per H100)", flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"shape": args.shape, "device": device, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows,
              "reference": {"prime_rl_h100_tokens_per_s": PRIME_RL_H100_TOKENS_PER_S}}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

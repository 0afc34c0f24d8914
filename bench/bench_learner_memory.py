"""The learner at real shapes: one RL step's time and peak memory, through the public API.

Each batch runs in a fresh process, so its peak RSS (VmHWM) is that batch's alone: the process
loads the model (a folder, e.g. `mint-rl prepare-model --shape qwen3-0.6b --random`), builds an RL
batch of GROUPS x SAMPLES datums that share a prompt within a group, and times `forward_backward`
(ppo, weights on the completion) + `optim_step`, LoRA rank 16 on every linear layer, fp32.

    .venv/bin/python bench/bench_learner_memory.py --model ~/.mint_rl/models/random-qwen3-0.6b \
        --batch 4x4x512 --batch 1x4x512 [--prompt 64] [--steps 2] [--setting recompute=auto] \
        [--name learner_memory_qwen3-0.6b]

A batch is GROUPSxSAMPLESxTOKENS (TOKENS per datum, PROMPT of them shared). Settings are
LearnerSettings fields (key=value). Results: bench/results/NAME.json (per-step times, tokens/s,
peak RSS, the learner's memory plan from the step's metrics).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULT = "RESULT "


def parse_batch(text: str) -> tuple[int, int, int]:
    groups, samples, tokens = (int(x) for x in text.split("x"))
    return groups, samples, tokens


def parse_setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def rl_batch(groups: int, samples: int, tokens: int, prompt: int, vocab: int) -> list[Any]:
    """Datums of `tokens` model-input tokens; `prompt` shared per group; completion trained."""
    import numpy as np

    from mint_rl import types

    rng = np.random.default_rng(0)
    data = []
    for _ in range(groups):
        shared = rng.integers(100, vocab - 100, prompt).tolist()
        advantages = rng.normal(size=samples)
        for a in advantages - advantages.mean():
            full = shared + rng.integers(100, vocab - 100, tokens + 1 - prompt).tolist()
            weights = [0.0] * (prompt - 1) + [1.0] * (tokens + 1 - prompt)
            inputs = {
                "target_tokens": types.TensorData.from_list(full[1:], "int64"),
                "weights": types.TensorData.from_list(weights, "float32"),
                "advantages": types.TensorData.from_list([float(a) * w for w in weights],
                                                         "float32"),
                # About a random model's own logprob of a token (-log(vocab)).
                "logprobs": types.TensorData.from_list([-10.8] * tokens, "float32"),
            }
            data.append(types.Datum(model_input=types.ModelInput.from_ints(full[:-1]),
                                    loss_fn_inputs=inputs))
    return data


def child(args: argparse.Namespace) -> dict[str, Any]:
    from mint_rl import ServiceClient, types
    from mint_rl.learner.engine import LearnerSettings
    from mint_rl.process_memory import current_rss, peak_rss

    settings = LearnerSettings(**dict(parse_setting(s) for s in args.setting))
    service = ServiceClient(learner_settings=settings)
    t0 = time.perf_counter()
    client = service.create_lora_training_client(str(args.model), rank=16, seed=0)
    load_s = time.perf_counter() - t0
    groups, samples, tokens = parse_batch(args.batch[0])
    data = rl_batch(groups, samples, tokens, args.prompt, client.engine.vocab_size)
    after_load = current_rss()
    steps = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        out = client.forward_backward(data, "ppo").result()
        client.optim_step(types.AdamParams(learning_rate=1e-5)).result()
        seconds = time.perf_counter() - t0
        steps.append({"seconds": seconds, "tokens_per_s": groups * samples * tokens / seconds,
                      "metrics": out.metrics, "rss_after": current_rss()})
    return {"batch": args.batch[0], "prompt": args.prompt, "datums": groups * samples,
            "tokens": groups * samples * tokens, "settings": dict(parse_setting(s)
                                                                 for s in args.setting),
            "load_s": load_s, "rss_after_load": after_load,
            "peak_rss": peak_rss(), "steps": steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch", action="append", required=True, help="GROUPSxSAMPLESxTOKENS")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--name", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT + json.dumps(child(args)), flush=True)
        return 0
    rows = []
    for batch in args.batch:
        cmd = [sys.executable, __file__, "--child", "--model", str(args.model), "--batch", batch,
               "--prompt", str(args.prompt), "--steps", str(args.steps),
               *(x for s in args.setting for x in ("--setting", s))]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT)]
        if done.returncode != 0 or not lines:
            row = {"batch": batch, "error": f"exit {done.returncode}",
                   "stderr": done.stderr[-2000:]}
        else:
            row = json.loads(lines[-1][len(RESULT):])
        rows.append(row)
        peak = row.get("peak_rss")
        times = ", ".join(f"{s['seconds']:.1f} s" for s in row.get("steps", []))
        print(f"{batch}: {row.get('error') or times}; peak RSS "
              f"{peak / 2**30 if peak else float('nan'):.2f} GiB", flush=True)
    if args.name:
        from results import write_result

        path = write_result(args.name, {"model": str(args.model), "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

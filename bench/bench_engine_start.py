"""Eager vs compiled vLLM on CPU: engine start-up against decode speed, for short RL runs.

Each mode runs in a fresh process (nothing cached in memory), through mint_rl's own sampler
(`SamplingClient`, default model, fp32, every core): seconds to a ready engine, decode speed
on 32 sequences x 32 tokens, and one arithmetic-recipe batch (8 prompts x 8 samples x <=6
tokens). The break-even line is how many sampled tokens compiling needs to pay for itself.

    python bench/bench_engine_start.py [--markdown docs/startup.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import asyncio, json, sys, time
t0 = time.perf_counter()
from mint_rl.models import DEFAULT_MODEL
from mint_rl.sampler import EngineConfig, SamplingClient, close_all
from mint_rl.types import ModelInput, SamplingParams

async def batch(client, prompts, n, params):
    return await asyncio.gather(*[client.sample_async(ModelInput.from_ints(p), n, params)
                                  for p in prompts])

if __name__ == "__main__":
    eager = sys.argv[1] == "eager"
    start = time.perf_counter()
    client = SamplingClient(DEFAULT_MODEL, engine_config=EngineConfig(enforce_eager=eager))
    ready = time.perf_counter() - start
    tok = client.get_tokenizer()
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {a} + {b}? "
                                         "Reply with just the number."}],
                                       add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for a, b in zip(range(8), range(3, 11))]
    long = SamplingParams(max_tokens=32, temperature=1.0, stop_token_ids=[])
    short = SamplingParams(max_tokens=6, temperature=1.0)
    asyncio.run(batch(client, prompts[:2], 2, long))  # first requests pay one-off costs
    decode, arith = [], []
    for _ in range(3):
        t = time.perf_counter(); asyncio.run(batch(client, prompts, 4, long))
        decode.append(32 * 32 / (time.perf_counter() - t))
        t = time.perf_counter(); asyncio.run(batch(client, prompts, 8, short))
        arith.append(time.perf_counter() - t)
    close_all()
    print("RESULT " + json.dumps({"engine_ready_s": ready, "decode_tok_s": max(decode),
                                  "arith_batch_s": min(arith)}))
"""


def run_mode(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, default=None, help="append the table here")
    args = parser.parse_args()
    eager, compiled = run_mode("eager"), run_mode("compiled")
    extra_start = compiled["engine_ready_s"] - eager["engine_ready_s"]
    per_token_saving = 1 / eager["decode_tok_s"] - 1 / compiled["decode_tok_s"]
    break_even = extra_start / per_token_saving if per_token_saving > 0 else float("inf")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    table = "\n".join([
        "| vLLM mode | engine ready (s) | decode, 32 x 32 tokens (tok/s) | arithmetic batch (s) |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {r['engine_ready_s']:.1f} | {r['decode_tok_s']:.0f} | "
          f"{r['arith_batch_s']:.2f} |" for name, r in (("eager", eager),
                                                         ("compiled", compiled))),
        "",
        f"Compiling costs {extra_start:.0f} s more per start and pays for itself after "
        f"~{break_even:,.0f} sampled tokens.",
    ])
    print(f"engine modes, {when}\n{table}")
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write(f"\nEngine modes ({when}):\n\n{table}\n")


if __name__ == "__main__":
    main()

"""vLLM at a real shape: 512-token completions with the KV cache mint_rl sizes, against the old
fixed 1 GiB cache, counting preemptions.

vLLM admits a request when its prompt fits the KV cache, then grows it block by block; when the
cache runs out it evicts (preempts) running requests and recomputes them later. With long
completions and a cache too small for the batch at full length, that becomes a storm. mint_rl
sizes the cache for its workload (`EngineConfig.sequences` x `sequence_tokens`, within a share of
memory) and, where the share binds, caps vLLM's `max_num_seqs` to what fits
(mint_rl/sampler/config.py: kv_cache_size).

Each setting runs in a fresh process: raw vLLM with mint_rl's engine arguments
(`engine_args`, so the sizing under test is the product's), PROMPTS prompts x N samples of exactly
TOKENS tokens (`min_tokens`: a random model rarely stops on its own anyway), stats on.

    .venv/bin/python bench/bench_sampler_memory.py --model ~/.mint_rl/models/random-qwen3-0.6b \
        [--prompts 8 --n 4 --tokens 512] [--name sampler_memory_qwen3-0.6b]
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
GiB = 1 << 30


def child(args: argparse.Namespace) -> dict[str, Any]:
    import psutil
    from vllm import LLM, SamplingParams

    from mint_rl.process_memory import engine_peak_rss, peak_rss
    from mint_rl.sampler.config import EngineConfig
    from mint_rl.sampler.vllm_engine import engine_args

    prompt_tokens = 64
    config = EngineConfig(device="cpu", sequences=args.prompts * args.n,
                          sequence_tokens=prompt_tokens + args.tokens)
    if args.setting == "fixed-1GiB":
        config = EngineConfig(device="cpu", kv_cache_bytes=GiB)
    config = config.resolve()
    kwargs = engine_args(config, args.model)
    kwargs["disable_log_stats"] = False  # for the preemption counter
    available = psutil.virtual_memory().available
    t0 = time.perf_counter()
    llm = LLM(**kwargs)
    start_s = time.perf_counter() - t0
    prompts = [{"prompt_token_ids": [100 + 7 * i + j for j in range(prompt_tokens)]}
               for i in range(args.prompts)]
    params = SamplingParams(n=args.n, max_tokens=args.tokens, min_tokens=args.tokens,
                            temperature=1.0, seed=0)
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    metrics = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    return {"setting": args.setting, "kv_cache_bytes": kwargs["kv_cache_memory_bytes"],
            "max_num_seqs": kwargs.get("max_num_seqs"), "available_at_start": available,
            "engine_start_s": start_s, "seconds": seconds, "tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "preemptions": metrics.get("vllm:num_preemptions"),
            "engine_peak_rss": engine_peak_rss() or None, "process_peak_rss": peak_rss()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--setting", action="append", default=None,
                        help="mint_rl (sized for the batch) and/or fixed-1GiB (the old default)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.setting = args.setting[0]
        print(RESULT + json.dumps(child(args)), flush=True)
        return 0
    rows = []
    for setting in args.setting or ["mint_rl", "fixed-1GiB"]:
        cmd = [sys.executable, __file__, "--child", "--model", str(args.model), "--prompts",
               str(args.prompts), "--n", str(args.n), "--tokens", str(args.tokens),
               "--setting", setting]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT)]
        row = (json.loads(lines[-1][len(RESULT):]) if done.returncode == 0 and lines
               else {"setting": setting, "error": f"exit {done.returncode}",
                     "stderr": done.stderr[-3000:]})
        rows.append(row)
        if "error" in row:
            print(f"{setting}: {row['error']}\n{row['stderr'][-1500:]}", flush=True)
            continue
        print(f"{setting}: KV cache {row['kv_cache_bytes'] / GiB:.2f} GiB, max_num_seqs "
              f"{row['max_num_seqs']}; {row['tokens']} tokens in {row['seconds']:.1f} s "
              f"({row['tokens_per_s']:.0f} tokens/s), {row['preemptions']} preemptions; engine "
              f"peak RSS {(row['engine_peak_rss'] or 0) / GiB:.2f} GiB", flush=True)
    if args.name:
        from results import write_result

        path = write_result(args.name, {"model": str(args.model), "prompts": args.prompts,
                                        "n": args.n, "tokens": args.tokens, "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

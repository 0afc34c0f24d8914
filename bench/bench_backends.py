"""The Ray backend against the local one, and one sampler against two, on the same run.

`mint-rl run arithmetic` (its defaults: 8 prompts x 8 samples, LoRA r16, the default model) for
a few steps without evaluation or checkpoints, once per setting, each in its own process, in one
sitting: local and Ray with one sampler, then with two (`--samplers 2`). The same CPU placement
in every setting (`--cpus`, mint_rl/placement.py); on Ray every sampler and the learner run in
Ray actor processes of their own, on a local Ray cluster the run starts. Reported per setting:
the median step time after the first `--skip` steps, the time until step 0 was done (engine and
learner start-up included; Ray's own start too), and the ratio to the local run with the same
number of samplers. With `--rounds 2` the settings run twice, interleaved, and the medians pool.

    .venv/bin/python bench/bench_backends.py [--steps 8] [--skip 2] [--k 1] [--rounds 1]
        [--markdown docs/ray.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = (("local", 1), ("ray", 1), ("local", 2), ("ray", 2))


def run_once(backend: str, samplers: int, steps: int, k: int, cpus: str) -> dict[str, object]:
    """One run in a child process; its step times and start-up, from its run folder."""
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "mint_rl.cli", "run", "arithmetic", "--log-dir",
                   str(log_dir), "--steps", str(steps), "--eval-every", "0", "--save-every",
                   "0", "--max-steps-off-policy", str(k), "--cpus", cpus, "--backend", backend,
                   "--samplers", str(samplers)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "MINT_RL_RUNS": tmp})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{backend} x{samplers} failed:\n{done.stdout[-3000:]}")
        rows = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]
        startup = json.loads((log_dir / "startup.json").read_text())
    return {"steps": [r["time/step"] for r in rows], "step0_done": startup["step 0 done"],
            "wall": wall, "staleness_max": max(r["staleness/max"] for r in rows),
            "kl_max": max(r.get("kl/sampler_learner", 0.0) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out (warm-up)")
    parser.add_argument("--k", type=int, default=1, help="max steps off-policy")
    parser.add_argument("--cpus", default="auto")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="write the table into this file")
    args = parser.parse_args()

    results: dict[tuple[str, int], list[dict[str, object]]] = {s: [] for s in SETTINGS}
    for round_no in range(args.rounds):
        for backend, samplers in SETTINGS:
            out = run_once(backend, samplers, args.steps, args.k, args.cpus)
            results[(backend, samplers)].append(out)
            print(f"round {round_no} {backend} x{samplers}: steps "
                  + " ".join(f"{s:.2f}" for s in out["steps"])  # type: ignore[union-attr]
                  + f"; step 0 done at {out['step0_done']:.1f} s", flush=True)
    table = render(results, args)
    print(table)
    if args.markdown:
        from doc_markers import replace_between_markers

        replace_between_markers(args.markdown, table)


def render(results: dict[tuple[str, int], list[dict[str, object]]],
           args: argparse.Namespace) -> str:
    medians = {s: statistics.median(t for r in runs for t in r["steps"][args.skip:])  # type: ignore
               for s, runs in results.items()}
    lines = [f"`mint-rl run arithmetic` defaults, K={args.k}, --cpus {args.cpus}, steps "
             f"{args.skip}..{args.steps - 1} of {args.steps}, {args.rounds} round(s); "
             f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
             f", load average {os.getloadavg()[0]:.1f} at the end",
             "",
             "| backend | samplers | median s/step | ratio to local | step 0 done (s) | "
             "staleness max | kl/sampler_learner max |",
             "|---|---|---|---|---|---|---|"]
    for backend, samplers in SETTINGS:
        runs = results[(backend, samplers)]
        ratio = medians[(backend, samplers)] / medians[("local", samplers)]
        lines.append(
            f"| {backend} | {samplers} | {medians[(backend, samplers)]:.2f} | {ratio:.2f} | "
            f"{statistics.median(r['step0_done'] for r in runs):.1f} | "  # type: ignore
            f"{max(r['staleness_max'] for r in runs)} | "  # type: ignore
            f"{max(r['kl_max'] for r in runs):.4f} |")  # type: ignore
    return "\n".join(lines)


if __name__ == "__main__":
    main()

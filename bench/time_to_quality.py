"""Does asynchrony pay on the arithmetic recipe? Wall-clock time to a held-out accuracy, K = 0
against K = 1, several seeds each.

Each (K, seed) is one `mint-rl run arithmetic --seed S --max-steps-off-policy K` in its own
process, one after the other (they would share the cores otherwise), at the recipe's defaults
except for how often it evaluates. `mint-rl run` places the work itself: at K = 0 sampler and
learner take turns on every core, at K >= 1 each gets its half (mint_rl/placement.py).

The clock is the run's own (`time/elapsed`, from when training starts; the start-up, the same
for both, is left out). Policy version s is evaluated at the start of step s (30 held-out
problems x 4 samples, T = 1), so "reached" is the moment that evaluation ended:
`time/elapsed - time/step + time/eval` of row s. Evaluating costs the same at both K.

    .venv/bin/python bench/time_to_quality.py --out /tmp/ttq [--ks 0,1] [--seeds 0,1,2]
        [--steps 20] [--eval-every 2] [--target 0.9] [--name time_to_quality_arithmetic]
        [--run-args "--sampler-dtype bfloat16 --learner-dtype bfloat16"]

Writes bench/results/NAME.json (every run's evaluations with their times, and each step's phase
times); bench/doc_tables.py tables it in docs/off_policy.md. A folder that already holds
a finished run is read, not run again.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from off_policy_seeds import run_arithmetic
from results import write_result

from mint_rl.run.metrics import read_metrics

PHASES = ("time/step", "time/sample_wait", "time/train", "time/save_weights",
          "time/load_weights", "time/eval")


def read_run(folder: Path, steps: int) -> dict[str, Any] | None:
    """A finished run's evaluations (step, accuracy, seconds when known) and step phases; None
    while its final evaluation is missing."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return None
    rows = read_metrics(path)
    evals = []
    for r in rows:
        if "eval/accuracy" not in r:
            continue
        # The final evaluation (step = steps) has its own row, after the last step.
        seconds = (r["time/elapsed"] - r["time/step"] + r["time/eval"] if "time/step" in r
                   else r["time/elapsed"])
        evals.append({"step": r["step"], "accuracy": r["eval/accuracy"], "seconds": seconds})
    if not evals or evals[-1]["step"] != steps:
        return None
    trained = [r for r in rows if "time/train" in r]
    per_step = [{"step": r["step"], **{k: r[k] for k in PHASES if k in r}} for r in trained]
    return {"evals": evals, "steps": per_step,
            "staleness_max": max((r.get("staleness/max", 0) for r in trained), default=0)}


def reached(run: dict[str, Any], target: float) -> dict[str, float] | None:
    return next((e for e in run["evals"] if e["accuracy"] >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder of the runs")
    ap.add_argument("--ks", default="0,1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--name", default="time_to_quality_arithmetic")
    ap.add_argument("--run-args", default="",
                    help="more `mint-rl run` options for every run, e.g. "
                         "'--sampler-dtype bfloat16 --learner-dtype bfloat16'")
    args = ap.parse_args()
    extra = args.run_args.split()
    runs = []
    for k in (int(k) for k in args.ks.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            folder = args.out / f"ppo_k{k}_s{seed}"
            run = read_run(folder, args.steps)
            if run is None:
                print(f"running K={k} seed={seed} -> {folder}", flush=True)
                run_arithmetic(folder, "ppo", k, seed, args.steps, args.eval_every, extra)
                run = read_run(folder, args.steps)
                if run is None:
                    raise SystemExit(f"{folder}: the run ended without its final evaluation")
            hit = reached(run, args.target)
            runs.append({"k": k, "seed": seed, **run, "reached": hit})
            step_s = statistics.median(x["time/step"] for x in run["steps"])
            print(f"K={k} seed={seed}: {args.target} "
                  + (f"at step {hit['step']}, {hit['seconds']:.1f} s" if hit else "not reached")
                  + f"; median step {step_s:.2f} s", flush=True)
    path = write_result(args.name, {
        "what": f"wall-clock time to {args.target} held-out accuracy, arithmetic recipe "
                f"(ppo, defaults{' but ' + args.run_args if extra else ''}), K = {args.ks}, "
                f"seeds {args.seeds}",
        "config": {"steps": args.steps, "eval_every": args.eval_every, "target": args.target,
                   "command": "mint-rl run arithmetic --seed S --max-steps-off-policy K "
                              f"--steps {args.steps} --eval-every {args.eval_every}"
                              + (f" {args.run_args}" if extra else "")},
        "runs": runs,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

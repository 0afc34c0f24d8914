"""Learning at K = 0, 1, 2 steps off-policy on the arithmetic recipe, several seeds each:
held-out accuracy, kl/sampler_learner and staleness per run, as a table and a plot
(docs/off_policy.md).

    .venv/bin/python bench/off_policy_seeds.py --out /tmp/off-policy [--ks 0,1,2]
        [--seeds 0,1,2,3,4] [--losses ppo,stable_reinforce | --rows ppo:1,cispo:2]
        [--steps 30] [--eval-every 10] [--markdown docs/off_policy.md] [--plot docs/off_policy.png]

Each (loss, K, seed) is one `mint-rl run arithmetic --loss L --seed S --max-steps-off-policy K`
in its own process, one after the other (they would share the cores otherwise), into
OUT/{L}_k{K}_s{S}, every other setting at the recipe's defaults. A folder that already holds a
finished run (its final evaluation is in metrics.jsonl) is read, not run again, so an
interrupted sweep resumes where it stopped. A learning result, not a speed benchmark: the figures
do not depend on the machine's load, only on the seeds (one evaluation is 120 answers, good to
about +-0.04).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mint_rl.run.metrics import read_metrics


@dataclass(frozen=True)
class RunResult:
    loss: str
    k: int
    seed: int
    accuracy: dict[int, float]
    """step -> held-out accuracy."""
    kl: list[float]
    """kl/sampler_learner per trained step (nats per token)."""
    clip_frac: list[float]
    """clip/frac per trained step: the share of trained tokens whose ratio the loss clipped."""
    staleness_max: int

    @property
    def final(self) -> float:
        return self.accuracy[max(self.accuracy)]


def run_dir(out: Path, loss: str, k: int, seed: int) -> Path:
    return out / f"{loss}_k{k}_s{seed}"


def read_run(folder: Path, loss: str, k: int, seed: int, steps: int) -> RunResult | None:
    """The run in `folder`, or None when it has not finished `steps` steps."""
    metrics = folder / "metrics.jsonl"
    if not metrics.exists():
        return None
    rows = read_metrics(metrics)
    accuracy = {r["step"]: r["eval/accuracy"] for r in rows if "eval/accuracy" in r}
    if steps not in accuracy:
        return None
    kl = [r["kl/sampler_learner"] for r in rows if r.get("kl/sampler_learner") is not None]
    clip_frac = [r["clip/frac"] for r in rows if r.get("clip/frac") is not None]
    staleness = [r["staleness/max"] for r in rows if r.get("staleness/max") is not None]
    return RunResult(loss, k, seed, accuracy, kl, clip_frac, int(max(staleness, default=0)))


def run_arithmetic(folder: Path, loss: str, k: int, seed: int, steps: int,
                   eval_every: int, extra: Sequence[str] = ()) -> None:
    mint_rl = Path(sys.executable).with_name("mint-rl")
    cmd = [str(mint_rl), "run", "arithmetic", "--loss", loss, "--seed", str(seed),
           "--steps", str(steps), "--eval-every", str(eval_every),
           "--max-steps-off-policy", str(k), "--log-dir", str(folder), *extra]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)


def table(results: list[RunResult], rows: list[tuple[str, int]], seeds: list[int]) -> list[str]:
    """One row per (loss, K): each seed's curve (final in bold), the mean and median final
    accuracy, and kl/sampler_learner's and clip/frac's mean and max over every step of every
    seed."""
    by_row = {row: {r.seed: r for r in results if (r.loss, r.k) == row} for row in rows}
    steps = sorted({s for r in results for s in r.accuracy})
    header = ["loss", "K"] + [f"seed {s}" for s in seeds] + [
        "mean final", "median final", "kl/sampler_learner mean / max", "clip/frac mean / max",
        "staleness max"]
    lines = ["| " + " | ".join(header) + " |",
             "|---|---|" + "---|" * len(seeds) + "---:|---:|---:|---:|---:|"]
    for loss, k in rows:
        runs = [by_row[loss, k][s] for s in seeds]
        cells = [" → ".join(f"{r.accuracy[s]:.2f}" for s in steps[:-1])
                 + f" → **{r.final:.2f}**" for r in runs]
        finals = [r.final for r in runs]
        kl = [x for r in runs for x in r.kl]
        kl_cell = f"{statistics.fmean(kl):.3f} / {max(kl):.2f}"
        clip = [x for r in runs for x in r.clip_frac]
        clip_cell = f"{statistics.fmean(clip):.3f} / {max(clip):.2f}"
        lines.append(f"| {loss} | {k} | " + " | ".join(cells)
                     + f" | **{statistics.fmean(finals):.2f}** "
                     f"| {statistics.median(finals):.2f} | {kl_cell} | {clip_cell} "
                     f"| {max(r.staleness_max for r in runs)} |")
    return lines


def plot(results: list[RunResult], rows: list[tuple[str, int]], out: Path) -> None:
    """Held-out accuracy against step, one panel per K and a colour per loss: each seed thin,
    the mean over seeds thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({k for _, k in rows})
    losses = list(dict.fromkeys(loss for loss, _ in rows))
    colours = {loss: f"C{i}" for i, loss in enumerate(losses)}  # matplotlib's colour cycle
    fig, axes = plt.subplots(1, len(ks), figsize=(4.0 * len(ks), 3.8), sharey=True,
                             squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        for loss in losses:
            runs = [r for r in results if (r.loss, r.k) == (loss, k)]
            if not runs:
                continue
            steps = sorted(runs[0].accuracy)
            for r in runs:
                ax.plot(steps, [r.accuracy[s] for s in steps], color=colours[loss], alpha=0.3,
                        lw=1)
            mean = [statistics.fmean(r.accuracy[s] for r in runs) for s in steps]
            ax.plot(steps, mean, color=colours[loss], lw=2.5, marker="o",
                    label=f"{loss} (mean of {len(runs)})")
        ax.set_title(f"K = {k}")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_ylabel("held-out accuracy")
    fig.suptitle("arithmetic recipe at its defaults, K steps off-policy")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description="Learning at K = 0, 1, 2 on the arithmetic recipe.")
    ap.add_argument("--out", type=Path, required=True, help="folder of the runs")
    ap.add_argument("--ks", default="0,1,2")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--losses", default="ppo",
                    help="comma-separated policy-gradient losses, each run at every K")
    ap.add_argument("--rows", help="instead of --losses x --ks: LOSS:K,LOSS:K,... "
                                   "(e.g. a loss whose K = 0 gradient equals another's)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--markdown", type=Path, help="a doc with off-policy-runs markers to update")
    ap.add_argument("--plot", type=Path, help="the PNG of the accuracy curves")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        rows = ([(loss, int(k)) for loss, k in (row.split(":") for row in args.rows.split(","))]
                if args.rows else [(loss, k) for loss in args.losses.split(",") for k in ks])
    except ValueError:
        ap.error(f"--rows: expected LOSS:K,LOSS:K,... (K an integer), got {args.rows!r}")
    selection = (f"--rows {args.rows}" if args.rows
                 else f"--losses {args.losses} --ks {args.ks}")

    results = []
    for loss, k in rows:
        for seed in seeds:
            folder = run_dir(args.out, loss, k, seed)
            result = read_run(folder, loss, k, seed, args.steps)
            if result is None:
                print(f"running {loss} K={k} seed={seed} -> {folder}", flush=True)
                run_arithmetic(folder, loss, k, seed, args.steps, args.eval_every)
                result = read_run(folder, loss, k, seed, args.steps)
                if result is None:
                    raise SystemExit(f"{folder}: the run ended without its final evaluation")
            results.append(result)

    newest = max((run_dir(args.out, r.loss, r.k, r.seed) / "metrics.jsonl").stat().st_mtime
                 for r in results)
    lines = [f"Runs of {datetime.fromtimestamp(newest, UTC):%Y-%m-%d}, tabled by "
             f"`python bench/off_policy_seeds.py "
             f"{selection} --seeds {args.seeds}`: "
             f"`mint-rl run arithmetic`, {args.steps} steps, held-out accuracy every "
             f"{args.eval_every} steps (each cell: step "
             f"{' → '.join(str(s) for s in sorted(results[0].accuracy))}).", "",
             *table(results, rows, seeds)]
    print("\n".join(lines))
    if args.markdown:
        from doc_markers import replace_between_markers

        replace_between_markers(args.markdown, "\n".join(lines), name="off-policy-runs")
    if args.plot:
        plot(results, rows, args.plot)


if __name__ == "__main__":
    main()

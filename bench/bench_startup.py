"""Start-up benchmark: from `mint-rl run arithmetic` to the first RL step, phase by phase.

Runs the real command in a subprocess (one training step, default model) and times it from
outside: when step 0 starts and ends, and the phases the run records in `startup.json` (time
since the command started). `--cold` first drops the OS page cache (root only) and points vLLM
and torch at empty cache folders, as on the first run after set-up.

    python bench/bench_startup.py [--cold] [--runs 1] [--markdown docs/startup.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def one_run(cold: bool, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mint-startup-") as tmp:
        env = dict(os.environ)
        if cold:
            env["VLLM_CACHE_ROOT"] = str(Path(tmp) / "vllm-cache")
            env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor-cache")
            if not drop_page_cache():
                print("(could not drop the page cache: not root)", file=sys.stderr)
        log_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "mint_rl.cli", "run", "arithmetic", "--steps", "1",
               "--log-dir", str(log_dir), *extra]
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        metrics = log_dir / "metrics.jsonl"
        step_done = None
        while proc.poll() is None:
            if step_done is None and metrics.exists():
                rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
                if any("time/step" in r for r in rows):
                    step_done = time.time() - start
            time.sleep(0.05)
        total = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr.read()[-4000:]}")
        rows = [json.loads(x) for x in metrics.read_text().splitlines()]
        step0 = next(r for r in rows if "time/step" in r)
        out = {"step 0 done": step_done or total, "command exits": total}
        # Step 0 begins with the baseline evaluation (when on), then samples and trains.
        out["step 0 starts"] = out["step 0 done"] - step0["time/step"]
        out["step 0 training starts"] = out["step 0 done"] - step0["time/train"] - step0.get(
            "time/save_weights", 0.0)
        startup = log_dir / "startup.json"
        if startup.exists():
            out.update(json.loads(startup.read_text()))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="drop caches first (first run)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--markdown", type=Path, default=None, help="append a table here")
    parser.add_argument("extra", nargs="*", help="more options for the recipe")
    args = parser.parse_args()
    results = [one_run(args.cold, args.extra) for _ in range(args.runs)]
    keys = sorted({k for r in results for k in r}, key=lambda k: results[0].get(k, 1e9))
    runs = " | ".join(f"run {i + 1}" for i in range(len(results)))
    lines = [f"| phase (seconds since the command) | {runs} |",
             "|---|" + "---:|" * len(results)]
    for k in keys:
        cells = " | ".join(f"{r[k]:.1f}" if k in r else "" for r in results)
        lines.append(f"| {k} | {cells} |")
    table = "\n".join(lines)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    kind = "cold" if args.cold else "warm"
    print(f"{kind} start, {when}")
    print(table)
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write(f"\n{kind.capitalize()} start ({when}):\n\n{table}\n")


if __name__ == "__main__":
    main()

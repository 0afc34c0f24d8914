"""Writes docs/memory.md's tables from the result files in bench/results/ (never by hand).

    .venv/bin/python bench/memory_tables.py          # rewrite the tables in docs/memory.md
    .venv/bin/python bench/memory_tables.py --check  # fail if the doc differs from the data

Tables: the learner at real shapes (bench_learner_memory.py: learner_memory_*.json) and the
server under the cookbook's guess_number (bench_serve_memory.py: serve_memory_*.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from doc_markers import replace_between_markers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "memory.md"
GiB = 1 << 30


def _load(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def _when(result: dict[str, Any]) -> str:
    s = result["sitting"]
    return f"{s['date'][:16].replace('T', ' ')} UTC, {s['commit']}"


def learner_table() -> str:
    lines = ["| result | code | batch (groups x samples x tokens) | tokens | step s (each) "
             "| tokens/s (best) | peak RSS GiB | micro-batch tokens | micro-batches "
             "| recompute |", "|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for name, result in _load("learner_memory_*.json"):
        for row in result["rows"]:
            if "steps" not in row:
                lines.append(f"| {name} | {_when(result)} | {row['batch']} | | "
                             f"{row.get('error', 'failed')} | | | | | |")
                continue
            times = [s["seconds"] for s in row["steps"]]
            plan = row["steps"][-1]["metrics"]
            tokens = plan.get("memory/microbatch_tokens:max")
            parts = plan.get("memory/microbatches:sum")
            recompute = plan.get("memory/recompute:max")
            lines.append(
                f"| {name} | {_when(result)} | {row['batch']} | {row['tokens']} "
                f"| {', '.join(f'{t:.1f}' for t in times)} | {row['tokens'] / min(times):.1f} "
                f"| {row['peak_rss'] / GiB:.2f} | {'' if tokens is None else f'{tokens:.0f}'} "
                f"| {'' if parts is None else f'{parts:.0f}'} "
                f"| {'' if recompute is None else ('on' if recompute else 'off')} |")
    return "\n".join(lines)


def serve_table() -> str:
    lines = ["| result | code | trained tokens per step | train_step s (each) | median "
             "| server peak RSS GiB | engine peak RSS GiB |", "|---|---|---|---|---:|---:|---:|"]
    for name, result in _load("serve_memory_*.json"):
        steps = [s for s in result["steps"] if "time/train_step" in s]
        train = [s["time/train_step"] for s in steps]
        tokens = ", ".join(str(int(s.get("tokens/trained", 0))) for s in steps)
        engines = [v for v in result["peak_rss"]["children"].values() if v and v > GiB // 4]
        lines.append(f"| {name} | {_when(result)} | {tokens} | "
                     f"{', '.join(f'{t:.0f}' for t in train)} | {statistics.median(train):.0f} "
                     f"| {result['peak_rss']['server'] / GiB:.2f} "
                     f"| {max(engines) / GiB if engines else float('nan'):.2f} |")
    return "\n".join(lines)


TABLES = {"learner-memory": learner_table, "serve-memory": serve_table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    before = DOC.read_text()
    for name, table in TABLES.items():
        replace_between_markers(DOC, table(), name)
    if args.check:
        after = DOC.read_text()
        DOC.write_text(before)
        if after != before:
            print(f"{DOC} differs from bench/results: run bench/memory_tables.py")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for tests that run `mint-rl run` (in this process or in a subprocess) and read its
run folder: tiny options, metrics rows, failures, the run's vLLM engine processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil

# The smallest useful run: 2 groups x 4 samples x 4 tokens, no evaluation, no checkpoints.
SMALL = ["--groups-per-batch", "2", "--group-size", "4", "--max-tokens", "4",
         "--eval-every", "0", "--save-every", "0"]


def rows(log_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]


def failures(log_dir: Path) -> list[dict]:
    path = log_dir / "failures.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def engine_processes(run: subprocess.Popen) -> list[psutil.Process]:
    """The vLLM engine-core processes of a run in a subprocess, oldest first (processes they
    start themselves may carry the same name: those are not counted)."""
    def is_engine(p: psutil.Process) -> bool:
        return "EngineCore" in p.name()

    found = [p for p in psutil.Process(run.pid).children(recursive=True)
             if is_engine(p) and not is_engine(p.parent())]
    return sorted(found, key=lambda p: p.create_time())

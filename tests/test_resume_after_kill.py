"""kill -9 anywhere, run the same command again: the run carries on as if uninterrupted.

`mint-rl run arithmetic --reproducible` (K = 0, fixed seed, a checkpoint every step) is
SIGKILLed twice (right after a step ends, which is when its checkpoint is being written, or a
moment later) and restarted with the same command until it finishes. The first kill hits the
whole process group, as `kill -9 -PGID` does; the second the trainer alone, as the OOM killer
does: its vLLM engine process must not outlive it (vLLM's own SIGTERM shutdown would block on
the dead parent). Compared with an
uninterrupted run of the same command: every step appears once in metrics.jsonl, each step
trained exactly its own batch, and the final adapters are equal (seeded sampling and fp32 on CPU
make the runs replay).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from run_helpers import engine_processes
from safetensors.torch import load_file

from mint_rl.learner.checkpoint import resolve_path
from mint_rl.rl.checkpoints import RunCheckpoints

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
COMMAND = ["--steps", str(STEPS), "--groups-per-batch", "2", "--group-size", "4",
           "--max-tokens", "4", "--eval-every", "0", "--save-every", "1", "--seed", "7",
           "--cpus", "shared", "--reproducible"]


def _start(log_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mint_rl.cli", "run", "arithmetic", "--log-dir", str(log_dir),
         *COMMAND], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def _steps_logged(log_dir: Path) -> int:
    try:
        return len((log_dir / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def _run_and_kill(log_dir: Path, rng: random.Random, whole_group: bool) -> bool:
    """Starts the command and SIGKILLs it once it made progress (its whole process group, or the
    trainer alone); then no engine process of it may be left. False if it finished first."""
    proc = _start(log_dir)
    before = _steps_logged(log_dir)
    while proc.poll() is None and _steps_logged(log_dir) == before:
        time.sleep(0.05)
    engines = engine_processes(proc)
    assert engines, "the run started no engine process?"
    # Right away (its checkpoint is being written) or a little later (mid-step).
    time.sleep(rng.choice([0.0, 0.0, rng.uniform(0.5, 4.0)]))
    if proc.poll() is not None:
        return False
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)  # no atexit, no cleanup of any kind
    proc.wait(timeout=60)
    deadline = time.time() + 15
    while (alive := [p for p in engines if _running(p)]) and time.time() < deadline:
        time.sleep(0.2)
    assert alive == [], f"engine processes left behind: {alive}"
    return True


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a container's init may be slow to reap orphans, or never)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _run_to_the_end(log_dir: Path) -> None:
    proc = _start(log_dir)
    assert proc.wait(timeout=900) == 0


def _final_adapter(log_dir: Path) -> dict:
    latest = RunCheckpoints(log_dir).latest()
    assert latest is not None and latest.step == STEPS
    return load_file(resolve_path(latest.state_path) / "adapter_model.safetensors")


def test_sigkill_anywhere_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    rng = random.Random(0)
    # The uninterrupted run goes alongside (the runs replay whatever the timing): their engine
    # starts overlap, which keeps this test's wall-clock time down.
    whole = _start(tmp_path / "whole")
    killed = tmp_path / "killed"
    assert [_run_and_kill(killed, rng, whole_group) for whole_group in (True, False)] == [
        True, True]
    _run_to_the_end(killed)
    assert whole.wait(timeout=900) == 0

    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(STEPS))  # none repeated, none skipped
    for r in rows:  # each step trained its own batch, all of it, once
        assert r["groups/oldest_batch"] == r["groups/newest_batch"] == r["step"]
        assert r["groups/trained"] == 2
    whole = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text()
             .splitlines()]
    # The same samples, so the same rewards, step by step.
    assert [r["reward/mean"] for r in rows] == [r["reward/mean"] for r in whole]
    a, b = _final_adapter(killed), _final_adapter(tmp_path / "whole")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, f"final adapters differ by {worst}"

"""kill -9 at the worst moment, run the same command again: the run carries on as if
uninterrupted.

`mint-rl run arithmetic --reproducible` (K = 0, fixed seed, a checkpoint every step) is
SIGKILLed right after a step ends, which is when its checkpoint is being written, and restarted
with the same command. The kill hits the trainer alone, as the OOM killer does: its vLLM engine
process must not outlive it (vLLM's own SIGTERM shutdown would block on the dead parent).
Compared with an uninterrupted run of the same command: every step appears once in
metrics.jsonl, each step trained exactly its own batch, and the final adapters are equal (seeded
sampling and fp32 on CPU make the runs replay). A kill mid-step redoes less than this one (the
step had no checkpoint yet); tests/test_pipeline_faults.py resumes after a failure mid-step.
"""

from __future__ import annotations

import json
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
from mint_rl.run.checkpoints import RunCheckpoints

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STEPS = 2  # killed after step 0, the resumed run trains step 1
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


def _run_and_kill(log_dir: Path) -> None:
    """Starts the command and SIGKILLs the trainer once its first step is logged (its
    checkpoint is being written); then no engine process of it may be left."""
    proc = _start(log_dir)
    while proc.poll() is None and _steps_logged(log_dir) == 0:
        time.sleep(0.02)
    engines = engine_processes(proc)
    assert proc.poll() is None and engines, "the run ended (or started no engine) first"
    proc.send_signal(signal.SIGKILL)  # no atexit, no cleanup of any kind
    proc.wait(timeout=60)
    deadline = time.time() + 15
    while (alive := [p for p in engines if _running(p)]) and time.time() < deadline:
        time.sleep(0.2)
    assert alive == [], f"engine processes left behind: {alive}"


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
    # The uninterrupted run goes alongside (the runs replay whatever the timing): their engine
    # starts overlap, which keeps this test's wall-clock time down.
    whole = _start(tmp_path / "whole")
    killed = tmp_path / "killed"
    _run_and_kill(killed)
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

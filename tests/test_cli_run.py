"""`mint-rl run` as a user runs it, on the real stack: our progress lines on the terminal, what
vLLM and transformers print in the run's log file, a clean end, and a Ctrl-C that shuts the
engine down with no traceback and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from mint_rl.cli import THIRD_PARTY_LOG

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--groups-per-batch", "2", "--group-size", "2", "--max-tokens", "4",
         "--eval-samples", "1"]


def _start(log_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("VLLM_LOGGING_LEVEL", None)  # vLLM as a user gets it: INFO (conftest quiets it)
    return subprocess.Popen(
        [sys.executable, "-m", "mint_rl.cli", "run", "arithmetic", "--log-dir", str(log_dir),
         *SMALL, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # A terminal's Ctrl-C reaches a program whose SIGINT is at its default; this process
        # may have it ignored (inherited through exec), which the child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _descendants(proc: subprocess.Popen[str]) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _communicate(proc: subprocess.Popen[str], seen: set[int]) -> tuple[str, str]:
    """Waits for the command while recording the processes it starts (its vLLM engine)."""
    result: dict[str, str] = {}

    def wait() -> None:
        result["out"], result["err"] = proc.communicate(timeout=600)

    waiter = threading.Thread(target=wait)
    waiter.start()
    while waiter.is_alive():
        seen |= _descendants(proc)
        time.sleep(0.2)
    waiter.join()
    return result["out"], result["err"]


def _left_behind(pids: set[int]) -> list[int]:
    """Those of `pids` still running 20 s after the command exited."""
    deadline = time.time() + 20
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


def _assert_quiet(text: str) -> None:
    """Nothing of vLLM's, transformers' or Python's own reporting on the terminal."""
    for noise in ("INFO", "WARNING", "Traceback", "it/s]", "EngineCore"):
        assert noise not in text, f"{noise!r} on the terminal:\n{text}"


def test_run_shows_our_progress_logs_the_rest_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """One run: our progress lines on the terminal and vLLM's in the log file; then Ctrl-C while
    it samples ends it after the step in progress, with an orderly engine shutdown, exit code
    130, no traceback and no process left behind."""
    proc = _start(tmp_path / "run", "--steps", "5", "--eval-every", "0")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # wait until step 0 is done and step 1 samples: work in flight
        seen.append(line)
        if "step 0 done" in line:
            break
    assert any("step 0 done" in line for line in seen), "".join(seen)
    started = _descendants(proc)
    assert started, "the run started no engine process?"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, err = _communicate(proc, started)
    out = "".join(seen) + out
    assert proc.returncode == 130, out + err
    assert err == ""
    _assert_quiet(out)
    for line in ("vLLM sampler ready", "learner ready", "sampler serves policy v0",
                 "step 0 done", "interrupted", "shutting down"):
        assert line in out
    log = (tmp_path / "run" / THIRD_PARTY_LOG).read_text()
    assert "EngineCore" in log and "[shutdown]" in log  # vLLM's own lines went to the file
    assert "EngineDeadError" not in log and "force killing" not in log  # an orderly shutdown
    phases = json.loads((tmp_path / "run" / "startup.json").read_text())
    order = ["imports done", "vLLM sampler ready",
             "sampler serves policy v0 (checked against the learner)", "step 0 done"]
    assert [phases[p] for p in order] == sorted(phases[p] for p in order)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert 1 <= len(rows) < 5  # stopped early, after whole steps only
    # Memory, a figure like time: the engine's peak every step, the learner's where it trained.
    assert all(r["memory/engine_peak_rss_gib"] > 0.2 for r in rows), rows
    trained = [r for r in rows if "loss/sum" in r]
    assert all(r["memory/learner_peak_rss_gib"] > 0.2 and r["memory/microbatches"] >= 1
               for r in trained), trained
    assert _left_behind(started) == []

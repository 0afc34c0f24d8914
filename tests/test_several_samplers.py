"""`--backend ray --samplers 2` on the real stack (vLLM, peft, default model), in a subprocess:
the two samplers and the learner run as Ray actors (a local Ray cluster the run starts), each
sampler with its own vLLM engine process; both sample; the staleness bound holds across them and
the sampler/learner logprobs agree; one engine killed with SIGKILL mid-run is replaced while the
other sampler keeps going (steps go on without waiting for it), the run trains every batch once,
and the restarted sampler samples again; then the run is stopped (SIGTERM: after the step in
progress) and leaves no process behind. One run covers all of it (each engine start costs ~20 s
here). The local backend runs the same pipeline and actors (its several-sampler logic with
stand-in samplers, fast: tests/test_pipeline_staleness.py); a Ray actor's whole process killed
is tests/test_runtime_backends.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from run_helpers import SMALL, engine_processes, failures, rows

from mint_rl.run.metrics import read_metrics

pytestmark = pytest.mark.slow

MAX_STEPS, GROUPS, K = 60, 2, 1


def _restarted_sampler(run_dir: Path) -> int | None:
    """The sampler that crashed, was out while steps were trained, and has sampled since."""
    done = rows(run_dir)
    for i in (0, 1):
        out = [j for j, r in enumerate(done) if not r[f"sampler/{i}/serving"]]
        if out and sum(r[f"sampler/{i}/groups"] for r in done[out[-1] + 1:]) > 0:
            return i
    return None


def test_two_samplers_own_engines_and_one_killed_is_replaced(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mint_rl.cli", "run", "arithmetic", "--log-dir", str(run_dir),
           "--steps", str(MAX_STEPS), "--samplers", "2", "--max-steps-off-policy", str(K),
           "--backend", "ray", *SMALL]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):  # step 0 done
            assert run.poll() is None, "the run ended before its first step"
            time.sleep(0.2)
        engines = engine_processes(run)
        # Two engines, two processes, each in its sampler's Ray worker process (they started
        # together), not in the run's own.
        assert len(engines) == 2 and engines[0].pid != engines[1].pid
        assert engines[0].parent().pid != engines[1].parent().pid
        assert all(e.parent().pid != run.pid for e in engines)
        everything = psutil.Process(run.pid).children(recursive=True)
        engines[1].send_signal(signal.SIGKILL)  # one of them: the metrics tell whose it was
        while (killed := _restarted_sampler(run_dir)) is None:
            assert run.poll() is None, f"the run ended (exit {run.returncode}) before that"
            time.sleep(0.5)
        other = 1 - killed
        run.terminate()  # stops after the step in progress, as Ctrl-C does
        assert run.wait(timeout=600) == 130
    finally:
        if run.poll() is None:
            run.kill()
    # Ray's processes and the engines went with the run.
    _, alive = psutil.wait_procs(everything, timeout=30)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    steps = [r for r in rows(run_dir) if "groups/trained" in r]
    assert [r["step"] for r in steps] == list(range(len(steps)))

    # Both sampled (least-loaded dispatch splits each batch between them).
    for i in (0, 1):
        assert sum(r[f"sampler/{i}/groups"] for r in steps) > 0
        assert max(r[f"sampler/{i}/tokens_per_s"] for r in steps) > 0
    # The staleness bound holds for both: batch s was sampled by versions >= s - K. A sampler
    # that is restarting serves nothing (and is not waited for): the bound is on serving ones.
    for r in steps:
        assert r["groups/trained"] == GROUPS and r["staleness/max"] <= K
        # fp32 on both sides: a batch sampled by the learner's own version has its logprobs
        # (and each load was checked on the probe sequence, or the run would have failed).
        if r["staleness/max"] == 0:
            assert r.get("kl/sampler_learner", 0.0) < 1e-3
        for i in (0, 1):
            if r[f"sampler/{i}/serving"]:
                assert r["step"] - K <= r[f"sampler/{i}/policy_version"] <= r["step"] + 1
    assert all(r[f"sampler/{other}/serving"] for r in steps)
    # Every batch trained once: each batch's groups appear once in the trained samples.
    samples = read_metrics(run_dir / "samples.jsonl")
    assert Counter(s["batch"] for s in samples) == {b: GROUPS for b in range(len(steps))}

    # The killed engine's sampler crashed and was restarted; the other never.
    crashes = failures(run_dir)
    name = "sampler" if killed == 0 else "sampler-1"
    assert crashes and all(f["actor"] == name and f["action"] == "restart"
                           for f in crashes), crashes
    assert any(f["error_type"] in ("EngineDeadError", "SamplerEngineDeadError")
               for f in crashes), [(f["endpoint"], f["error_type"]) for f in crashes]
    assert steps[-1][f"sampler/{killed}/restarts"] >= 1
    assert steps[-1][f"sampler/{other}/restarts"] == 0
    # The restarted sampler samples again: groups it finished after the crash was seen.
    seen = next(j for j, r in enumerate(steps) if r[f"sampler/{killed}/restarts"])
    assert sum(r[f"sampler/{killed}/groups"] for r in steps[seen + 1:]) > 0, steps
    # Meanwhile the run did not wait for it: steps were trained while it was not serving.
    assert any(not r[f"sampler/{killed}/serving"] for r in steps[seen:]), steps

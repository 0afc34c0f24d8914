"""Peak resident memory (RSS) of this process and of the vLLM engine processes it started.

Memory is a figure like time: runs record both peaks per step (metrics.jsonl) and at the end
(startup.json), `mint-rl show` prints them, and the server's status reports them. The peak is the
kernel's high-water mark (VmHWM), so a short spike between two readings is not missed.
"""

from __future__ import annotations

import contextlib
import os
import sys

GiB = 1 << 30


def peak_rss(pid: int | None = None) -> int:
    """Peak resident bytes of process `pid` (default: this one); 0 where unknown."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    if pid is None or pid == os.getpid():  # no /proc (macOS): getrusage knows our own peak
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    return 0


def current_rss(pid: int | None = None) -> int:
    """Resident bytes of process `pid` (default: this one) now; 0 where unknown."""
    import psutil

    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


def engine_pids() -> list[int]:
    """vLLM engine processes among this process's descendants (vLLM titles them EngineCore)."""
    import psutil

    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "EngineCore" in " ".join(child.cmdline()):
                    found.append(child.pid)
    return found


def engine_peak_rss() -> int:
    """The largest peak RSS among this process's vLLM engine processes; 0 if it has none."""
    return max((peak_rss(pid) for pid in engine_pids()), default=0)


def learner_memory_metrics(forward_backward_metrics: dict[str, float]) -> dict[str, float]:
    """A run's memory figures of its learner, measured in the learner's process: the memory plan
    of its forward_backward (Tinker's `name:reduction` keys, under run metric names) and the
    process's peak RSS in GiB."""
    plan = {key.split(":")[0]: value for key, value in forward_backward_metrics.items()
            if key.startswith("memory/")}
    return {**plan, "memory/learner_peak_rss_gib": peak_rss() / GiB}


def engine_memory_metrics() -> dict[str, float]:
    """A run's memory figure of its vLLM engines started by this process (none: no entry)."""
    engine = engine_peak_rss()
    return {"memory/engine_peak_rss_gib": engine / GiB} if engine else {}

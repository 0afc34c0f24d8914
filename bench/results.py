"""What every bench records beside its figures, and where: `bench/results/NAME.json`.

A result file holds the raw figures (per-step times, tokens, peak memory, the configuration)
and the sitting they came from (git commit, date, CPU model and flags, cores, memory), so a
figure in `docs/` can always be traced to a file.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in bytes; {} where /proc is not there. Only for
    children running in another venv without mint_rl (TRL's); elsewhere use
    mint_rl.process_memory."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
    return out


def _code_state() -> str:
    """The commit checked out, "+dirty" if a tracked file outside bench/results differs."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    # A bench rewrites its own result file after each run: that is not a change to the code.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ":(top,exclude)bench/results"],
                           capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    return commit + ("+dirty" if dirty.strip() else "")


# The code a bench measures is the code it started with (this module is imported at its start):
# a doc edited while a long bench runs does not change what it measured.
CODE_AT_LAUNCH = _code_state()


def sitting() -> dict[str, Any]:
    """The machine and code a result was measured on."""
    cpu, flags = platform.processor() or platform.machine(), []
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                 if f" {f}" in text]
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": CODE_AT_LAUNCH,
        "cpu": cpu, "cpu_flags": flags, "cores": len(os.sched_getaffinity(0)),
        "memory_bytes": memory,
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Writes `data` and the sitting to bench/results/NAME.json; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"sitting": sitting(), **data}, indent=1) + "\n")
    return path

"""Which files one sampled group's trip runs through: sampler -> learner -> new weights back.

Runs `mint-rl run arithmetic` in this process (K = 0, three steps, no evaluation or checkpoints)
with a profiler on every thread, and records the repository files whose functions are called
between the start of training step 1 and the start of step 2. At K = 0 that window holds exactly
one trip: step 1 trains its batch, the learner saves the new adapter, every sampler loads it and
checks the probe, batch 2 is sampled with it and turned into advantages and datums.

The files are sorted into three kinds: the trip itself; the actor runtime (mailboxes, calls,
supervision: plumbing a reader skips, as they skip anyio); and the run around it (metrics,
the live view, samples.jsonl). The vLLM engine runs in a process of its own, which the profiler
does not see: its files of ours (`mint_rl/sampler/worker_ext.py`, the `merged` weight rebuild,
and `mint_rl/sampler/lora_merge.py`, which reads the adapter and merges it) are added by hand.

    python bench/trip_files.py [--name trip_files]   # writes bench/results/NAME.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from results import write_result

ROOT = Path(__file__).resolve().parents[1]
MINT_RL = ROOT / "mint_rl"
# mint_rl/actors and mint_rl/recipes are the top-level folders, under the package's name.
ALIASES = {str(MINT_RL / "actors"): "actors", str(MINT_RL / "recipes"): "recipes"}
OUTSIDE_PROCESS = ["mint_rl/sampler/worker_ext.py", "mint_rl/sampler/lora_merge.py"]
RUNTIME = ("mint_rl/runtime/",)
RUN_AROUND = ("mint_rl/run/", "mint_rl/terminal.py", "mint_rl/process_memory.py")


def _relative(filename: str) -> str | None:
    path = Path(filename)
    if not path.is_absolute() or ".venv" in path.parts:
        return None
    for alias, folder in ALIASES.items():
        if filename.startswith(alias + "/"):
            return folder + filename[len(alias):]
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return None


class TripRecorder:
    """A profile hook: counts `train_step` calls and records the files called while the count
    is 2 (from step 1's start to step 2's; steps count from 0)."""

    def __init__(self) -> None:
        self.steps_started = 0
        self.files: set[str] = set()
        self._names: dict[str, str | None] = {}
        self._steps: list[FrameType] = []  # a coroutine's frame is "called" again at each resume

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        filename = frame.f_code.co_filename
        if filename not in self._names:
            self._names[filename] = _relative(filename)
        name = self._names[filename]
        if name is None:
            return
        if (name == "actors/pipeline.py" and frame.f_code.co_name == "train_step"
                and frame not in self._steps):
            self._steps.append(frame)
            self.steps_started += 1
        if self.steps_started == 2 and not name.startswith(("tests/", "bench/")):
            self.files.add(name)


def kind(name: str) -> str:
    if name.startswith(RUNTIME):
        return "runtime"
    if name.startswith(RUN_AROUND):
        return "run"
    return "trip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="trip_files", help="bench/results/NAME.json")
    name = parser.parse_args().name
    recorder = TripRecorder()
    sys.setprofile(recorder)
    threading.setprofile(recorder)
    from mint_rl.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="mint-trip-") as tmp:
        sys.argv = ["mint-rl", "run", "arithmetic", "--log-dir", f"{tmp}/run", "--steps", "3",
                    "--max-steps-off-policy", "0", "--eval-every", "0", "--save-every", "0"]
        try:
            cli()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    files = sorted(recorder.files | set(OUTSIDE_PROCESS))
    by_kind = {k: [f for f in files if kind(f) == k] for k in ("trip", "runtime", "run")}
    path = write_result(name, {
        "what": "files whose code runs during one group's trip (train step 1 -> save -> load "
                "into the sampler -> sample batch 2 -> advantages), arithmetic recipe, K = 0",
        "files": by_kind, "counts": {k: len(v) for k, v in by_kind.items()},
    })
    for k, names in by_kind.items():
        print(f"{k}: {len(names)}")
        for n in names:
            print(f"  {n}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

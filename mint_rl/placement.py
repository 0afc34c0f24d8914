"""Which CPU cores the sampler (vLLM) and the learner (torch) compute on.

On a small CPU box the two compete for the same cores, and both run OpenMP-style parallel
regions that wait for their slowest thread: one thread sharing a core with the other side slows a
whole step down far more than the core it loses. On the 2-core box vLLM's own automatic binding
keeps one of two cores for its scheduler (docs/sampling.md), and a learner on its own pinned core
trains far faster next to a sampling engine than with torch's two floating threads. So we place
explicitly (docs/rl_bench.md measures the RL step placed this way):

- phases that run one after the other (K = 0) each get every core;
- phases that overlap (K >= 1) get disjoint cores, the sampler the first half;
- several sampler engines (`--samplers N`) split the sampler's cores between them
  (`CpuPlacement.sampler_engine_cores`), or all share them when there are fewer cores than engines.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mint_rl.errors import InvalidInputError
from mint_rl.runtime.actor import Resources


def available_cores() -> tuple[int, ...]:
    """The CPUs this process may run on (respects taskset / cgroup cpusets)."""
    return tuple(sorted(os.sched_getaffinity(0)))


def parse_cores(spec: str | Iterable[int], field: str) -> tuple[int, ...]:
    """`"0-3,6"` or `[0, 1, 2, 3, 6]` -> (0, 1, 2, 3, 6); each core must be usable here."""
    cores: set[int] = set()
    if isinstance(spec, str):
        for part in spec.replace(" ", "").split(","):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise InvalidInputError(field, f"expected a core list like '0-1' or '2,3', "
                                               f"got {spec!r}")
            lo, hi = match.group(1), match.group(2) or match.group(1)
            cores.update(range(int(lo), int(hi) + 1))
    else:
        cores.update(int(c) for c in spec)
    if not cores:
        raise InvalidInputError(field, "names no CPU core")
    missing = cores - set(available_cores())
    if missing:
        raise InvalidInputError(field, f"cores {sorted(missing)} are not available to this "
                                       f"process (available: {format_cores(available_cores())})")
    return tuple(sorted(cores))


def format_cores(cores: Iterable[int]) -> str:
    """(0, 1, 2, 5) -> "0-2,5", the form vLLM's VLLM_CPU_OMP_THREADS_BIND takes."""
    runs: list[list[int]] = []
    for c in sorted(cores):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class CpuPlacement:
    sampler: tuple[int, ...]
    learner: tuple[int, ...]

    @property
    def shared(self) -> bool:
        return bool(set(self.sampler) & set(self.learner))

    def sampler_cores(self) -> str:
        """For `EngineConfig(cpu_cores=...)`."""
        return format_cores(self.sampler)

    def sampler_engine_cores(self, engines: int) -> list[str]:
        """`cpu_cores` of each of `engines` sampler engines (`--samplers N`): disjoint shares of
        the sampler's cores, as equal as can be (the first engines get one more), when there are
        at least as many cores as engines. With fewer cores every engine is bound to all the
        sampler's cores and they take turns on them: on the 2-core box at K >= 1 two engines
        share one core. That gives no more compute than one engine, but a run never fails for
        a small machine, and the engines stay separate processes that fail separately."""
        if engines < 1:
            raise InvalidInputError("samplers", f"must be >= 1, got {engines}")
        if len(self.sampler) < engines:
            return [self.sampler_cores()] * engines
        share, extra = divmod(len(self.sampler), engines)
        out, start = [], 0
        for i in range(engines):
            end = start + share + (1 if i < extra else 0)
            out.append(format_cores(self.sampler[start:end]))
            start = end
        return out

    def learner_cores(self) -> tuple[int, ...] | None:
        """For `LearnerSettings(cpu_cores=...)`: pinned only when the learner has its own cores
        (shared cores are left to torch's threads, which then have them to themselves)."""
        return None if self.shared else self.learner


CPU_MODES = ("auto", "shared", "split")


def plan_cpus(
    max_steps_off_policy: int, mode: str = "auto", cores: Iterable[int] | None = None
) -> CpuPlacement:
    """Cores for an RL run: `shared` gives every core to both (right when sampling and training
    alternate, K = 0), `split` gives each its own half (right when they overlap, K >= 1);
    `auto` picks by K."""
    if mode not in CPU_MODES:
        raise InvalidInputError("cpus", f"must be one of {CPU_MODES}, got {mode!r}")
    cores = tuple(sorted(cores)) if cores is not None else available_cores()
    split = mode == "split" or (mode == "auto" and max_steps_off_policy > 0)
    if not split or len(cores) < 2:
        return CpuPlacement(sampler=cores, learner=cores)
    half = len(cores) // 2
    return CpuPlacement(sampler=cores[:half], learner=cores[half:])


def pin_current_thread(cores: Iterable[int]) -> None:
    """Binds the calling thread (and the OpenMP workers torch starts from it) to `cores`."""
    import torch

    cores = tuple(cores)
    os.sched_setaffinity(0, cores)  # pid 0 = the calling thread on Linux
    torch.set_num_threads(len(cores))


def ray_resources(role_cores: Mapping[str, Iterable[int]],
                  role_gpus: Mapping[str, float] | None = None) -> dict[str, Resources]:
    """What each role of a run (`--backend ray`) asks of Ray: its share of the cores it is bound
    to (a core bound to n roles counts 1/n for each, so the asks add up to the cores the run
    uses; a share above 1 is rounded down, as Ray wants whole numbers there), its GPU share, and
    OMP_NUM_THREADS = the cores it computes on (Ray would otherwise set it to the ask)."""
    users = Counter(core for cores in role_cores.values() for core in set(cores))
    out = {}
    for role, cores in role_cores.items():
        cores = set(cores)
        share = sum(1 / users[c] for c in cores)
        out[role] = Resources(num_cpus=share if share < 1 else float(math.floor(share + 1e-9)),
                              num_gpus=(role_gpus or {}).get(role, 0.0),
                              env=(("OMP_NUM_THREADS", str(len(cores))),))
    return out

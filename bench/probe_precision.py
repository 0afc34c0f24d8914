"""How far a bf16 sampler's probe logprobs sit from a bf16 learner's, at every weight load.

Runs `mint-rl run arithmetic` in this process with the sampler and the learner in bf16 and the
weight-arrival check replaced by one that records, per policy version, the mean and the largest
difference over the probe's positions (and never fails). The bf16 default of
`EngineConfig.probe_tolerance` is set from these figures: the check must flag a sampler that is
not serving the learner's weights, never the precision gap of one that is.

    .venv/bin/python bench/probe_precision.py [--steps 30] [--seed 0] [--name NAME]

Writes bench/results/NAME.json (default probe_precision_bf16).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from results import write_result

LOADS: list[dict[str, Any]] = []  # the check runs on the engine's loop thread, in this process


def recording_check(policy_version: int, got: Sequence[float], expected: Sequence[float],
                    tolerance: float, exact: bool = True) -> None:
    diffs = [abs(g - float(e)) for g, e in zip(got, expected, strict=True)]
    LOADS.append({"policy_version": policy_version, "mean": sum(diffs) / len(diffs),
                  "max": max(diffs)})


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="probe_precision_bf16")
    args = parser.parse_args()
    import mint_rl.sampler.engine as engine_module
    from mint_rl.cli import main as cli

    engine_module.check_arrival = recording_check  # the engine's own reference to the check
    command = ["run", "arithmetic", "--steps", str(args.steps), "--seed", str(args.seed),
               "--eval-every", "0", "--sampler-dtype", "bfloat16", "--learner-dtype", "bfloat16"]
    with tempfile.TemporaryDirectory(prefix="mint-probe-") as tmp:
        code = cli([*command, "--log-dir", f"{tmp}/run"])
    if code:
        sys.exit(code)

    means = [x["mean"] for x in LOADS]
    path = write_result(args.name, {
        "what": "bf16 sampler vs bf16 learner: probe logprob differences (nats) at every weight "
                "load of an arithmetic run",
        "command": "mint-rl " + " ".join(command), "loads": LOADS,
        "mean_of_means": sum(means) / len(means), "largest_mean": max(means),
        "largest_position": max(x["max"] for x in LOADS)})
    print(f"{len(LOADS)} loads: mean {min(means):.3f}-{max(means):.3f} nats; wrote {path}")


if __name__ == "__main__":  # vLLM starts its engine process with spawn: it imports this module
    main()

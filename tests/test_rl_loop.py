"""The reference loop (recipes/rl_loop.py) runs through `mint-rl run`, on the real stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mint_rl.cli import _recipe_names, main


def test_listed_recipes_are_the_runnable_ones() -> None:
    # Each of them runs from the command line in a test (composed: tests/test_composition.py,
    # the others in tests/test_<name>*.py); helper modules of recipes/ are not listed.
    assert _recipe_names() == ["arithmetic", "composed", "guess_number", "math", "preference",
                               "rl_loop", "sft"]


@pytest.mark.slow
def test_rl_loop_runs_from_the_command_line(sampler_engine, tmp_path: Path) -> None:
    code = main(["run", "rl_loop", "--steps", "2", "--log-dir", str(tmp_path),
                 "--groups-per-batch", "3", "--group-size", "4", "--max-tokens", "4"])
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    # Each step samples the weights of that step, pushed and checked by the engine.
    assert [r["policy_version"] for r in rows] == [0, 1]
    for r in rows:
        assert 0.0 <= r["reward/mean"] <= 1.0
        if r["datums"]:
            # Synchronous and fp32: the sampler's behaviour logprobs are the learner's.
            assert abs(r["kl/sampler_learner"]) < 1e-3
    assert json.loads((tmp_path / "config.json").read_text())["groups_per_batch"] == 3
    assert not sampler_engine.closed  # the CLI in this process reused the shared engine

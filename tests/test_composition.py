"""Composition on the real stack (vLLM sampler, peft learner, default model), through the CLI:
the `composed` recipe (a reward-model actor stage, a filter, an advantage function of its own),
and an RL recipe written outside the repository on `mint_rl.run.train`. One sampler: with two,
each has its own vLLM engine on half the cores, so the first could not take the session's engine
(all cores) over; `--samplers 2` runs in a subprocess in tests/test_several_samplers.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mint_rl.cli import main

pytestmark = pytest.mark.slow

SMALL = ["--steps", "2", "--groups-per-batch", "3", "--group-size", "4", "--max-tokens", "4",
         "--eval-every", "0", "--save-every", "0"]


def _rows(log_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]


def test_composed_recipe_runs_every_extension_point(sampler_engine, tmp_path: Path) -> None:
    code = main(["run", "composed", "--log-dir", str(tmp_path), *SMALL, "--samplers", "1",
                 "--format-bonus", "0.5"])
    assert code == 0
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [0, 1]
    filtered_before = 0
    for r in rows:
        # The advantage function of the recipe ran (the default actor reports skipped groups).
        assert "groups/skipped_constant" not in r
        # Each of the 3 groups of a step is either dropped by the filter stage or trained on,
        # 4 answers each (the filter counts are cumulative).
        filtered = r["groups/filtered"] - filtered_before
        filtered_before = r["groups/filtered"]
        assert 0 <= filtered <= 3
        assert r["datums"] == 4 * (3 - filtered)
        assert r["staleness/max"] == 0
        # The judge's bonus is on top of the 0/1 task reward: means can exceed 1 only with it.
        assert 0.0 <= r["reward/mean"] <= 1.5
    assert not sampler_engine.closed  # the sampler took the session's engine over
    # samples.jsonl: the trained groups of each step, as text, with the rewards the step used.
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for r in rows:
        trained = [s for s in samples if s["step"] == r["step"]]
        assert len(trained) == r["datums"] // 4  # every trained group (3 or fewer per step)
        assert all(s["policy_version"] == r["step"] and "+" in s["prompt"] for s in trained)
        rewards = [x for s in trained for x in s["group_rewards"]]
        if rewards:
            assert sum(rewards) / len(rewards) == pytest.approx(r["reward/mean"])
            assert all(s["reward"] == s["group_rewards"][0] for s in trained)


_OUTSIDE_RECIPE = textwrap.dedent('''
    """An RL recipe outside the repository: reward replies that are exactly one word long."""
    import random
    from dataclasses import dataclass

    from mint_rl.run.config import RLConfig, option
    from mint_rl.run.train import load_tokenizer, train
    from mint_rl.rl.types import StepResult

    WORDS = ["cat", "river", "blue", "seven", "music", "bread"]


    @dataclass(frozen=True)
    class Config(RLConfig):
        bonus: float = option(1.0, "reward of a one-word reply")


    class OneWordEnv:
        def __init__(self, tokenizer, prompt, bonus):
            self.tokenizer, self.prompt, self.bonus = tokenizer, prompt, bonus

        async def initial_observation(self):
            return self.prompt

        async def step(self, action):
            reply = self.tokenizer.decode(action, skip_special_tokens=True).split()
            return StepResult(reward=self.bonus if len(reply) == 1 else 0.0, episode_done=True)


    @dataclass(frozen=True)
    class OneWordGroup:
        tokenizer: object
        word: str
        config: Config

        async def make_envs(self):
            messages = [{"role": "user", "content": f"Say a word that rhymes with {self.word}."}]
            prompt = list(self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False))
            return [OneWordEnv(self.tokenizer, prompt, self.config.bonus)
                    for _ in range(self.config.group_size)]

        def logging_tag(self):
            return "one-word"


    class OneWordDataset:
        def __init__(self, tokenizer, config):
            self.tokenizer, self.config = tokenizer, config

        def get_batch(self, index):
            rng = random.Random(index)
            return [OneWordGroup(self.tokenizer, rng.choice(WORDS), self.config)
                    for _ in range(self.config.groups_per_batch)]

        def __len__(self):
            return self.config.steps


    def main(config, log_dir):
        tokenizer = load_tokenizer(config.base_model)
        train(config, OneWordDataset(tokenizer, config), log_dir)
''')


def test_an_rl_recipe_outside_the_repository_trains(sampler_engine, tmp_path: Path) -> None:
    recipe = tmp_path / "one_word.py"
    recipe.write_text(_OUTSIDE_RECIPE)
    run_dir = tmp_path / "run"
    code = main(["run", str(recipe), "--log-dir", str(run_dir), *SMALL, "--bonus", "2.0"])
    assert code == 0
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [0, 1]
    assert all(0.0 <= r["reward/mean"] <= 2.0 for r in rows)
    assert json.loads((run_dir / "config.json").read_text())["bonus"] == 2.0
    assert (run_dir / "curves.png").exists() and (run_dir / "third_party.log").exists()

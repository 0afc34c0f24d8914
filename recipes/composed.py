"""Composing the pipeline: the arithmetic task with a reward-model stage, a filter, an advantage
function of your own and two sampler actors, each in a few lines (docs/composition.md).

    mint-rl run composed [--samplers 2] [--steps 10]

- `FormatJudge` is an actor of its own, spawned into the run: a stage that scores every sampled
  group (here a rule, "the reply is only a number", standing in for a learned reward model; a
  real one loads its model in `setup()`) and adds its score to the environment's reward.
- `keep_informative` is a filter stage: a group whose answers all scored the same teaches
  nothing (DAPO's dynamic-sampling rule), so it is dropped before advantages.
- `standardized_advantages` replaces the advantage step: rewards centered and divided by the
  group's standard deviation (GRPO's original rule; the default actor only centers).
- `--samplers 2` runs two sampler actors that take groups from the same prompt stream (in one
  process they share the process's vLLM engine; on separate machines each has its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mint_rl.recipes.arithmetic import AdditionDataset, make_evaluator, split_problems
from mint_rl.recipes.arithmetic import Config as ArithmeticConfig
from mint_rl.rl.data import TrainingBatch, batch_from_groups, center_per_group, is_constant
from mint_rl.rl.types import TrajectoryGroup
from mint_rl.run.config import option
from mint_rl.run.train import TrainingRun, load_tokenizer
from mint_rl.runtime import Actor, endpoint


@dataclass(frozen=True)
class Config(ArithmeticConfig):
    samplers: int = option(2, "sampler actors sharing the prompt stream")
    format_bonus: float = option(0.2, "reward-model score of a reply that is only a number")


class FormatJudge(Actor):
    """A reward-model stage as an actor: `score` gets each sampled group, returns it rescored."""

    def __init__(self, tokenizer: Any, bonus: float) -> None:
        self.tokenizer, self.bonus = tokenizer, bonus

    @endpoint
    async def score(self, group: TrajectoryGroup) -> TrajectoryGroup:
        replies = [self.tokenizer.decode(t.transitions[-1].action, skip_special_tokens=True)
                   for t in group.trajectories]
        return group.add_rewards([self.bonus if re.fullmatch(r"\s*-?\d+\.?\s*", r) else 0.0
                                  for r in replies])


async def keep_informative(group: TrajectoryGroup) -> TrajectoryGroup | None:
    """A filter stage: None drops the group."""
    return None if is_constant(group.rewards) else group


async def standardized_advantages(groups: list[TrajectoryGroup]) -> TrainingBatch:
    """An advantage step of your own: (reward - group mean) / group std, one datum per turn."""
    advantages = center_per_group([g.rewards for g in groups], normalize_std=True)
    return batch_from_groups(groups, advantages, skip_constant=False)  # the filter stage did


async def run(config: Config, log_dir: Path) -> None:
    tokenizer = load_tokenizer(config.base_model)
    train_set, eval_set = split_problems(config.max_operand, config.seed)
    async with TrainingRun.open(config, log_dir) as run:
        judge = await run.spawn(FormatJudge, tokenizer, config.format_bonus, name="judge")
        await run.train(AdditionDataset(train_set, tokenizer, config),
                        evaluate=make_evaluator(eval_set, tokenizer, config),
                        stages=[judge.score, keep_informative],
                        compute_advantages=standardized_advantages)


def main(config: Config, log_dir: Path) -> None:
    anyio.run(run, config, log_dir)

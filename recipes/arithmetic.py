"""Arithmetic RL: SmolLM2-135M-Instruct learns to answer small additions.

The prompt: "What is 3 + 4? Reply with just the number." Reward 1 when the first number in the
reply is the sum, else 0. Each problem is sampled `group_size` times; advantages are rewards
centered per group (GRPO without std normalisation). Held-out problems (never trained on) are
evaluated before, during and after training, and by `mint-rl eval` on any checkpoint.

    mint-rl run arithmetic [--steps 30] [--max-steps-off-policy 1] [--loss ppo] [--log-dir DIR]

Runs on the actor pipeline (`mint_rl.run.train`): a vLLM sampler actor, the advantage actor and a
torch + peft learner actor. Running the same command with the same --log-dir resumes from the
last checkpoint.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mint_rl import types
from mint_rl.rl.types import Sampler, StepResult
from mint_rl.run.config import RLConfig, option
from mint_rl.run.train import load_tokenizer, sampling_params, train
from mint_rl.sampler.sampling_client import SamplingClient

Problem = tuple[int, int]


@dataclass(frozen=True)
class Config(RLConfig):
    # 5e-4, not RLConfig's 1e-3: at 1e-3 one step moves the policy so far (kl/sampler_learner up
    # to 1.2 nats at K = 1) that K = 1 trains on samples of a different policy, and even K = 0
    # can collapse onto a reply the 6-token limit cuts before the answer (docs/off_policy.md).
    lr: float = option(5e-4, "Adam learning rate")
    max_operand: int = option(9, "largest operand of the additions", at_least=1)
    eval_samples: int = option(4, "samples per held-out problem", at_least=1)


# ------------------------------------------------------------------------------------------------
# The task


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}? Reply with just the number."


def reward(reply: str, a: int, b: int) -> float:
    match = re.search(r"-?\d+", reply)
    return 1.0 if match is not None and int(match.group()) == a + b else 0.0


def split_problems(max_operand: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """All pairs, 30% held out for evaluation."""
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed).shuffle(pairs)
    n_eval = max(1, int(0.3 * len(pairs)))
    return pairs[n_eval:], pairs[:n_eval]


def prompt_tokens(tokenizer: Any, a: int, b: int) -> list[int]:
    messages = [{"role": "user", "content": question(a, b)}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


class AdditionEnv:
    """One single-turn episode."""

    def __init__(self, tokenizer: Any, a: int, b: int, prompt: list[int]) -> None:
        self.tokenizer, self.a, self.b, self.prompt = tokenizer, a, b, prompt

    async def initial_observation(self) -> list[int]:
        return self.prompt

    async def step(self, action: list[int]) -> StepResult:
        reply = self.tokenizer.decode(action, skip_special_tokens=True)
        return StepResult(reward=reward(reply, self.a, self.b), episode_done=True)


@dataclass(frozen=True)
class AdditionGroup:
    a: int
    b: int
    group_size: int
    tokenizer: Any

    async def make_envs(self) -> list[AdditionEnv]:
        prompt = prompt_tokens(self.tokenizer, self.a, self.b)
        return [AdditionEnv(self.tokenizer, self.a, self.b, prompt)
                for _ in range(self.group_size)]

    def logging_tag(self) -> str:
        return "addition"


class AdditionDataset:
    """Batch i is a deterministic function of (seed, i): a resumed run sees the same data."""

    def __init__(self, problems: list[Problem], tokenizer: Any, cfg: Config) -> None:
        self.problems, self.tokenizer, self.cfg = problems, tokenizer, cfg

    def get_batch(self, index: int) -> list[AdditionGroup]:
        rng = random.Random(f"{self.cfg.seed}-{index}")
        return [AdditionGroup(*rng.choice(self.problems), self.cfg.group_size, self.tokenizer)
                for _ in range(self.cfg.groups_per_batch)]

    def __len__(self) -> int:
        return self.cfg.steps


def make_evaluator(problems: list[Problem], tokenizer: Any, cfg: Config) -> Any:
    """Held-out accuracy: the fraction of `eval_samples` answers per problem that are right."""
    params = sampling_params(cfg, tokenizer)

    async def evaluate(client: Sampler, step: int) -> dict[str, float]:
        scores: list[float] = []

        async def one(a: int, b: int) -> None:
            prompt = types.ModelInput.from_ints(prompt_tokens(tokenizer, a, b))
            out = await client.sample_async(prompt, cfg.eval_samples, params)
            scores.extend(reward(tokenizer.decode(s.tokens, skip_special_tokens=True), a, b)
                          for s in out.sequences)

        async with anyio.create_task_group() as tg:
            for a, b in problems:
                tg.start_soon(one, a, b)
        return {"eval/accuracy": sum(scores) / len(scores)}

    return evaluate


def evaluate_checkpoint(config: Config, adapter_dir: Path) -> dict[str, float]:
    """Held-out accuracy of base model + the adapter in `adapter_dir` (`mint-rl eval`)."""
    tokenizer = load_tokenizer(config.base_model)
    _, eval_set = split_problems(config.max_operand, config.seed)
    client = SamplingClient(config.base_model, adapter_dir)
    return anyio.run(make_evaluator(eval_set, tokenizer, config), client, 0)


# ------------------------------------------------------------------------------------------------
# The run


def main(config: Config, log_dir: Path) -> None:
    tokenizer = load_tokenizer(config.base_model)
    train_set, eval_set = split_problems(config.max_operand, config.seed)
    train(config, AdditionDataset(train_set, tokenizer, config), log_dir,
          evaluate=make_evaluator(eval_set, tokenizer, config))

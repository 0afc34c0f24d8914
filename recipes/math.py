"""Math RL: SmolLM2-135M-Instruct learns to solve short word problems, graded exactly.

The prompt is a word problem (recipes/math_problems.py: generated from the seed at three
levels; or GSM8K with `--dataset gsm8k`) that asks for the answer as `\\boxed{N}`, after two
solved examples shown as earlier chat turns ("3 + 2 = 5. \\boxed{5}"). The grader
(recipes/math_grader.py) takes the last `\\boxed{}`, else the last "#### N", else the last number
of the reply, normalises it and compares it exactly: reward 1 when right, 0 when wrong, plus
`format_bonus` (0.1) when the answer was boxed as asked, right or wrong. The bonus only breaks
ties between wrong answers, in favour of the format that makes an answer unambiguous, and never
outweighs being right. Held-out problems (a separate stream of the generator; training skips
any problem equal to one of them) are evaluated before, during and after training:
`eval/accuracy` (right answers, no bonus), and per level `eval/accuracy/level1`, ....

    mint-rl run math [--levels 1,2,3] [--steps 20] [--log-dir DIR]
    mint-rl run math --dataset gsm8k [--gsm8k-path DIR] --max-tokens 256

Defaults: level 1 (one addition or subtraction, counts up to 20), 8 problems x 8 samples per
step, at most 16 new tokens, 20 steps, PPO, lr 1e-3, LoRA r16, K = 0, fp32; 48 held-out
problems x 2 samples at T = 1, evaluated every 10 steps.

Measured here (2026-12-02, 2 cores shared with other jobs: load 8-12 for most of the run,
below 1 for the last steps; `--learner-threads 1`, which keeps the learner's threads from
spinning against the other jobs, otherwise defaults): held-out accuracy 0.23 (step 0) -> 0.77
(step 10) -> 0.82 (step 20); reward/mean 0.33 -> 1.08 (with the bonus). The model takes up the
"a + b = c. \\boxed{c}" form within 3 steps; what remains wrong is the sum itself. Step time:
median 67 s under that load (12-22 s once the machine was idle); the whole command took 24 min.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from mint_rl import types
from mint_rl.errors import InvalidInputError
from mint_rl.recipes.gsm8k import load_gsm8k
from mint_rl.recipes.math_grader import extract_answer, normalize
from mint_rl.recipes.math_problems import Problem, held_out, parse_levels, problem_at
from mint_rl.rl.types import Sampler, StepResult
from mint_rl.run.config import RLConfig, option
from mint_rl.run.train import load_tokenizer, sampling_params, train
from mint_rl.sampler.sampling_client import SamplingClient


@dataclass(frozen=True)
class Config(RLConfig):
    levels: str = option("1", "difficulty levels to train and evaluate on, e.g. 1,2,3 "
                              "(1: one operation, 2: two, 3: three with a multiplication)")
    dataset: Literal["generated", "gsm8k"] = option(
        "generated", "generated word problems, or GSM8K (needs `datasets`)")
    gsm8k_path: str | None = option(
        None, "folder with GSM8K's train/test .jsonl or .parquet (default: the hub)")
    format_bonus: float = option(0.1, "reward added when the answer is given as \\boxed{N}",
                                 at_least=0)
    eval_problems: int = option(48, "held-out problems evaluated", at_least=1)
    eval_samples: int = option(2, "samples per held-out problem", at_least=1)
    max_tokens: int = option(16, "reply length limit in tokens")
    steps: int = option(20, "training steps (one optimizer step each)")
    eval_every: int = option(10, "evaluate every N steps (0 = never)")

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_levels(self.levels)
        if not self.format_bonus < 1.0:  # a format alone must not pay as much as an answer
            raise InvalidInputError("format_bonus", f"must be < 1, got {self.format_bonus}")


# ------------------------------------------------------------------------------------------------
# The task


# Two solved problems shown as earlier turns of the chat: they show the answer format, and a
# one-line solution, to a model too small to follow the instruction alone. Level 1, default
# model, 32 problems x 4 samples at T = 1: with the instruction alone (as a user or a system
# message) 6-7% right and almost nothing boxed; with these turns 13% right and 56% boxed.
EXAMPLES = [
    ("Ann has 3 pens. She buys 2 more. How many pens does Ann have now?",
     "3 + 2 = 5. \\boxed{5}"),
    ("Ben has 9 cards. He loses 3. How many cards does Ben have now?",
     "9 - 3 = 6. \\boxed{6}"),
]


def question(text: str) -> str:
    return f"{text}\nGive the final answer as \\boxed{{N}}."


def score(reply: str, answer: str, format_bonus: float) -> tuple[float, bool]:
    """(reward, correct) of a reply to a problem whose answer is `answer`."""
    found = extract_answer(reply)
    correct = found is not None and normalize(found.text) == normalize(answer)
    boxed = found is not None and found.source == "boxed"
    return float(correct) + (format_bonus if boxed else 0.0), correct


def prompt_tokens(tokenizer: Any, problem: Problem) -> list[int]:
    messages: list[dict[str, str]] = []
    for example, solution in EXAMPLES:
        messages += [{"role": "user", "content": question(example)},
                     {"role": "assistant", "content": solution}]
    messages.append({"role": "user", "content": question(problem.question)})
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


class MathEnv:
    """One single-turn episode: a problem, one reply."""

    def __init__(self, tokenizer: Any, problem: Problem, prompt: list[int],
                 format_bonus: float) -> None:
        self.tokenizer, self.problem, self.prompt = tokenizer, problem, prompt
        self.format_bonus = format_bonus

    async def initial_observation(self) -> list[int]:
        return self.prompt

    async def step(self, action: list[int]) -> StepResult:
        reply = self.tokenizer.decode(action, skip_special_tokens=True)
        reward, correct = score(reply, self.problem.answer, self.format_bonus)
        return StepResult(reward=reward, episode_done=True, metrics={"correct": float(correct)})


@dataclass(frozen=True)
class MathGroup:
    problem: Problem
    group_size: int
    format_bonus: float
    tokenizer: Any

    async def make_envs(self) -> list[MathEnv]:
        prompt = prompt_tokens(self.tokenizer, self.problem)
        return [MathEnv(self.tokenizer, self.problem, prompt, self.format_bonus)
                for _ in range(self.group_size)]

    def logging_tag(self) -> str:
        return f"level{self.problem.level}" if self.problem.level else "math"


# ------------------------------------------------------------------------------------------------
# Data: which problems are trained on, which are held out


@dataclass(frozen=True)
class Problems:
    """Where training problems come from (`train_pool` for a fixed dataset, else the generator's
    train stream) and the held-out problems, which training never sees."""

    held_out: list[Problem]
    train_pool: list[Problem] | None = None


def load_problems(cfg: Config) -> Problems:
    if cfg.dataset == "gsm8k":
        train_set, test_set = load_gsm8k(cfg.gsm8k_path)
        return Problems(held_out=test_set[: cfg.eval_problems], train_pool=train_set)
    return Problems(held_out=held_out(cfg.seed, cfg.eval_problems, parse_levels(cfg.levels)))


class MathDataset:
    """Batch i is a deterministic function of (seed, i): a resumed run sees the same data.
    Generated problems that happen to equal a held-out one are skipped."""

    def __init__(self, problems: Problems, tokenizer: Any, cfg: Config) -> None:
        self.problems, self.tokenizer, self.cfg = problems, tokenizer, cfg
        self.levels = parse_levels(cfg.levels)
        self.excluded = {p.question for p in problems.held_out}

    def draw(self, rng: random.Random) -> Problem:
        if self.problems.train_pool is not None:
            return rng.choice(self.problems.train_pool)
        while True:
            p = problem_at(self.cfg.seed, "train", rng.randrange(1 << 40), self.levels)
            if p.question not in self.excluded:
                return p

    def get_batch(self, index: int) -> list[MathGroup]:
        rng = random.Random(f"{self.cfg.seed}-{index}")
        return [MathGroup(self.draw(rng), self.cfg.group_size, self.cfg.format_bonus,
                          self.tokenizer)
                for _ in range(self.cfg.groups_per_batch)]

    def __len__(self) -> int:
        return self.cfg.steps


def make_evaluator(problems: list[Problem], tokenizer: Any, cfg: Config) -> Any:
    """Held-out accuracy (right answers, the format bonus aside), overall and per level."""
    params = sampling_params(cfg, tokenizer)

    async def evaluate(client: Sampler, step: int) -> dict[str, float]:
        by_level: dict[int, list[float]] = defaultdict(list)

        async def one(problem: Problem) -> None:
            prompt = types.ModelInput.from_ints(prompt_tokens(tokenizer, problem))
            out = await client.sample_async(prompt, cfg.eval_samples, params)
            for s in out.sequences:
                reply = tokenizer.decode(s.tokens, skip_special_tokens=True)
                by_level[problem.level].append(float(score(reply, problem.answer, 0.0)[1]))

        async with anyio.create_task_group() as tg:
            for problem in problems:
                tg.start_soon(one, problem)
        every = [x for scores in by_level.values() for x in scores]
        metrics = {"eval/accuracy": sum(every) / len(every)}
        for level, scores in sorted(by_level.items()):
            if level:
                metrics[f"eval/accuracy/level{level}"] = sum(scores) / len(scores)
        return metrics

    return evaluate


# ------------------------------------------------------------------------------------------------
# The run, and evaluating a saved checkpoint (`mint-rl eval`)


def main(config: Config, log_dir: Path) -> None:
    tokenizer = load_tokenizer(config.base_model)
    problems = load_problems(config)
    train(config, MathDataset(problems, tokenizer, config), log_dir,
          evaluate=make_evaluator(problems.held_out, tokenizer, config))


def evaluate_checkpoint(config: Config, adapter_dir: Path) -> dict[str, float]:
    """The held-out evaluation of `main`, on the LoRA adapter saved in `adapter_dir`."""
    tokenizer = load_tokenizer(config.base_model)
    evaluate = make_evaluator(load_problems(config).held_out, tokenizer, config)
    client = SamplingClient(config.base_model, adapter_dir)
    return anyio.run(evaluate, client, 0)

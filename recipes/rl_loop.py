"""The reference RL loop: one synchronous RL step, top to bottom, on the public API only.

Read this first. It teaches SmolLM2-135M-Instruct single-digit addition (the arithmetic recipe's
task) with group-centered advantages and the PPO loss. Each step: make a sampling client of the
current weights, sample a group of answers per problem, score them, center the rewards within
each group, turn every answer into a Datum, run forward_backward + optim_step. No actors and no
overlap between sampling and training: `recipes/arithmetic.py` runs the same task on the async
actor pipeline, with evaluation, checkpoints and a live view.

    mint-rl run rl_loop [--steps 10]
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mint_rl as mint
from mint_rl import types
from mint_rl.models import DEFAULT_MODEL
from mint_rl.recipes.arithmetic import prompt_tokens, reward
from mint_rl.rl.data import batch_from_groups, center_per_group
from mint_rl.rl.types import Trajectory, TrajectoryGroup, Transition
from mint_rl.run.config import LossName, option
from mint_rl.run.metrics import MetricsLogger
from mint_rl.terminal import console


@dataclass(frozen=True)
class Config:
    base_model: str = option(DEFAULT_MODEL, "model id or local folder")
    steps: int = option(10, "RL steps")
    groups_per_batch: int = option(8, "problems per training step")
    group_size: int = option(8, "samples per problem (advantages are centered per group)")
    max_tokens: int = option(6, "reply length limit in tokens")
    temperature: float = option(1.0, "sampling temperature")
    loss: LossName = option("ppo", "policy-gradient loss")
    lr: float = option(1e-3, "Adam learning rate")
    rank: int = option(16, "LoRA rank")
    seed: int = option(0, "seed of problems and LoRA init")


def score(tokenizer: Any, problems: list[tuple[int, int]], prompts: list[list[int]],
          samples: list[list[types.SampledSequence]], policy_version: int,
          step: int) -> list[TrajectoryGroup]:
    """Each answer's reward; a problem's answers are a group of one-turn trajectories (the
    vocabulary every loop here shares: the pipeline's samplers make the same)."""
    groups = []
    for prompt, (a, b), sequences in zip(prompts, problems, samples, strict=True):
        turns = [Transition(observation=prompt, action=seq.tokens, logprobs=seq.logprobs,
                            policy_versions=[policy_version] * len(seq.tokens),
                            reward=reward(tokenizer.decode(seq.tokens, skip_special_tokens=True),
                                          a, b))
                 for seq in sequences]
        groups.append(TrajectoryGroup([Trajectory([t]) for t in turns], batch_index=step))
    return groups


def train(cfg: Config, log_dir: Path) -> list[dict[str, float]]:
    """Runs cfg.steps synchronous RL steps; returns (and logs) each step's metrics."""
    training = mint.ServiceClient().create_lora_training_client(
        cfg.base_model, rank=cfg.rank, seed=cfg.seed)
    tokenizer = training.get_tokenizer()
    params = types.SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                  stop_token_ids=[tokenizer.eos_token_id])
    # The learner actor's Adam eps (the API's default, 1e-12, is the seed's): the same task
    # trains the same way in this loop and in the pipeline.
    adam = types.AdamParams(learning_rate=cfg.lr, eps=1e-8)
    rng = random.Random(cfg.seed)
    logger = MetricsLogger(log_dir)
    history = []
    for step in range(cfg.steps):
        start = time.perf_counter()
        # 1. The current weights, pushed to vLLM: every token sampled below is policy `step`.
        sampler = training.save_weights_and_get_sampling_client()
        problems = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(cfg.groups_per_batch)]
        prompts = [prompt_tokens(tokenizer, a, b) for a, b in problems]

        # 2. Sample a group of answers per problem; the engine batches all requests together.
        futures = [sampler.sample(types.ModelInput.from_ints(p), cfg.group_size, params)
                   for p in prompts]
        samples = [future.result().sequences for future in futures]

        # 3. Score each answer: 1 if its first number is the sum.
        groups = score(tokenizer, problems, prompts, samples, sampler.policy_version, step)

        # 4. Advantages: each reward minus its group's mean.
        advantages = center_per_group([group.rewards for group in groups])

        # 5. One Datum per answer: prompt + answer tokens, the sampler's logprobs of the answer
        #    (the PPO ratio's denominator) and its advantage on every answer token. A group where
        #    every answer scored the same teaches nothing (all advantages 0): it is left out.
        batch = batch_from_groups(groups, advantages, skip_constant=True)

        # 6. Train: the gradient of the loss over the whole batch, then one Adam step. The step
        #    runs even with no datums, so that policy versions keep counting steps.
        metrics: dict[str, float] = {}
        if batch.datums:
            out = training.forward_backward(batch.datums, cfg.loss).result()
            metrics = {"loss/sum": out.loss,
                       "kl/sampler_learner": out.metrics.get("kl_sample_train:mean", 0.0)}
        training.optim_step(adam).result()

        row = {"step": step, "policy_version": sampler.policy_version, **batch.metrics,
               **metrics, "time/step": time.perf_counter() - start}
        logger.log(row)
        history.append(row)
        console.print(f"step {step}: reward {row['reward/mean']:.2f}, {len(batch.datums)} datums, "
                      f"{row['time/step']:.1f} s")
    logger.close()
    training.close()
    return history


def main(config: Config, log_dir: Path) -> None:
    train(config, log_dir)

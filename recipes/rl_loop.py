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

import mint_rl as mint
from mint_rl import types
from mint_rl.models import DEFAULT_MODEL
from mint_rl.recipes.arithmetic import prompt_tokens, reward
from mint_rl.rl.advantages import center_per_group, is_constant
from mint_rl.rl.config import LossName, option
from mint_rl.rl.data import trajectory_datum
from mint_rl.rl.metrics import MetricsLogger
from mint_rl.terminal import console


@dataclass(frozen=True)
class Config:
    base_model: str = option(DEFAULT_MODEL, "model id or local folder")
    steps: int = option(10, "RL steps")
    problems_per_step: int = option(8, "problems per step")
    samples_per_problem: int = option(8, "a group: its rewards are centered together")
    max_tokens: int = option(6, "reply length limit in tokens")
    temperature: float = option(1.0, "sampling temperature")
    loss: LossName = option("ppo", "policy-gradient loss")
    lr: float = option(1e-3, "Adam learning rate")
    rank: int = option(16, "LoRA rank")
    seed: int = option(0, "seed of problems and LoRA init")


def train(cfg: Config, log_dir: Path) -> list[dict[str, float]]:
    """Runs cfg.steps synchronous RL steps; returns (and logs) each step's metrics."""
    training = mint.ServiceClient().create_lora_training_client(
        cfg.base_model, rank=cfg.rank, seed=cfg.seed)
    tokenizer = training.get_tokenizer()
    params = types.SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                  stop_token_ids=[tokenizer.eos_token_id])
    adam = types.AdamParams(learning_rate=cfg.lr)
    rng = random.Random(cfg.seed)
    logger = MetricsLogger(log_dir)
    history = []
    for step in range(cfg.steps):
        start = time.perf_counter()
        # 1. The current weights, pushed to vLLM: every token sampled below is policy `step`.
        sampler = training.save_weights_and_get_sampling_client()
        problems = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(cfg.problems_per_step)]
        prompts = [prompt_tokens(tokenizer, a, b) for a, b in problems]

        # 2. Sample a group of answers per problem; the engine batches all requests together.
        futures = [sampler.sample(types.ModelInput.from_ints(p), cfg.samples_per_problem, params)
                   for p in prompts]
        groups = [future.result().sequences for future in futures]

        # 3. Score each answer: 1 if its first number is the sum.
        rewards = [[reward(tokenizer.decode(s.tokens, skip_special_tokens=True), a, b)
                    for s in group] for (a, b), group in zip(problems, groups, strict=True)]

        # 4. Advantages: each reward minus its group's mean. A group where every answer scored
        #    the same teaches nothing (all advantages 0), so it is left out.
        advantages = center_per_group(rewards)

        # 5. One Datum per answer: prompt + answer tokens, the sampler's logprobs of the answer
        #    (the PPO ratio's denominator) and its advantage on every answer token.
        datums = [trajectory_datum(prompt, seq.tokens, seq.logprobs, adv)
                  for prompt, group, group_rewards, group_advantages
                  in zip(prompts, groups, rewards, advantages, strict=True)
                  if not is_constant(group_rewards)
                  for seq, adv in zip(group, group_advantages, strict=True)]

        # 6. Train: the gradient of the loss over the whole batch, then one Adam step. The step
        #    runs even with no datums, so that policy versions keep counting steps.
        metrics: dict[str, float] = {}
        if datums:
            out = training.forward_backward(datums, cfg.loss).result()
            metrics = {"loss/sum": out.loss,
                       "kl/sampler_learner": out.metrics.get("kl_sample_train:mean", 0.0)}
        training.optim_step(adam).result()

        row = {"step": step, "policy_version": sampler.policy_version,
               "reward/mean": sum(map(sum, rewards)) / sum(map(len, rewards)),
               "datums": len(datums), **metrics, "time/step": time.perf_counter() - start}
        logger.log(row)
        history.append(row)
        console.print(f"step {step}: reward {row['reward/mean']:.2f}, {len(datums)} datums, "
                      f"{row['time/step']:.1f} s")
    logger.close()
    training.close()
    return history


def main(config: Config, log_dir: Path) -> None:
    train(config, log_dir)


if __name__ == "__main__":  # vLLM's engine process is spawned: keep this guard
    import sys

    from mint_rl.cli import main as cli_main

    sys.exit(cli_main(["run", "rl_loop", *sys.argv[1:]]))

"""Arithmetic RL: SmolLM2-135M-Instruct learns to answer small additions.

The prompt: "What is 3 + 4? Reply with just the number."

Reward 1 when the first number in the reply is the sum, else 0. Advantages are rewards centered
per group of samples of the same problem (GRPO without std normalisation). Held-out problems are
evaluated before and during training.

    mint-rl run arithmetic [--steps 30] [--loss ppo] [--log-dir runs/arith] [--lr 1e-3] ...

This version runs the synchronous on-policy loop (sample with the current weights, train, repeat),
written against the MinT / Tinker API only; `--max-steps-off-policy` > 0 needs the async actor
pipeline and is rejected for now.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import mint_rl as mint
from mint_rl import types
from mint_rl.models import DEFAULT_MODEL
from mint_rl.rl.advantages import center_per_group, is_constant
from mint_rl.rl.data import trajectory_datum
from mint_rl.rl.metrics import MetricsLogger, plot_metrics

console = Console()


@dataclass(frozen=True)
class Config:
    base_model: str = DEFAULT_MODEL
    steps: int = 30
    loss: str = "ppo"
    lr: float = 1e-3
    rank: int = 16
    group_size: int = 8
    groups_per_batch: int = 8
    max_tokens: int = 6
    temperature: float = 1.0
    max_operand: int = 9
    eval_every: int = 5
    eval_samples: int = 4
    save_every: int = 10
    seed: int = 0


# ------------------------------------------------------------------------------------------------
# The task


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}? Reply with just the number."


def reward(reply: str, a: int, b: int) -> float:
    match = re.search(r"-?\d+", reply)
    return 1.0 if match is not None and int(match.group()) == a + b else 0.0


def split_problems(max_operand: int, seed: int) -> tuple[list[tuple[int, int]], list]:
    """All pairs, 30% held out for evaluation (never trained on)."""
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed).shuffle(pairs)
    n_eval = max(1, int(0.3 * len(pairs)))
    return pairs[n_eval:], pairs[:n_eval]


def prompt_tokens(tokenizer, a: int, b: int) -> list[int]:
    messages = [{"role": "user", "content": question(a, b)}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


# ------------------------------------------------------------------------------------------------
# One synchronous RL step, top to bottom


def sample_groups(sampler, tokenizer, problems, cfg: Config, n: int):
    params = types.SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                  stop_token_ids=[tokenizer.eos_token_id])
    prompts = [prompt_tokens(tokenizer, a, b) for a, b in problems]
    futures = [sampler.sample(types.ModelInput.from_ints(p), n, params) for p in prompts]
    groups = []
    for (a, b), prompt, future in zip(problems, prompts, futures, strict=True):
        sequences = future.result().sequences
        rewards = [reward(tokenizer.decode(s.tokens, skip_special_tokens=True), a, b)
                   for s in sequences]
        groups.append((prompt, sequences, rewards))
    return groups


def evaluate(sampler, tokenizer, problems, cfg: Config) -> float:
    groups = sample_groups(sampler, tokenizer, problems, cfg, cfg.eval_samples)
    scores = [r for _, _, rewards in groups for r in rewards]
    return sum(scores) / len(scores)


def build_datums(groups) -> tuple[list[types.Datum], int]:
    rewards = [rw for _, _, rw in groups]
    advantages = center_per_group(rewards)
    datums, skipped = [], 0
    for (prompt, sequences, group_rewards), group_adv in zip(groups, advantages, strict=True):
        if is_constant(group_rewards):
            skipped += 1  # zero advantage everywhere: no gradient, skip the compute
            continue
        for seq, adv in zip(sequences, group_adv, strict=True):
            if seq.tokens:
                datums.append(trajectory_datum(prompt, seq.tokens, seq.logprobs, adv))
    return datums, skipped


def parse_options(extra: list[str], run_args) -> Config:
    p = argparse.ArgumentParser(prog="mint-rl run arithmetic")
    d = Config()
    p.add_argument("--base-model", default=d.base_model)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--group-size", type=int, default=d.group_size)
    p.add_argument("--groups-per-batch", type=int, default=d.groups_per_batch)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--max-operand", type=int, default=d.max_operand)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    o = p.parse_args(extra)
    return Config(base_model=o.base_model, steps=run_args.steps or d.steps,
                  loss=run_args.loss or d.loss, lr=o.lr, rank=o.rank, group_size=o.group_size,
                  groups_per_batch=o.groups_per_batch, max_tokens=o.max_tokens,
                  temperature=o.temperature, max_operand=o.max_operand,
                  eval_every=o.eval_every, save_every=o.save_every, seed=run_args.seed)


def main(run_args, extra: list[str]) -> int:
    cfg = parse_options(extra, run_args)
    if run_args.max_steps_off_policy != 0:
        raise SystemExit("arithmetic: --max-steps-off-policy > 0 needs the async pipeline, "
                         "which is not built yet; use 0 (synchronous)")
    log_dir = run_args.log_dir or Path("runs") / f"arithmetic-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "config.json").write_text(json.dumps(cfg.__dict__, indent=2))
    train_set, eval_set = split_problems(cfg.max_operand, cfg.seed)
    rng = random.Random(cfg.seed)

    service = mint.ServiceClient()
    start_step = 0
    checkpoints = log_dir / "checkpoints.jsonl"
    if checkpoints.exists():  # resume: the last saved state, and the step after it
        last = json.loads(checkpoints.read_text().splitlines()[-1])
        tc = service.create_training_client_from_state_with_optimizer(last["state_path"])
        start_step = last["step"]
        rng.seed(f"{cfg.seed}-{start_step}")
        console.print(f"resumed from {last['state_path']} at step {start_step}")
    else:
        tc = service.create_lora_training_client(cfg.base_model, rank=cfg.rank, seed=cfg.seed)
    tokenizer = tc.get_tokenizer()
    logger = MetricsLogger(log_dir)
    adam = types.AdamParams(learning_rate=cfg.lr, eps=1e-8)
    run_start = time.perf_counter()

    console.print(f"[bold]arithmetic[/] on {cfg.base_model}: {cfg.steps} steps x "
                  f"{cfg.groups_per_batch} problems x {cfg.group_size} samples, loss={cfg.loss}, "
                  f"lr={cfg.lr}; logging to {log_dir}")
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=cfg.steps, completed=start_step, status="")
        for step in range(start_step, cfg.steps + 1):
            t0 = time.perf_counter()
            sampler = tc.save_weights_and_get_sampling_client()
            metrics: dict = {"step": step}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics["eval/accuracy"] = evaluate(sampler, tokenizer, eval_set, cfg)
            if step == cfg.steps:  # the last iteration only evaluates the final weights
                metrics["time/elapsed"] = time.perf_counter() - run_start
                logger.log(metrics)
                break
            problems = [rng.choice(train_set) for _ in range(cfg.groups_per_batch)]
            t_sample = time.perf_counter()
            groups = sample_groups(sampler, tokenizer, problems, cfg, cfg.group_size)
            sample_wait = time.perf_counter() - t_sample
            datums, skipped = build_datums(groups)
            t_train = time.perf_counter()
            if datums:
                fb = tc.forward_backward(datums, cfg.loss)
                optim = tc.optim_step(adam)
                fb_out, optim_out = fb.result(), optim.result()
                metrics["kl/sampler_learner"] = fb_out.metrics.get("kl_sample_train:mean")
                metrics["loss/sum"] = fb_out.loss
                metrics["optim/grad_norm"] = (optim_out.metrics or {}).get("grad_norm:mean")
            rewards = [r for _, _, rw in groups for r in rw]
            metrics.update({
                "reward/mean": sum(rewards) / len(rewards),
                "groups/skipped_constant": skipped,
                "datums": len(datums),
                "staleness/max": 0,
                "staleness/mean": 0.0,
                "time/sample_wait": sample_wait,
                "time/train": time.perf_counter() - t_train,
                "time/step": time.perf_counter() - t0,
                "time/elapsed": time.perf_counter() - run_start,
            })
            logger.log(metrics)
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                saved = tc.save_state(f"step-{step + 1:06d}", overwrite=True).result()
                with checkpoints.open("a") as f:
                    f.write(json.dumps({"step": step + 1, "state_path": saved.path}) + "\n")
            status = f"reward {metrics['reward/mean']:.2f}"
            if "eval/accuracy" in metrics:
                status += f" | eval acc {metrics['eval/accuracy']:.2f}"
            progress.update(task, advance=1, status=status)
    logger.close()
    plot = plot_metrics(logger.path, log_dir / "curves.png",
                        ["eval/accuracy", "reward/mean", "kl/sampler_learner", "time/step"],
                        title=f"arithmetic, {cfg.base_model}, loss={cfg.loss}")
    rows = [json.loads(x) for x in logger.path.read_text().splitlines()]
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    console.print("eval accuracy by step: " + ", ".join(f"{s}: {a:.2f}" for s, a in evals))
    console.print(f"metrics: {logger.path}  plot: {plot}")
    return 0

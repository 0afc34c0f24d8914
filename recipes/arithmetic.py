"""Arithmetic RL: SmolLM2-135M-Instruct learns to answer small additions.

The prompt: "What is 3 + 4? Reply with just the number." Reward 1 when the first number in the
reply is the sum, else 0. Each problem is sampled `group_size` times; advantages are rewards
centered per group (GRPO without std normalisation). Held-out problems (never trained on) are
evaluated before, during and after training.

    mint-rl run arithmetic [--steps 30] [--max-steps-off-policy 1] [--loss ppo] [--log-dir DIR]

Runs on the actor pipeline (actors/pipeline.py): a vLLM sampler actor, the advantage actor and a
torch + peft learner actor. Running the same command with the same --log-dir resumes from the
last checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from mint_rl import types
from mint_rl.actors.advantage import AdvantageActor
from mint_rl.actors.learner import LearnerActor, LearnerConfig
from mint_rl.actors.pipeline import PipelineConfig, PipelineState, run_pipeline
from mint_rl.actors.reference import ReferenceActor
from mint_rl.actors.sampler import SamplerActor
from mint_rl.models import DEFAULT_MODEL
from mint_rl.rl.display import RunDisplay
from mint_rl.rl.metrics import MetricsLogger, plot_metrics
from mint_rl.rl.types import StepResult
from mint_rl.runtime import open_system
from mint_rl.terminal import StartupTimeline, console


@dataclass(frozen=True)
class Config:
    base_model: str = DEFAULT_MODEL
    steps: int = 30
    max_steps_off_policy: int = 0
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
    learner_dtype: str = "float32"
    learner_threads: int | None = None  # torch threads of the learner (None = torch default)
    kl_coef: float = 0.0  # > 0: per-token KL penalty against the base model (ReferenceActor)
    cpus: str = "auto"  # CPU cores: shared by sampler and learner, split, or auto (split if K>0)
    seed: int = 0


# ------------------------------------------------------------------------------------------------
# The task


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}? Reply with just the number."


def reward(reply: str, a: int, b: int) -> float:
    match = re.search(r"-?\d+", reply)
    return 1.0 if match is not None and int(match.group()) == a + b else 0.0


def split_problems(max_operand: int, seed: int) -> tuple[list[tuple[int, int]], list]:
    """All pairs, 30% held out for evaluation."""
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed).shuffle(pairs)
    n_eval = max(1, int(0.3 * len(pairs)))
    return pairs[n_eval:], pairs[:n_eval]


def prompt_tokens(tokenizer, a: int, b: int) -> list[int]:
    messages = [{"role": "user", "content": question(a, b)}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


class AdditionEnv:
    """One single-turn episode."""

    def __init__(self, tokenizer, a: int, b: int, prompt: list[int]) -> None:
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
    tokenizer: object

    async def make_envs(self) -> list[AdditionEnv]:
        prompt = prompt_tokens(self.tokenizer, self.a, self.b)
        return [AdditionEnv(self.tokenizer, self.a, self.b, prompt)
                for _ in range(self.group_size)]

    def logging_tag(self) -> str:
        return "addition"


class AdditionDataset:
    """Batch i is a deterministic function of (seed, i): a resumed run sees the same data."""

    def __init__(self, problems, tokenizer, cfg: Config) -> None:
        self.problems, self.tokenizer, self.cfg = problems, tokenizer, cfg

    def get_batch(self, index: int) -> list[AdditionGroup]:
        rng = random.Random(f"{self.cfg.seed}-{index}")
        return [AdditionGroup(*rng.choice(self.problems), self.cfg.group_size, self.tokenizer)
                for _ in range(self.cfg.groups_per_batch)]

    def __len__(self) -> int:
        return self.cfg.steps


def sampling_params(cfg: Config, tokenizer) -> types.SamplingParams:
    return types.SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                stop_token_ids=[tokenizer.eos_token_id])


def make_evaluator(problems, tokenizer, cfg: Config):
    params = sampling_params(cfg, tokenizer)

    async def evaluate(client, step: int) -> dict[str, float]:
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


# ------------------------------------------------------------------------------------------------
# Wiring


async def train(cfg: Config, log_dir: Path,
                timeline: StartupTimeline | None = None) -> PipelineState:
    from transformers import AutoTokenizer

    from mint_rl.learner.engine import LearnerSettings
    from mint_rl.models import resolve_model
    from mint_rl.placement import plan_cpus
    from mint_rl.sampler import EngineConfig

    timeline = timeline or StartupTimeline()
    timeline.mark("imports done")
    # The first run after set-up may still dequantize the bundled model here.
    with timeline.waiting(f"resolving {cfg.base_model}"):
        model_dir = await anyio.to_thread.run_sync(resolve_model, cfg.base_model)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    timeline.mark("model files and tokenizer ready")
    train_set, eval_set = split_problems(cfg.max_operand, cfg.seed)
    checkpoints = log_dir / "checkpoints.jsonl"
    resume_from, start_step = None, 0
    if checkpoints.exists():
        last = json.loads(checkpoints.read_text().splitlines()[-1])
        resume_from, start_step = last["state_path"], last["step"]
        console.print(f"resuming from {resume_from} at step {start_step}")
    if start_step >= cfg.steps:
        console.print(f"{log_dir} already holds all {cfg.steps} steps")
        return PipelineState(step=start_step)

    params = sampling_params(cfg, tokenizer)
    cpus = plan_cpus(cfg.max_steps_off_policy, cfg.cpus)
    engine_cfg = EngineConfig(cpu_cores=cpus.sampler_cores())
    learner_settings = LearnerSettings(dtype=cfg.learner_dtype, num_threads=cfg.learner_threads,
                                       cpu_cores=cpus.learner_cores())
    learner_cfg = LearnerConfig(base_model=cfg.base_model, rank=cfg.rank, seed=cfg.seed,
                                loss=cfg.loss, learning_rate=cfg.lr, resume_from=resume_from,
                                settings=learner_settings)
    pipeline_cfg = PipelineConfig(steps=cfg.steps, groups_per_batch=cfg.groups_per_batch,
                                  max_steps_off_policy=cfg.max_steps_off_policy,
                                  start_step=start_step, eval_every=cfg.eval_every,
                                  save_every=cfg.save_every)
    logger = MetricsLogger(log_dir, start_step=start_step)
    state = PipelineState()
    run_start = time.perf_counter()

    def on_step(metrics: dict) -> None:
        metrics["time/elapsed"] = time.perf_counter() - run_start
        logger.log(metrics)
        display.update(metrics, state)

    def on_checkpoint(step: int, path: str) -> None:
        with checkpoints.open("a") as f:
            f.write(json.dumps({"step": step, "state_path": path}) + "\n")

    title = f"arithmetic · {cfg.base_model} · loss={cfg.loss} · K={cfg.max_steps_off_policy}"
    # Shutting an engine down cleanly takes a few seconds (its processes exit in order).
    async with open_system(teardown_timeout=60) as system:
        actors: dict[str, Any] = {}

        async def start(name: str, factory: Any, device: str, done: str) -> None:
            actors[name] = await system.spawn(factory, name=name, device=device)
            timeline.mark(done)

        # The vLLM engine and the learner's model load at the same time.
        with timeline.waiting("starting the vLLM sampler and the learner"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(start, "sampler", functools.partial(
                    SamplerActor, cfg.base_model, params, engine_cfg), "sampler",
                    "vLLM sampler ready")
                tg.start_soon(start, "learner", functools.partial(LearnerActor, learner_cfg),
                              "learner", f"learner ready (LoRA r{cfg.rank}, {cfg.learner_dtype})")
                if cfg.kl_coef > 0:
                    tg.start_soon(start, "reference", functools.partial(
                        ReferenceActor, cfg.base_model, learner_settings), "learner",
                        "reference model ready")
        advantage = await system.spawn(
            functools.partial(AdvantageActor, kl_coef=cfg.kl_coef,
                              reference=actors.get("reference")), name="advantage")
        with RunDisplay(title, cfg.steps, start_step) as display:
            display.status("training")
            await run_pipeline(pipeline_cfg, AdditionDataset(train_set, tokenizer, cfg),
                               actors["sampler"], advantage, actors["learner"], on_step=on_step,
                               evaluate=make_evaluator(eval_set, tokenizer, cfg),
                               on_checkpoint=on_checkpoint, state=state, timeline=timeline)
        timeline.save(log_dir / "startup.json")
        with timeline.waiting("shutting down the sampler and the learner"):
            await system.shutdown()
    logger.close()
    return state


def parse_options(extra: list[str], run_args) -> Config:
    p = argparse.ArgumentParser(prog="mint-rl run arithmetic",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Config()
    p.add_argument("--base-model", default=d.base_model,
                   help="model id or local folder")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="Adam learning rate")
    p.add_argument("--rank", type=int, default=d.rank,
                   help="LoRA rank")
    p.add_argument("--group-size", type=int, default=d.group_size,
                   help="samples per problem (advantages are centered per group)")
    p.add_argument("--groups-per-batch", type=int, default=d.groups_per_batch,
                   help="problems per training step")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help="reply length limit in tokens")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="sampling temperature")
    p.add_argument("--max-operand", type=int, default=d.max_operand,
                   help="largest operand of the additions")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="evaluate held-out accuracy every N steps (0 = never)")
    p.add_argument("--eval-samples", type=int, default=d.eval_samples,
                   help="samples per held-out problem")
    p.add_argument("--save-every", type=int, default=d.save_every,
                   help="checkpoint every N steps (resumable)")
    p.add_argument("--learner-dtype", choices=["float32", "bfloat16"], default=d.learner_dtype,
                   help="bfloat16 autocasts the learner (faster on AMX/GPU; the probe stays fp32)")
    p.add_argument("--learner-threads", type=int, default=d.learner_threads,
                   help="torch threads for the learner (default: one per core it may use)")
    p.add_argument("--kl-coef", type=float, default=d.kl_coef,
                   help="per-token KL penalty against the base model (0 = off)")
    p.add_argument("--cpus", choices=["auto", "shared", "split"], default=d.cpus,
                   help="CPU cores of sampler and learner: shared, split in halves, or auto "
                        "(split when K > 0, so overlapping phases do not compete)")
    o = p.parse_args(extra)
    return Config(base_model=o.base_model, steps=run_args.steps or d.steps,
                  max_steps_off_policy=run_args.max_steps_off_policy,
                  loss=run_args.loss or d.loss, lr=o.lr, rank=o.rank, group_size=o.group_size,
                  groups_per_batch=o.groups_per_batch, max_tokens=o.max_tokens,
                  temperature=o.temperature, max_operand=o.max_operand,
                  eval_every=o.eval_every, eval_samples=o.eval_samples,
                  save_every=o.save_every, learner_dtype=o.learner_dtype,
                  learner_threads=o.learner_threads, kl_coef=o.kl_coef, cpus=o.cpus,
                  seed=run_args.seed)


def main(run_args, cfg: Config) -> int:
    log_dir = run_args.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    console.print(f"[bold]arithmetic[/]: {cfg.steps} steps x {cfg.groups_per_batch} problems x "
                  f"{cfg.group_size} samples, loss={cfg.loss}, lr={cfg.lr}, "
                  f"K={cfg.max_steps_off_policy}; logging to {log_dir}")
    anyio.run(train, cfg, log_dir, run_args.timeline)
    metrics = log_dir / "metrics.jsonl"
    plot = plot_metrics(metrics, log_dir / "curves.png",
                        ["eval/accuracy", "reward/mean", "kl/sampler_learner",
                         "staleness/max", "time/step"],
                        title=f"arithmetic · {cfg.base_model} · loss={cfg.loss} · "
                              f"K={cfg.max_steps_off_policy}")
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    console.print("eval accuracy by step: " + ", ".join(f"{s}: {a:.2f}" for s, a in evals))
    console.print(f"metrics: {metrics}  plot: {plot}  tensorboard: {log_dir / 'tensorboard'}")
    return 0


if __name__ == "__main__":  # vLLM's engine process is spawned: keep this guard
    import sys

    from mint_rl.cli import main as cli_main

    sys.exit(cli_main(["run", "arithmetic", *sys.argv[1:]]))

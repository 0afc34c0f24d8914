"""RL step benchmark: mint_rl's actor pipeline (K=0 and K=1) against TRL's GRPOTrainer, same batch.

SmolLM2-135M-Instruct, LoRA rank 16 on every linear layer, 8 prompts x 4 samples, T=1, on CPU.
Two workload shapes (`--shape`): `arithmetic`, additions that ask for step-by-step reasoning with
at most 16 new tokens (so EOS rarely stops a sample early), and `math256`, the math recipe's
word problems with up to 256. Each system's generated tokens are recorded. The reward (the same
for both) is 1 when the answer appears in the reply, plus 0.001 per character, so a group's
rewards almost never tie and every sample is trained on.

    .venv/bin/python bench/bench_rl.py [--shape arithmetic] [--invocations 3] [--steps 5]
        [--warmup 1] [--systems ...] [--trl-python /work/trl-venv/bin/python] [--name NAME]

Every system runs in its own fresh child process, one after the other; one invocation runs each
system once, and the invocations follow each other, so a slow spell of this VM hits every system
of that invocation, not one system's every run. The first `--warmup` steps of each child are not
measured, for both systems alike. Raw per-step times (and each step split into sampling and
training) go to bench/results/NAME.json after each child; `bench/doc_tables.py` makes the tables
of docs/rl_bench.md and the README from it: per system the median step of each invocation, their
median and range, and the speed-up over TRL at its fastest (the candidate with the lowest median
that sitting).

Like with like: TRL's step is on-policy, so mint_rl's K=0 is its like-for-like peer; K=1 (one
step off-policy) is what asynchrony adds. mint_rl runs as `mint-rl run --cpus auto` places it:
K=0 with both cores shared by the sampler and the learner, K=1 with one core each
(mint_rl/placement.py). TRL runs in its own virtual environment (it must not be installed into
the project's): `python3 -m venv /work/trl-venv && /work/trl-venv/bin/pip install torch==2.13.0
'transformers<5.20' peft trl==1.16.0 datasets`; its vLLM modes do not run on this CPU
(docs/rl_bench.md says why), so it generates with transformers' `generate`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
RANK, LEARNING_RATE = 16, 1e-4
PROMPTS_PER_STEP, SAMPLES = 8, 4
# Workload shapes: the problems and the most new tokens a sample may have. "arithmetic": short
# replies after shared chat prompts (where mint_rl's prompt sharing helps most); "math256":
# the math recipe's word problems (recipes/math_problems.py, level 3), replies of up to 256
# tokens (where training the completions dominates the step).
SHAPES = {"arithmetic": 16, "math256": 256}
RESULT = "BENCH_RESULT "  # prefix of the one JSON line a child prints

# mint_rl's systems: K, CPU placement, (sampler dtype, learner dtype). The fp32 rows are the
# default; the bf16 ones (vLLM in bf16, the learner autocast to bf16, the importance ratio
# correcting what they disagree on) are there to be asked for with --systems.
MINT_SYSTEMS = {
    "mint_rl K=0": (0, "shared", ("float32", "float32")),
    "mint_rl K=1": (1, "split", ("float32", "float32")),
    "mint_rl K=0 bf16": (0, "shared", ("bfloat16", "bfloat16")),
    "mint_rl K=1 bf16": (1, "split", ("bfloat16", "bfloat16")),
}

# TRL's candidates for "at its fastest": GRPOConfig as shipped (bf16 autocast, gradient
# checkpointing on), and each of the two switched off. Which is fastest depends on the CPU (bf16
# is emulated without avx512_bf16/AMX; checkpointing trades a recomputed forward for memory), so
# it is measured every sitting rather than assumed.
TRL_SETTINGS = {
    "TRL defaults": {},
    "TRL fp32": {"bf16": False},
    "TRL fp32 no checkpointing": {"bf16": False, "gradient_checkpointing": False},
    "TRL no checkpointing": {"gradient_checkpointing": False},
}
DEFAULT_SYSTEMS = ["mint_rl K=0", "mint_rl K=1", *TRL_SETTINGS]


# ------------------------------------------------------------------------------------------------
# The task (shared by both systems)


def reward(reply: str, answer: str) -> float:
    correct = answer in re.findall(r"-?\d+", reply)
    return float(correct) + 0.001 * len(reply)


def problems(shape: str, n: int) -> list[tuple[str, str]]:
    """n (question, answer) pairs of the shape: the same list for both systems."""
    if shape == "math256":
        from mint_rl.recipes.math import question
        from mint_rl.recipes.math_problems import problem_at

        return [(question(p.question), p.answer)
                for p in (problem_at(0, "bench", i, (3,)) for i in range(n))]
    rng = random.Random(0)
    pairs = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(n)]
    return [(f"What is {a} + {b}? Explain your reasoning step by step, then give the answer.",
             str(a + b)) for a, b in pairs]


# ------------------------------------------------------------------------------------------------
# mint_rl (child process, project venv)


def mint_child(args) -> dict:
    import anyio

    return anyio.run(_mint_main, args)


async def _mint_main(args) -> dict:
    import functools

    from transformers import AutoTokenizer

    from mint_rl import types
    from mint_rl.actors.advantage import AdvantageActor
    from mint_rl.actors.learner import LearnerActor, LearnerConfig
    from mint_rl.actors.pipeline import PipelineConfig, RLPipeline
    from mint_rl.actors.sampler import SamplerActor
    from mint_rl.learner.engine import LearnerSettings
    from mint_rl.models import resolve_model
    from mint_rl.placement import plan_cpus
    from mint_rl.process_memory import engine_memory_metrics
    from mint_rl.rl.types import StepResult
    from mint_rl.runtime import open_system
    from mint_rl.sampler import EngineConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    generated: list[int] = []  # tokens of every sampled reply (envs run in this process)

    class Env:
        def __init__(self, answer: str, prompt: list[int]) -> None:
            self.answer, self.prompt = answer, prompt

        async def initial_observation(self) -> list[int]:
            return self.prompt

        async def step(self, action: list[int]) -> StepResult:
            generated.append(len(action))
            reply = tokenizer.decode(action, skip_special_tokens=True)
            return StepResult(reward=reward(reply, self.answer), episode_done=True)

    class Group:
        def __init__(self, text: str, answer: str) -> None:
            self.text, self.answer = text, answer

        async def make_envs(self) -> list[Env]:
            prompt = list(tokenizer.apply_chat_template(
                [{"role": "user", "content": self.text}],
                add_generation_prompt=True, tokenize=True, return_dict=False))
            return [Env(self.answer, prompt) for _ in range(SAMPLES)]

        def logging_tag(self) -> str:
            return args.shape

    pool = json.loads(Path(args.problems).read_text())

    class Dataset:
        def get_batch(self, index: int) -> list[Group]:
            return [Group(*pool[(index * PROMPTS_PER_STEP + i) % len(pool)])
                    for i in range(PROMPTS_PER_STEP)]

        def __len__(self) -> int:
            return 10**6

    params = types.SamplingParams(max_tokens=SHAPES[args.shape], temperature=1.0,
                                  stop_token_ids=[tokenizer.eos_token_id])
    cpus = plan_cpus(args.k, args.cpus)
    sampler_dtype, learner_dtype = args.dtypes
    settings = LearnerSettings(dtype=learner_dtype, cpu_cores=cpus.learner_cores())
    engine_cfg = EngineConfig(cpu_cores=cpus.sampler_cores(), dtype=sampler_dtype)
    learner_cfg = LearnerConfig(base_model=args.model, rank=RANK, seed=0, loss="ppo",
                                learning_rate=LEARNING_RATE, settings=settings)
    rows: list[dict] = []

    def on_step(m: dict) -> None:
        m["time/wall"] = time.perf_counter()
        m |= engine_memory_metrics()
        rows.append(m)
        log(f"[{args.system}] step {m['step']}: {m['time/step']:.2f} s (sample_wait "
            f"{m['time/sample_wait']:.2f}, train {m['time/train']:.2f}, save "
            f"{m['time/save_weights']:.2f}, load {m['time/load_weights']:.2f})")

    async with open_system() as system:
        sampler = await system.spawn(functools.partial(SamplerActor, args.model, params,
                                                       engine_cfg),
                                     name="sampler", device="sampler")
        learner = await system.spawn(functools.partial(LearnerActor, learner_cfg),
                                     name="learner", device="learner")
        advantage = await system.spawn(AdvantageActor, name="advantage")
        cfg = PipelineConfig(steps=args.steps, groups_per_batch=PROMPTS_PER_STEP,
                             max_steps_off_policy=args.k)
        t_start = time.perf_counter()
        await RLPipeline(cfg, Dataset(), [sampler], learner, advantage.build,
                         on_step=on_step).run()
    return {"rows": rows, "t_start": t_start, "warmup": args.warmup,
            "tokens_mean": sum(generated) / max(len(generated), 1)}


def summarize_mint(run: dict) -> dict:
    """Per measured step: its wall-clock seconds (between consecutive step ends: what a user
    waits for, overlap included) and its phases."""
    rows, w = run["rows"], run["warmup"]
    ends = [run["t_start"]] + [r["time/wall"] for r in rows]
    return {"steps": [{"seconds": ends[i + 1] - ends[i], "sample_wait": r["time/sample_wait"],
                       "train": r["time/train"], "save_weights": r["time/save_weights"],
                       "load_weights": r["time/load_weights"], "datums": r.get("datums")}
                      for i, r in enumerate(rows)][w:],
            "tokens_mean": run["tokens_mean"],
            # GiB: the learner's process (the child) and the vLLM engine process, at their peaks.
            "peak_rss_gib": max(r.get("memory/learner_peak_rss_gib", 0.0) for r in rows),
            "engine_peak_rss_gib": max(r.get("memory/engine_peak_rss_gib", 0.0) for r in rows)}


# ------------------------------------------------------------------------------------------------
# TRL (child process, its own venv)


def trl_child(args) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from results import proc_status  # stdlib only: this child runs in TRL's own venv
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    pool = json.loads(Path(args.problems).read_text())
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": text}], "answer": answer}
                              for text, answer in pool])

    def answer_reward(completions, answer, **_) -> list[float]:
        return [reward(c[0]["content"] if isinstance(c, list) else c, a)
                for c, a in zip(completions, answer, strict=True)]

    steps: list[dict] = []
    generating = [0.0]  # seconds in this step's generation and scoring

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict] = []
            self._t = 0.0

        def on_step_begin(self, *_, **__):
            generating[0] = 0.0
            self._t = time.perf_counter()

        def on_step_end(self, *_, **__):
            seconds = time.perf_counter() - self._t
            steps.append({"seconds": seconds, "sampling": generating[0],
                          "training": seconds - generating[0]})
            log(f"[{args.system}] step {len(steps)}: {seconds:.2f} s "
                f"(sampling {generating[0]:.2f})")

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs:
                self.logs.append(dict(logs))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * SAMPLES,
            gradient_accumulation_steps=1, num_generations=SAMPLES,
            max_completion_length=SHAPES[args.shape], temperature=1.0, learning_rate=LEARNING_RATE,
            max_steps=args.steps, logging_steps=1, save_strategy="no", report_to="none",
            use_cpu=True, use_vllm=False, seed=0, dataloader_num_workers=0,
            **TRL_SETTINGS[args.system],
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=answer_reward, args=config, train_dataset=data,
            processing_class=tokenizer, callbacks=[timer],
            peft_config=LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                                   target_modules="all-linear", task_type="CAUSAL_LM"),
        )
        # Sampling = TRL's generation and scoring of the batch (generate, decode, rewards,
        # advantages); training = the rest of the step (forward, backward, optimizer step).
        generate_and_score = trainer._generate_and_score_completions

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return generate_and_score(*a, **kw)
            finally:
                generating[0] += time.perf_counter() - t

        trainer._generate_and_score_completions = timed
        trainer.train()
    lengths = [x["completions/mean_length"] for x in timer.logs if "completions/mean_length" in x]
    return {"steps": steps[args.warmup:],
            "tokens_mean": statistics.mean(lengths[args.warmup:] or lengths or [float("nan")]),
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "torch": torch.__version__},
            "torch_threads": torch.get_num_threads(),
            # GiB: generation and training both in this process.
            "peak_rss_gib": proc_status().get("VmHWM", 0) / 2**30,
            "gradient_checkpointing": config.gradient_checkpointing, "bf16": config.bf16}


# ------------------------------------------------------------------------------------------------
# Orchestration


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def run_child(cmd: list[str], timeout: float = 1800) -> dict:
    log(f"running: {' '.join(cmd[1:])}  (load {os.getloadavg()[0]:.2f})")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout,
                          cwd=Path(__file__).parent.parent)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"{cmd[1:]} exited {proc.returncode} without a result")


def child_command(system: str, args, here: str, problems_file: str) -> list[str]:
    common = ["--system", system, "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--shape", args.shape, "--problems", problems_file]
    if system in MINT_SYSTEMS:
        return [sys.executable, here, "--child", *common, "--model", args.model]
    from mint_rl.models import resolve_model  # TRL's child reads the local copy by its path

    return [args.trl_python, here, "--child", *common, "--model", str(resolve_model(args.model))]


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default=MODEL)
    p.add_argument("--invocations", type=int, default=3, help="times every system runs")
    p.add_argument("--steps", type=int, default=5, help="steps per child, warm-up included")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma-separated, of {[*MINT_SYSTEMS, *TRL_SETTINGS]}")
    p.add_argument("--shape", default="arithmetic", choices=list(SHAPES))
    p.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    p.add_argument("--name", help="the result file: bench/results/NAME.json "
                                  "(default: rl_step_SHAPE)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--problems", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(MINT_SYSTEMS) - set(TRL_SETTINGS)
    if unknown:
        p.error(f"--systems: unknown {sorted(unknown)}, choose from "
                f"{[*MINT_SYSTEMS, *TRL_SETTINGS]}")

    if args.child:
        if args.system in MINT_SYSTEMS:
            args.k, args.cpus, args.dtypes = MINT_SYSTEMS[args.system]
            result = summarize_mint(mint_child(args))
        else:
            result = trl_child(args)
        print(RESULT + json.dumps(result), flush=True)
        return 0

    from results import write_result

    if any(s in TRL_SETTINGS for s in systems) and not Path(args.trl_python).exists():
        p.error(f"--trl-python: {args.trl_python} not found (this file's docstring: set-up)")
    here = str(Path(__file__).resolve())
    # Every child reads the same problems: the first steps' batches are the same for both systems.
    problems_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(problems(args.shape, PROMPTS_PER_STEP * (args.steps + 2)), problems_file)
    problems_file.close()
    name = args.name or f"rl_step_{args.shape}"
    config = {"model": args.model, "shape": args.shape, "prompts": PROMPTS_PER_STEP,
              "samples": SAMPLES, "max_tokens": SHAPES[args.shape], "lora_rank": RANK,
              "learning_rate": LEARNING_RATE,
              "steps": args.steps, "warmup": args.warmup, "systems": systems,
              "command": "bench/bench_rl.py " + " ".join(sys.argv[1:])}
    invocations: list[dict] = []
    for i in range(args.invocations):
        invocations.append({})
        for system in systems:
            res: dict[str, Any]
            try:
                res = run_child(child_command(system, args, here, problems_file.name))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"{system} failed: {e}")
                res = {"error": str(e)}
            invocations[-1][system] = res
            if "steps" in res:
                median = statistics.median(s["seconds"] for s in res["steps"])
                log(f"invocation {i + 1}, {system}: median step {median:.2f} s")
            # After each child: a benchmark cut short keeps what it measured.
            path = write_result(name, {"config": config, "invocations": invocations})
    os.unlink(problems_file.name)
    log(f"wrote {path}; now: .venv/bin/python bench/doc_tables.py")
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: keep this guard
    sys.exit(main())

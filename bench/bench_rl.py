"""RL step benchmark: mint_rl's actor pipeline (K=0 and K=1) against TRL's GRPOTrainer, same batch.

SmolLM2-135M-Instruct, LoRA rank 16 on every linear layer, 8 prompts x 4 samples, T=1, on CPU.
Three workload shapes (`--shape`): `arithmetic`, additions that ask for step-by-step reasoning
with at most 16 new tokens (so EOS rarely stops a sample early); `math256`, the math recipe's
word problems with up to 256; and `guess_number`, the guess_number recipe's game (up to 5 turns
of at most 6 new tokens, the env's "Higher."/"Lower." as the next user message, every turn's
prompt the whole game so far). Each system's generated tokens are recorded. The reward (the same
for both) is 1 when the answer appears in the reply (guess_number: the recipe's game reward),
plus 0.001 per character the model wrote, so a group's rewards almost never tie and every
sample is trained on.

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
import functools
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
# "guess_number": a game of up to GAME_TURNS replies, each of up to 6 tokens (the recipe's
# defaults), where the prompt grows with every turn.
SHAPES = {"arithmetic": 16, "math256": 256, "guess_number": 6}
GAME_TURNS, GAME_MAX_NUMBER = 5, 10
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


def problems(shape: str, n: int) -> list[tuple[list[dict[str, str]], str]]:
    """n (chat messages, answer) pairs of the shape: the same list for both systems."""
    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    rng = random.Random(0)
    if shape == "math256":
        from mint_rl.recipes.math import question
        from mint_rl.recipes.math_problems import problem_at

        return [(user(question(p.question)), p.answer)
                for p in (problem_at(0, "bench", i, (3,)) for i in range(n))]
    if shape == "guess_number":
        from mint_rl.recipes.guess_number import opening

        games = []
        for _ in range(n):
            messages = opening(GAME_MAX_NUMBER, GAME_TURNS)
            # A name per game, in letters (a number could be read as a guess): TRL's rollout
            # function sees only the prompts, and finds each game's secret by its last message.
            name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
            messages[-1]["content"] = messages[-1]["content"].replace(
                "New game:", f"New game ({name}):")
            games.append((messages, str(rng.randint(1, GAME_MAX_NUMBER))))
        return games
    pairs = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(n)]
    return [(user(f"What is {a} + {b}? Explain your reasoning step by step, then give the "
                  "answer."), str(a + b)) for a, b in pairs]


def game_turn(reply: str, secret: int, turn: int) -> tuple[float, str | None]:
    """One turn of guess_number by the recipe's rules (recipes/guess_number.py; restated here
    because TRL's child cannot import mint_rl): the reward of `reply` on turn `turn` (1-based)
    and the env's answer, None when the game is over."""
    match = re.search(r"-?\d+", reply)
    guess = int(match.group()) if match else None
    shaping = 0.001 * len(reply)
    if guess == secret:
        return 1.0 - (turn - 1) / GAME_TURNS + shaping, None
    penalty = 0.1 if guess is None else 0.0
    if turn >= GAME_TURNS:
        return shaping - penalty, None
    answer = (f"Please reply with a number from 1 to {GAME_MAX_NUMBER}." if guess is None
              else "Higher." if guess < secret else "Lower.")
    return shaping - penalty, answer


def next_user_tokens(tokenizer: Any, reply: list[int], content: str) -> list[int]:
    """The tokens that follow the model's reply: the end of its turn (unless it sampled it), the
    user message `content` and the assistant's header. The recipe's ChatTurns.next_user,
    restated for TRL's child, which cannot import mint_rl (mint_rl's child calls the recipe's;
    tests/test_guess_number.py checks that the two agree)."""
    close, message = _user_turn(tokenizer, content)
    if reply and reply[-1] == tokenizer.eos_token_id:
        close = close[1:]
    return [*close, *message]


@functools.cache
def _user_turn(tokenizer: Any, content: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(end of an assistant turn, user message `content` + assistant header), rendered by the
    chat template once per message: a game has a handful of distinct ones."""
    base = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "?"}]
    before = list(tokenizer.apply_chat_template(base, tokenize=True, return_dict=False))
    after = list(tokenizer.apply_chat_template([*base, {"role": "user", "content": content}],
                                               add_generation_prompt=True, tokenize=True,
                                               return_dict=False))
    end = len(before) - before[::-1].index(tokenizer.eos_token_id) - 1
    return tuple(before[end:]), tuple(after[len(before):])  # e.g. "<|im_end|>\n", ...


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
    from mint_rl.recipes.guess_number import ChatTurns
    from mint_rl.rl.types import StepResult
    from mint_rl.run.train import PROMPT_ALLOWANCE
    from mint_rl.runtime import open_system
    from mint_rl.sampler import EngineConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    chat = ChatTurns(tokenizer)
    generated: list[int] = []  # the model's tokens in each sample (envs run in this process)

    class Env:
        def __init__(self, answer: str, prompt: list[int]) -> None:
            self.answer, self.context = answer, prompt
            self.turn, self.tokens = 0, 0

        async def initial_observation(self) -> list[int]:
            return self.context

        async def step(self, action: list[int]) -> StepResult:
            self.turn, self.tokens = self.turn + 1, self.tokens + len(action)
            reply = tokenizer.decode(action, skip_special_tokens=True)
            if args.shape != "guess_number":
                generated.append(self.tokens)
                return StepResult(reward=reward(reply, self.answer), episode_done=True)
            score, answer = game_turn(reply, int(self.answer), self.turn)
            if answer is None:
                generated.append(self.tokens)
                return StepResult(reward=score, episode_done=True)
            self.context = self.context + action + chat.next_user(action, answer)
            return StepResult(reward=score, episode_done=False, next_observation=self.context)

    class Group:
        def __init__(self, messages: list[dict[str, str]], answer: str) -> None:
            self.messages, self.answer = messages, answer

        async def make_envs(self) -> list[Env]:
            prompt = list(tokenizer.apply_chat_template(
                self.messages, add_generation_prompt=True, tokenize=True, return_dict=False))
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
    # The KV cache sized for the batch as `mint-rl run` sizes it (mint_rl/run/train.py).
    engine_cfg = EngineConfig(cpu_cores=cpus.sampler_cores(), dtype=sampler_dtype,
                              sequences=PROMPTS_PER_STEP * SAMPLES,
                              sequence_tokens=PROMPT_ALLOWANCE + SHAPES[args.shape])
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
    data = Dataset.from_list([{"prompt": messages, "answer": answer}
                              for messages, answer in pool])
    game = args.shape == "guess_number"

    def answer_reward(completions, answer, game_reward=None, **_) -> list[float]:
        if game:  # scored turn by turn while the game was played
            return list(game_reward)
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
    games = {messages[-1]["content"]: int(answer) for messages, answer in pool}

    def play_games(prompts: list, trainer: Any) -> dict[str, Any]:
        """guess_number through TRL's `rollout_func` (it has no multi-turn setting, and its
        tool-calling loop needs a chat template with a tool format, which SmolLM2's lacks): each
        turn is one call of TRL's own generation (`_generate_single_turn`, as its tool loop
        makes them) for the games still on; the env's messages are masked out of the loss
        (`env_mask`), as mint_rl gives them weight 0."""
        prompt_ids = [list(tokenizer.apply_chat_template(p, add_generation_prompt=True,
                                                         tokenize=True, return_dict=False))
                      for p in prompts]
        secrets = [games[p[-1]["content"]] for p in prompts]
        completions: list[list[int]] = [[] for _ in prompts]
        env_mask: list[list[int]] = [[] for _ in prompts]
        scores = [0.0] * len(prompts)
        playing = list(range(len(prompts)))
        for turn in range(1, GAME_TURNS + 1):
            if not playing:
                break
            replies, _ = trainer._generate_single_turn(
                [prompt_ids[i] + completions[i] for i in playing], None, {}, 1)
            still = []
            for i, ids in zip(playing, replies, strict=True):
                completions[i] += ids
                env_mask[i] += [1] * len(ids)
                score, answer = game_turn(tokenizer.decode(ids, skip_special_tokens=True),
                                          secrets[i], turn)
                scores[i] += score
                if answer is not None:
                    message = next_user_tokens(tokenizer, ids, answer)
                    completions[i] += message
                    env_mask[i] += [0] * len(message)
                    still.append(i)
            playing = still
        return {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None,
                "env_mask": env_mask, "game_reward": scores}

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * SAMPLES,
            gradient_accumulation_steps=1, num_generations=SAMPLES,
            # guess_number: 6 new tokens a turn (generation_kwargs); the whole game, env
            # messages included, is the completion, whose length TRL does not cap for a
            # rollout_func: 240 only has to be at least a game's tokens (about 100 at most).
            max_completion_length=240 if game else SHAPES[args.shape],
            generation_kwargs={"max_new_tokens": SHAPES[args.shape]} if game else None,
            temperature=1.0, learning_rate=LEARNING_RATE,
            max_steps=args.steps, logging_steps=1, save_strategy="no", report_to="none",
            use_cpu=True, use_vllm=False, seed=0, dataloader_num_workers=0,
            **TRL_SETTINGS[args.system],
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=answer_reward, args=config, train_dataset=data,
            processing_class=tokenizer, callbacks=[timer],
            rollout_func=play_games if game else None,
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

"""RL step benchmark: mint_rl's actor pipeline (K=0 and K=1) vs TRL's GRPOTrainer, same batch.

One run, one system after the other: SmolLM2-135M-Instruct, LoRA rank 16 on every linear layer,
8 prompts x 4 samples x (at most) 16 new tokens, T=1, on CPU. Prompts are additions that ask for
step-by-step reasoning, so EOS rarely stops a sample early (the script reports the tokens each
system actually generated). The reward (the same for both) is 1 when the sum appears in the reply,
plus 0.001 per character, so a group's rewards almost never tie and every sample is trained on.

    .venv/bin/python bench/bench_rl.py [--trl-python /work/trl-venv/bin/python]
        [--steps 5] [--warmup 1] [--precisions float32,bfloat16]
        [--trl-settings defaults,fastest,fastest-bf16] [--markdown docs/rl_bench.md]

Like with like: TRL's step is on-policy, so mint_rl's K=0 is what it is compared with; K=1 (one
step off-policy) is reported beside it as what asynchrony adds. TRL runs at its defaults and at
its fastest sensible settings (gradient checkpointing off; in fp32 and in bf16). Each mint_rl
setting (CPU placement x precision) runs in its own child process (one vLLM engine, one
learner), K=0 first, then K=1 on the same actors. K=0 runs sampling, training and the weight load
strictly one after the other, so its per-phase timings are "sampling alone" and "training alone"
on the same cores. TRL runs in its own virtual environment (it must not be installed into the
project's): `python3 -m venv /work/trl-venv && /work/trl-venv/bin/pip install torch==2.13.0
'transformers<5.20' peft trl==1.16.0 datasets`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPTS_PER_STEP, SAMPLES, NEW_TOKENS, RANK = 8, 4, 16, 16
LEARNING_RATE = 1e-4
RESULT = "BENCH_RESULT "  # prefix of the one JSON line a child prints

# CPU placements tried for mint_rl (mint_rl/placement.py): "shared" gives vLLM's model threads
# and the learner's torch threads every core (right when they alternate, K=0); "split" gives the
# sampler the first half of the cores and pins the learner's thread to the other half (right when
# they overlap, K=1). `mint-rl run` picks by K ("auto").
CPU_SETTINGS = ("shared", "split")

# Precisions: (sampler dtype, learner dtype). "bfloat16" is bf16 end to end (vLLM in bf16, the
# learner autocast to bf16); the importance ratio corrects what the two then disagree on, and
# kl/sampler_learner reports it. "bfloat16-learner" keeps the sampler in fp32.
PRECISIONS = {
    "float32": ("float32", "float32"),
    "bfloat16": ("bfloat16", "bfloat16"),
    "bfloat16-learner": ("float32", "bfloat16"),
}

# TRL settings: its defaults, and its fastest sensible ones for this model. Gradient checkpointing
# (on by default) recomputes activations to save memory a 135M model does not need, so turning it
# off is what a user tuning TRL for speed does first. TRL's bf16 is what mint_rl's bf16 rows
# compare with (both autocast fp32 weights).
TRL_SETTINGS = {
    "defaults": {},
    "fastest": {"gradient_checkpointing": False},
    "fastest-bf16": {"gradient_checkpointing": False, "bf16": True},
}


# ------------------------------------------------------------------------------------------------
# The task (shared by both systems)


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}? Explain your reasoning step by step, then give the answer."


def reward(reply: str, a: int, b: int) -> float:
    correct = str(a + b) in re.findall(r"-?\d+", reply)
    return float(correct) + 0.001 * len(reply)


def problems(n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(n)]


def machine() -> str:
    cpu, flags = "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    extra = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu} ({', '.join(extra)}), {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU, "
            f"Python {platform.python_version()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
        def __init__(self, a: int, b: int, prompt: list[int]) -> None:
            self.a, self.b, self.prompt = a, b, prompt

        async def initial_observation(self) -> list[int]:
            return self.prompt

        async def step(self, action: list[int]) -> StepResult:
            generated.append(len(action))
            reply = tokenizer.decode(action, skip_special_tokens=True)
            return StepResult(reward=reward(reply, self.a, self.b), episode_done=True)

    class Group:
        def __init__(self, a: int, b: int) -> None:
            self.a, self.b = a, b

        async def make_envs(self) -> list[Env]:
            prompt = list(tokenizer.apply_chat_template(
                [{"role": "user", "content": question(self.a, self.b)}],
                add_generation_prompt=True, tokenize=True, return_dict=False))
            return [Env(self.a, self.b, prompt) for _ in range(SAMPLES)]

        def logging_tag(self) -> str:
            return "addition"

    pool = problems(1024)

    class Dataset:
        def get_batch(self, index: int) -> list[Group]:
            return [Group(*pool[(index * PROMPTS_PER_STEP + i) % len(pool)])
                    for i in range(PROMPTS_PER_STEP)]

        def __len__(self) -> int:
            return 10**6

    params = types.SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0,
                                  stop_token_ids=[tokenizer.eos_token_id])
    cpus = plan_cpus(max(args.ks), args.cpus)
    sampler_dtype, learner_dtype = PRECISIONS[args.precision]
    settings = LearnerSettings(dtype=learner_dtype, cpu_cores=cpus.learner_cores())
    engine_cfg = EngineConfig(cpu_cores=cpus.sampler_cores(), dtype=sampler_dtype)
    learner_cfg = LearnerConfig(base_model=args.model, rank=RANK, seed=0, loss="ppo",
                                learning_rate=LEARNING_RATE, settings=settings)
    results: dict = {"setting": args.setting, "precision": args.precision, "runs": {},
                     "sampler_cores": list(cpus.sampler), "learner_cores": list(cpus.learner)}
    t0 = time.perf_counter()
    async with open_system() as system:
        sampler = await system.spawn(functools.partial(SamplerActor, args.model, params,
                                                       engine_cfg),
                                     name="sampler", device="sampler")
        learner = await system.spawn(functools.partial(LearnerActor, learner_cfg),
                                     name="learner", device="learner")
        advantage = await system.spawn(AdvantageActor, name="advantage")
        results["startup_s"] = time.perf_counter() - t0
        log(f"[{args.setting}] sampler + learner up in {results['startup_s']:.1f} s")
        start = 0  # the learner's policy version: each K's run continues from the last one
        for k in args.ks:
            rows: list[dict] = []
            generated.clear()

            def on_step(m: dict, rows=rows, k=k) -> None:
                m["time/wall"] = time.perf_counter()
                m["load1"] = os.getloadavg()[0]
                m |= engine_memory_metrics()
                rows.append(m)
                log(f"[{args.setting} K={k}] step {m['step']}: "
                    f"{m['time/step']:.2f} s (sample_wait {m['time/sample_wait']:.2f}, "
                    f"train {m['time/train']:.2f}, save {m['time/save_weights']:.2f}, "
                    f"load {m['time/load_weights']:.2f}), "
                    f"datums {m.get('datums')}, load {m['load1']:.2f}")

            cfg = PipelineConfig(steps=start + args.steps, groups_per_batch=PROMPTS_PER_STEP,
                                 max_steps_off_policy=k, start_step=start)
            t_run = time.perf_counter()
            state = await RLPipeline(cfg, Dataset(), [sampler], learner, advantage.build,
                                     on_step=on_step).run()
            start = state.learner_policy_version
            results["runs"][str(k)] = {
                "rows": rows, "t_start": t_run, "warmup": args.warmup,
                "tokens_mean": sum(generated) / max(len(generated), 1),
                "samples": len(generated),
            }
    return results


def summarize_mint(run: dict) -> dict:
    rows, w = run["rows"], run["warmup"]
    measured = rows[w:]
    # Wall-clock per step between consecutive step ends: what a user waits for, overlap included.
    walls = [b["time/wall"] - a["time/wall"] for a, b in zip(rows[w - 1:], rows[w:], strict=False)]
    if w == 0:
        walls = [rows[0]["time/wall"] - run["t_start"]] + walls

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in measured)

    return {
        "step": statistics.mean(walls), "step_median": statistics.median(walls),
        "step_min": min(walls), "step_max": max(walls), "n": len(walls),
        "sample_wait": mean("time/sample_wait"), "train": mean("time/train"),
        "load_weights": mean("time/load_weights"), "save_weights": mean("time/save_weights"),
        "datums": mean("datums"),
        "kl_sampler_learner": statistics.mean(r.get("kl/sampler_learner", float("nan"))
                                              for r in measured),
        "tokens_mean": run["tokens_mean"], "load1": mean("load1"),
        # GiB: the learner's process (this one) and the vLLM engine process, at their peaks.
        "peak_rss": max(r.get("memory/learner_peak_rss_gib", 0.0) for r in rows),
        "engine_peak_rss": max(r.get("memory/engine_peak_rss_gib", 0.0) for r in rows),
    }


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
    pool = problems(PROMPTS_PER_STEP * (args.steps + 2), seed=1)
    data = Dataset.from_list([
        {"prompt": [{"role": "user", "content": question(a, b)}], "a": a, "b": b}
        for a, b in pool
    ])

    def addition_reward(completions, a, b, **_) -> list[float]:
        return [reward(c[0]["content"] if isinstance(c, list) else c, x, y)
                for c, x, y in zip(completions, a, b, strict=True)]

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.loads: list[float] = []
            self.logs: list[dict] = []
            self._t = 0.0

        def on_step_begin(self, *_, **__):
            self._t = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.steps.append(time.perf_counter() - self._t)
            self.loads.append(os.getloadavg()[0])
            log(f"[trl] step {len(self.steps)}: {self.steps[-1]:.2f} s, "
                f"load {self.loads[-1]:.2f}")

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
            max_completion_length=NEW_TOKENS, temperature=1.0, learning_rate=LEARNING_RATE,
            max_steps=args.steps, logging_steps=1, save_strategy="no", report_to="none",
            use_cpu=True, use_vllm=False, seed=0, dataloader_num_workers=0,
            **{"bf16": False, "fp16": False, **TRL_SETTINGS[args.trl_setting]},
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=addition_reward, args=config, train_dataset=data,
            processing_class=tokenizer, callbacks=[timer],
            peft_config=LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0,
                                   target_modules="all-linear", task_type="CAUSAL_LM"),
        )
        trainer.train()
    lengths = [x["completions/mean_length"] for x in timer.logs if "completions/mean_length" in x]
    return {"steps": timer.steps, "loads": timer.loads, "warmup": args.warmup,
            "tokens_mean": statistics.mean(lengths[args.warmup:] or lengths or [float("nan")]),
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                         "torch": torch.__version__},
            "torch_threads": torch.get_num_threads(),
            # GiB: generation and training both in this process.
            "peak_rss": proc_status().get("VmHWM", 0) / 2**30,
            "gradient_checkpointing": config.gradient_checkpointing, "bf16": config.bf16}


def summarize_trl(res: dict) -> dict:
    steps = res["steps"][res["warmup"]:]
    return {"step": statistics.mean(steps), "step_median": statistics.median(steps),
            "step_min": min(steps), "step_max": max(steps), "n": len(steps),
            "tokens_mean": res["tokens_mean"], "peak_rss": res.get("peak_rss", float("nan")),
            "load1": statistics.mean(res["loads"][res["warmup"]:])}


# ------------------------------------------------------------------------------------------------
# Orchestration


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def run_child(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    log(f"running: {' '.join(cmd[1:])}  (load {load()})")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parent.parent)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"{cmd[1:]} exited {proc.returncode} without a result")


def trl_label(setting: str, res: dict) -> str:
    dtype = "bf16" if res.get("bf16") else "fp32"
    checkpointing = "on" if res.get("gradient_checkpointing") else "off"
    return f"TRL {setting} ({dtype}, gradient checkpointing {checkpointing})"


def report(mint: dict[str, dict], trl: dict[str, dict], args, elapsed: float) -> str:
    out = ["| system | setting | s/step (mean) | median | min–max | measured steps | "
           "tokens/sample | peak RSS GiB | load avg (1 min) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for setting, res in trl.items():
        t = res["summary"]
        out.append(f"| TRL {res['versions']['trl']} GRPOTrainer (HF generate) | "
                   f"{trl_label(setting, res)}, torch {res['torch_threads']} threads | "
                   f"{t['step']:.2f} | {t['step_median']:.2f} | "
                   f"{t['step_min']:.2f}–{t['step_max']:.2f} | {t['n']} | "
                   f"{t['tokens_mean']:.1f} | {t['peak_rss']:.2f} | {t['load1']:.1f} |")
    for setting, res in mint.items():
        for k, s in res["summary"].items():
            out.append(f"| mint_rl K={k} ({res['precision']}) | {setting} | {s['step']:.2f} | "
                       f"{s['step_median']:.2f} | {s['step_min']:.2f}–{s['step_max']:.2f} | "
                       f"{s['n']} | {s['tokens_mean']:.1f} | {s['peak_rss']:.2f} + engine "
                       f"{s['engine_peak_rss']:.2f} | {s['load1']:.1f} |")
    out += ["", *speedups(mint, trl)]
    out += ["", "mint_rl phases (means over the measured steps). The samplers load step n's "
            "weights in the background: at K=0 the next batch's sampling waits for the load, so "
            "it is part of K=0's sample_wait; at K=1 it overlaps the next training step.", "",
            "| setting | K | sample_wait s | train s | save_weights s | load_weights s | "
            "datums/step | kl/sampler_learner |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for setting, res in mint.items():
        for k, s in res["summary"].items():
            out.append(f"| {setting} | {k} | {s['sample_wait']:.2f} | {s['train']:.2f} | "
                       f"{s['save_weights']:.2f} | {s['load_weights']:.2f} | {s['datums']:.1f} | "
                       f"{s['kl_sampler_learner']:.2g} |")
    out += ["", "Overlap. S = sampling alone (K=0 sample_wait minus the load it waited for), "
            "T = training alone (K=0 train), E = save_weights (K=0), all measured in the same "
            "process as the K=1 run, with the same cores:", "",
            "| setting | S s | T s | max(S, T) s | K=1 / max(S, T) | K=1 / max(S, T + E) |",
            "|---|---:|---:|---:|---:|---:|"]
    for setting, res in mint.items():
        s = res["summary"]
        if "0" not in s or "1" not in s:
            continue
        alone_s = s["0"]["sample_wait"] - s["0"]["load_weights"]
        alone_t, alone_e = s["0"]["train"], s["0"]["save_weights"]
        limit, limit_e = max(alone_s, alone_t), max(alone_s, alone_t + alone_e)
        out.append(f"| {setting} | {alone_s:.2f} | {alone_t:.2f} | {limit:.2f} | "
                   f"{s['1']['step_median'] / limit:.2f}x | "
                   f"{s['1']['step_median'] / limit_e:.2f}x |")
    out += ["", f"Whole benchmark: {elapsed / 60:.1f} min wall-clock; load average at the end "
            f"{load()}."]
    return "\n".join(out)


def speedups(mint: dict[str, dict], trl: dict[str, dict]) -> list[str]:
    """Each mint_rl row against TRL's fastest setting of the same dtype, and TRL's defaults.

    K=0 is on-policy like TRL's step: that ratio compares like with like. K=1 trains on samples
    one policy version old, so its ratio is what asynchrony adds on top, not a like-for-like
    comparison."""
    if not trl:
        return ["(no TRL rows: no speed-ups)"]
    out = ["Speed-up over TRL (ratio of medians). K=0 is on-policy, as TRL is: like with like. "
           "K=1 samples the next batch while training (one step off-policy): what async adds.", "",
           "| mint_rl | setting | vs TRL fastest, same dtype | vs TRL defaults (fp32) |",
           "|---|---|---:|---:|"]
    for setting, res in mint.items():
        dtype = res["precision"]
        fastest = trl.get("fastest" if dtype == "float32" else "fastest-bf16")
        defaults = trl.get("defaults")
        for k, s in res["summary"].items():
            def vs(peer: dict | None, x: float = s["step_median"]) -> str:
                return f"{peer['summary']['step_median'] / x:.2f}x" if peer else "n/a"
            kind = "on-policy" if k == "0" else "async"
            out.append(f"| K={k} ({kind}), {dtype} | {setting} | {vs(fastest)} | {vs(defaults)} |")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=MODEL)
    p.add_argument("--steps", type=int, default=5, help="steps per system, warm-up included")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    p.add_argument("--settings", default=",".join(CPU_SETTINGS),
                   help=f"mint_rl CPU placements to run, of {list(CPU_SETTINGS)}")
    p.add_argument("--precisions", default="float32,bfloat16",
                   help=f"mint_rl precisions to run (each with every placement), of "
                        f"{list(PRECISIONS)}")
    p.add_argument("--trl-settings", default=",".join(TRL_SETTINGS),
                   help=f"TRL settings to run, of {list(TRL_SETTINGS)} (empty: none)")
    p.add_argument("--markdown", type=Path, help="also write the tables here")
    p.add_argument("--raw", type=Path, help="write every measurement (JSON) here")
    p.add_argument("--reuse", type=Path, action="append", default=[],
                   help="take results from this --raw file of an earlier run (repeatable): "
                        "settings and TRL found there are not run again")
    # child modes
    p.add_argument("--mint-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--trl-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting", default="default", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--trl-setting", default="fastest", help=argparse.SUPPRESS)
    p.add_argument("--cpus", default="shared", help=argparse.SUPPRESS)
    p.add_argument("--ks", default="0,1",
                   help="mint_rl runs, in this order, on the same actors (noise hits the later "
                        "ones differently: try 1,0 too)")
    args = p.parse_args()
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")
    unknown_precisions = set(filter(None, args.precisions.split(","))) - set(PRECISIONS)
    if unknown_precisions:
        p.error(f"--precisions: unknown {sorted(unknown_precisions)}, choose from "
                f"{list(PRECISIONS)}")
    unknown = set(filter(None, args.trl_settings.split(","))) - set(TRL_SETTINGS)
    if unknown:
        p.error(f"--trl-settings: unknown {sorted(unknown)}, choose from {list(TRL_SETTINGS)}")

    if args.trl_only:
        print(RESULT + json.dumps(trl_child(args)), flush=True)
        return 0
    if args.mint_only:
        args.ks = [int(k) for k in args.ks.split(",")]
        print(RESULT + json.dumps(mint_child(args)), flush=True)
        return 0

    from mint_rl.models import resolve_model

    start = time.perf_counter()
    model_dir = str(resolve_model(args.model))
    log(f"machine: {machine()}; load average {load()}")
    here = str(Path(__file__).resolve())
    common = ["--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    mint: dict[str, dict] = {}
    trl: dict[str, dict] = {}

    def save() -> None:  # after each child: a run cut short keeps what it measured
        if args.raw:
            args.raw.write_text(json.dumps({"mint": mint, "trl": trl, "load": load()}))

    for path in args.reuse:
        old = json.loads(path.read_text())
        mint.update(old["mint"])
        trl.update(old["trl"])
    for setting in [s for s in args.settings.split(",") if s]:
        for precision in args.precisions.split(","):
            key = f"{setting}, {precision}" + ("" if args.ks == "0,1" else f", K order {args.ks}")
            if key in mint:
                continue
            cmd = [sys.executable, here, "--mint-only", "--setting", key, "--cpus", setting,
                   "--ks", args.ks, "--precision", precision, *common]
            res = run_child(cmd)
            res["summary"] = {k: summarize_mint(r) for k, r in res["runs"].items()}
            mint[key] = res
            save()
    for setting in [s for s in args.trl_settings.split(",") if s and s not in trl]:
        if not Path(args.trl_python).exists():
            log(f"{args.trl_python} not found: no TRL rows (docs/rl_bench.md: how to set it up)")
            break
        try:
            res = run_child([args.trl_python, here, "--trl-only", "--trl-setting", setting,
                             "--model", model_dir, "--steps", str(args.steps),
                             "--warmup", str(args.warmup)])
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log(f"TRL {setting} failed: {e}")
            continue
        res["summary"] = summarize_trl(res)
        trl[setting] = res
        save()
    text = report(mint, trl, args, time.perf_counter() - start)
    header = (f"Machine: {machine()}.\nModel {args.model}, LoRA r{RANK} all-linear, "
              f"{PROMPTS_PER_STEP} prompts x {SAMPLES} samples x <= {NEW_TOKENS} new tokens, "
              f"T=1; {args.steps} steps per system, the first {args.warmup} not measured.\n")
    print(header + "\n" + text)
    if args.markdown:
        args.markdown.write_text(header + "\n" + text + "\n")
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: keep this guard
    sys.exit(main())

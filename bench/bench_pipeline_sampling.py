"""Sampling inside the RL pipeline against raw vLLM on the same requests.

The arithmetic recipe's two sampling workloads on the default model (SmolLM2-135M, fp32, the
engine a K = 0 run starts: all cores to the sampler, merged weights):

- batch: 8 problems x 8 samples, at most 6 new tokens, T = 1, stop at EOS (a run's default:
  unseeded, chunked prefill on; `--reproducible` seeds every sample);
- eval: 30 held-out problems x 4 samples, the same parameters (the recipe's evaluator).

mint_rl: the SamplerActor's `rollout` of every group of a batch at once, through the actor
runtime, as RLPipeline calls it; the recipe's evaluator through the sampler actor (its `sample`
endpoint, as the pipeline's evaluation does).
raw vLLM: `LLM.generate` started with the same engine arguments, on the same prompt token ids, in
one call per workload with `n` = samples per prompt (what a user of vLLM alone would write).

    python bench/bench_pipeline_sampling.py [--repeats 5] [--markdown docs/sampling.md]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as `python bench/...`, Python puts bench/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_sampler import machine  # noqa: E402

GROUPS, GROUP_SIZE, EVAL_PROBLEMS, EVAL_SAMPLES, MAX_TOKENS = 8, 8, 30, 4, 6


def workloads(tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt tokens of one training batch and of the evaluation."""
    from mint_rl.recipes.arithmetic import Config, prompt_tokens, split_problems

    train, held_out = split_problems(9, Config().seed)
    batch = [prompt_tokens(tokenizer, a, b) for a, b in train[:GROUPS]]
    evaluation = [prompt_tokens(tokenizer, a, b) for a, b in held_out[:EVAL_PROBLEMS]]
    return batch, evaluation


async def timed(repeats: int, work: Any) -> float:
    """Median seconds of `repeats` awaits of `work()`, after one warm-up."""
    await work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_mint(model: str, adapter: Path, probe_logprobs: Any, repeats: int) -> dict[str, float]:
    import anyio

    from mint_rl.actors.sampler import SamplerActor
    from mint_rl.actors.sampler_pool import SamplerActorClient
    from mint_rl.recipes.arithmetic import AdditionGroup, Config, make_evaluator, split_problems
    from mint_rl.rl.rollout import rollout_group
    from mint_rl.rl.types import SavedPolicy
    from mint_rl.run.train import load_tokenizer, sampling_params
    from mint_rl.runtime import open_system
    from mint_rl.sampler import EngineConfig, SamplingClient, close_all

    cfg = Config()
    out: dict[str, float] = {}

    async def main() -> None:
        tokenizer = load_tokenizer(model)
        params = sampling_params(cfg, tokenizer)
        train, held_out = split_problems(cfg.max_operand, cfg.seed)
        evaluate = make_evaluator(held_out[:EVAL_PROBLEMS], tokenizer, cfg)
        builders = [AdditionGroup(a, b, GROUP_SIZE, tokenizer) for a, b in train[:GROUPS]]
        async with open_system() as system:
            sampler = await system.spawn(SamplerActor, model, params,
                                         EngineConfig(), name="sampler")
            probe = await sampler.probe_tokens()
            await sampler.load_weights(SavedPolicy(Path(adapter), 1, probe_logprobs(probe)))
            client = SamplerActorClient(sampler, 1)  # what the pipeline evaluates with

            async def batch() -> None:
                async with anyio.create_task_group() as tg:
                    for builder in builders:
                        tg.start_soon(sampler.rollout, builder, 0, 1)

            out["batch"] = await timed(repeats, batch)

            # The same rollouts straight on a sampling client of the same engine: what the
            # actor runtime adds, apart from vLLM's async engine itself.
            direct = SamplingClient(model, adapter, 1, engine_config=EngineConfig())

            async def batch_direct() -> None:
                async with anyio.create_task_group() as tg:
                    for builder in builders:
                        tg.start_soon(rollout_group, builder, direct, params, 0)

            out["batch_direct"] = await timed(repeats, batch_direct)
            out["eval"] = await timed(repeats, lambda: evaluate(client, 0))
            await system.stop(sampler)

    anyio.run(main)
    close_all()
    return out


def bench_vllm(model: str, repeats: int, block_size: int | None = None) -> dict[str, float]:
    """Raw `LLM.generate`, started with the engine arguments mint_rl's sampler uses (with
    `block_size`: that KV cache block instead of mint_rl's)."""
    from vllm import LLM
    from vllm import SamplingParams as VllmParams
    from vllm.inputs import TokensPrompt

    from mint_rl.models import resolve_model
    from mint_rl.run.train import load_tokenizer
    from mint_rl.sampler import EngineConfig
    from mint_rl.sampler.vllm_engine import _environment, _thread_affinity, engine_args

    config = EngineConfig().resolve()
    args = engine_args(config, resolve_model(model))
    args.pop("worker_extension_cls")
    if block_size is not None:
        args["block_size"] = block_size
    tokenizer = load_tokenizer(model)
    batch, evaluation = workloads(tokenizer)
    with _environment(config.vllm_environment()), _thread_affinity(config.engine_cores()):
        llm = LLM(**args)

    def params(n: int) -> VllmParams:
        return VllmParams(n=n, max_tokens=MAX_TOKENS, temperature=1.0, logprobs=0,
                          stop_token_ids=[tokenizer.eos_token_id])

    batch_in = [TokensPrompt(prompt_token_ids=p) for p in batch]
    eval_in = [TokensPrompt(prompt_token_ids=p) for p in evaluation]
    def generate(inputs: list[TokensPrompt], n: int) -> Any:
        async def work() -> None:  # LLM.generate blocks: the same timing helper measures it
            llm.generate(inputs, params(n), use_tqdm=False)
        return work

    import anyio

    out = {"batch": anyio.run(timed, repeats, generate(batch_in, GROUP_SIZE)),
           "eval": anyio.run(timed, repeats, generate(eval_in, EVAL_SAMPLES))}
    llm.llm_engine.engine_core.shutdown()
    gc.collect()
    return out


def table(mint: dict[str, float], raw: dict[str, float], raw128: dict[str, float],
          block: int) -> str:
    return "\n".join([
        "| workload | mint_rl pipeline, s | raw vLLM `generate`, s | mint_rl / raw |",
        "|---|---:|---:|---:|",
        f"| batch: {GROUPS} x {GROUP_SIZE} (raw: n={GROUP_SIZE} per prompt) "
        f"| {mint['batch']:.2f} | {raw['batch']:.2f} | {mint['batch'] / raw['batch']:.2f}x |",
        f"| batch, the same rollouts on a sampling client (no actor runtime) "
        f"| {mint['batch_direct']:.2f} | {raw['batch']:.2f} "
        f"| {mint['batch_direct'] / raw['batch']:.2f}x |",
        f"| eval: {EVAL_PROBLEMS} x {EVAL_SAMPLES} (raw: n={EVAL_SAMPLES} per prompt) "
        f"| {mint['eval']:.2f} | {raw['eval']:.2f} | {mint['eval'] / raw['eval']:.2f}x |",
        "",
        f"Both sides use {block}-token KV cache blocks (mint_rl's CPU default). Raw vLLM with "
        f"vLLM's own CPU default of 128-token blocks, longer than these 45-token prompts, so "
        f"that the samples of a prompt share no prefill: batch {raw128['batch']:.2f} s, eval "
        f"{raw128['eval']:.2f} s ({raw128['batch'] / raw['batch']:.2f}x and "
        f"{raw128['eval'] / raw['eval']:.2f}x the time with {block}-token blocks).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    from mint_rl.models import DEFAULT_MODEL, resolve_model
    from tests.sampler_reference import HFReference, make_random_adapter

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-sampling-"))
    model_dir = resolve_model(DEFAULT_MODEL)
    adapter = make_random_adapter(model_dir, tmp / "v1", seed=1)
    reference = HFReference(model_dir)  # the probe logprobs the sampler must reproduce
    mint = bench_mint(DEFAULT_MODEL, adapter, lambda p: reference.logprobs(p, adapter),
                      args.repeats)
    raw = bench_vllm(DEFAULT_MODEL, args.repeats)
    raw128 = bench_vllm(DEFAULT_MODEL, args.repeats, block_size=128)
    from mint_rl.sampler import EngineConfig

    text = table(mint, raw, raw128, EngineConfig().resolve().block_size or 0)
    print(f"\nMachine: {machine()}\nmedians of {args.repeats}, after one warm-up\n\n{text}\n")
    if args.markdown:
        from doc_markers import replace_between_markers

        replace_between_markers(args.markdown, (
            f"Machine: {machine()}; measured {time.strftime('%Y-%m-%d')} with "
            f"`python bench/bench_pipeline_sampling.py` (medians of {args.repeats}).\n\n{text}"),
            name="pipeline-bench")


if __name__ == "__main__":
    main()

"""Sampler benchmark: mint_rl vs raw vLLM vs HF transformers + peft, and load-to-serve latency.

One run, one engine at a time (small machines): 32 sequences x 32 new tokens (8 prompts x 4
samples, T=1) on the default SmolLM2-135M model with a rank-16 all-linear LoRA policy.

    python bench/bench_sampler.py [--markdown docs/sampling.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

# Run as `python bench/bench_sampler.py`, Python puts bench/ on sys.path, not the repository root;
# the HF+peft reference lives with the tests (tests/sampler_reference.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Explain in detail how a steam engine works.",
    "Describe the history of the city of Paris.",
    "List many fun facts about octopuses and explain each one.",
    "Write a letter to a friend about your summer holiday.",
    "Explain why the sky is blue to a ten year old child.",
    "Tell me everything you know about the planet Jupiter.",
    "Write a recipe for a chocolate cake with detailed steps.",
]
SAMPLES, NEW_TOKENS, REPEATS = 4, 32, 3


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU, {platform.python_version()}"


def prompts_tokens(tokenizer) -> list[list[int]]:
    from mint_rl.sampler import chat_prompt

    return [chat_prompt(tokenizer, [{"role": "user", "content": p}]).to_ints() for p in PROMPTS]


def bench_mint(model: str, adapters: dict[int, Path], ref_probe) -> dict[str, float]:
    from mint_rl.sampler import EngineConfig, SamplingClient, close_all, get_engine
    from mint_rl.types import ModelInput, SamplingParams

    engine = get_engine(model, EngineConfig(strategy="merged"))
    prompts = prompts_tokens(engine.tokenizer)
    probe = engine.probe_tokens()
    expected = {v: ref_probe(probe, a) for v, a in adapters.items()}
    SamplingClient.load(engine, adapters[1], 1)  # warm the W0 cache
    switch, checked = [], []
    for i in range(2, 8):
        v = 1 + i % 2
        start = time.perf_counter()
        # a new version number each time, as the learner does
        SamplingClient.load(engine, adapters[v], 100 + i)
        switch.append(time.perf_counter() - start)
        start = time.perf_counter()
        SamplingClient.load(engine, adapters[v], 200 + i, expected[v])
        checked.append(time.perf_counter() - start)
    SamplingClient.load(engine, adapters[1], 1000, expected[1])
    client = SamplingClient(model, adapters[1], 1000)
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0)

    def run() -> tuple[float, int]:
        start = time.perf_counter()
        futures = [client.sample(ModelInput.from_ints(p), SAMPLES, params) for p in prompts]
        wait(futures)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.tokens) for f in futures for s in f.result().sequences)
        return seconds, tokens

    run()  # warm-up
    results = [run() for _ in range(REPEATS)]
    close_all()
    return {
        "tok_s": max(t / s for s, t in results),
        "load_s": statistics.median(switch), "load_max_s": max(switch),
        "load_checked_s": statistics.median(checked),
    }


def bench_vllm(model_dir: Path, config, block_size: int | None = None) -> float:
    """Raw vLLM `LLM.generate` on base weights, started with `config`'s settings (a resolved
    `EngineConfig`: compile mode, CPU binding, process layout), as mint_rl starts its engine;
    `block_size` None: vLLM's own KV cache block."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from mint_rl.sampler.vllm_engine import _environment, _thread_affinity

    prompts = prompts_tokens(AutoTokenizer.from_pretrained(model_dir))
    with _environment(config.vllm_environment()), _thread_affinity(config.engine_cores()):
        llm = LLM(model=str(model_dir), dtype="float32", kv_cache_memory_bytes=1 << 30,
                  max_model_len=4096, disable_log_stats=True,
                  enforce_eager=config.enforce_eager,
                  **({} if block_size is None else {"block_size": block_size}))
    params = SamplingParams(n=SAMPLES, max_tokens=NEW_TOKENS, temperature=1.0, logprobs=0)
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]

    def run() -> float:
        start = time.perf_counter()
        outs = llm.generate(inputs, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(len(c.token_ids) for o in outs for c in o.outputs) / seconds

    run()
    best = max(run() for _ in range(REPEATS))
    llm.llm_engine.engine_core.shutdown()
    gc.collect()
    return best


def bench_hf(model_dir: Path, adapter: Path) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    prompts = prompts_tokens(tok)
    width = max(map(len, prompts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    starts = torch.tensor([width - len(p) for p in prompts])
    mask = torch.arange(width)[None, :] >= starts[:, None]

    def run() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True,
                                 temperature=1.0, top_k=0, max_new_tokens=NEW_TOKENS,
                                 num_return_sequences=SAMPLES, pad_token_id=pad)
        seconds = time.perf_counter() - start
        new = out[:, width:]
        return int((new != pad).sum()) / seconds

    run()
    return max(run() for _ in range(2))


def table(r: dict) -> str:
    return "\n".join([
        "| measure | value | target |",
        "|---|---|---|",
        f"| mint_rl sampling, LoRA policy (merged), tok/s | {r['mint']:.0f} | |",
        f"| raw vLLM `LLM.generate`, base weights, mint_rl's engine settings (eager, cores "
        f"{r['cores']}, {r['block']}-token KV blocks), tok/s | {r['vllm']:.0f} | |",
        f"| raw vLLM `LLM.generate`, base weights, vLLM's defaults (compiled, own binding, "
        f"its KV blocks), tok/s | {r['vllm_auto']:.0f} | |",
        f"| HF transformers + peft `generate` ({r['hf_threads']} torch threads), tok/s "
        f"| {r['hf']:.0f} | |",
        f"| mint_rl / raw vLLM, same settings | {r['mint'] / r['vllm']:.2f}x | >= 0.95x |",
        f"| mint_rl / raw vLLM, vLLM's defaults | {r['mint'] / r['vllm_auto']:.2f}x | |",
        f"| mint_rl / HF+peft | {r['mint'] / r['hf']:.1f}x | >= 5x |",
        f"| load -> serving new version (median / max of 6) | {r['load_s']:.2f} s / "
        f"{r['load_max_s']:.2f} s | < 0.5 s |",
        f"| load + probe check (median) | {r['load_checked_s']:.2f} s | |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    from mint_rl.models import DEFAULT_MODEL, resolve_model
    from tests.sampler_reference import HFReference, make_random_adapter

    model_dir = resolve_model(DEFAULT_MODEL)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sampler-"))
    adapters = {v: make_random_adapter(model_dir, tmp / f"v{v}", seed=v) for v in (1, 2)}
    ref = HFReference(model_dir)
    r: dict = {}
    m = bench_mint(DEFAULT_MODEL, adapters, ref.logprobs)
    r.update(mint=m["tok_s"], load_s=m["load_s"], load_max_s=m["load_max_s"],
             load_checked_s=m["load_checked_s"])
    del ref
    gc.collect()
    import torch

    from mint_rl.sampler import EngineConfig

    ours = EngineConfig().resolve()
    r["cores"], r["block"] = ours.cpu_cores, ours.block_size
    r["vllm"] = bench_vllm(model_dir, ours, ours.block_size)
    # vLLM left to itself: compiled, its own CPU binding, a separate worker process.
    r["vllm_auto"] = bench_vllm(model_dir, EngineConfig(cpu_cores="auto",
                                                        enforce_eager=False).resolve())
    r["hf_threads"] = torch.get_num_threads()
    r["hf"] = bench_hf(model_dir, adapters[1])
    text = table(r)
    print(f"\nMachine: {machine()}\n{SAMPLES * len(PROMPTS)} sequences x {NEW_TOKENS} new "
          f"tokens, T=1, fp32, SmolLM2-135M-Instruct, LoRA r16 all-linear\n\n{text}\n")
    if args.markdown:
        block = (f"<!-- bench:start -->\nMachine: {machine()}; measured {time.strftime('%Y-%m-%d')}"
                 f" with `python bench/bench_sampler.py`.\n\n{text}\n<!-- bench:end -->")
        doc = args.markdown.read_text() if args.markdown.exists() else ""
        if "<!-- bench:start -->" in doc:
            doc = re.sub(r"<!-- bench:start -->.*<!-- bench:end -->", lambda _: block, doc,
                         flags=re.S)
        else:
            doc += "\n" + block + "\n"
        args.markdown.write_text(doc)


if __name__ == "__main__":
    main()

"""The sampler on the real stack: vLLM-CPU + the default SmolLM2-135M model, checked against
HF transformers + peft recomputing the same tokens (fp32, 1e-3 nats).

The `merged` tests use the session's shared engine (conftest.py); the `adapter` tests replace it
with an engine of their own and run at the end of the session.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest
from sampler_reference import HFReference, make_random_adapter

from mint_rl.errors import InvalidInputError, NotFoundError, WeightSyncError
from mint_rl.models import DEFAULT_MODEL
from mint_rl.sampler import EngineConfig, SamplingClient, chat_prompt, close_all, get_engine
from mint_rl.sampler.engine import SamplerEngine
from mint_rl.types import ModelInput, SamplingParams

pytestmark = pytest.mark.slow
TOL = 1e-3


@pytest.fixture(scope="module")
def adapters(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {v: make_random_adapter(default_model, root / f"v{v}", seed=v) for v in (1, 2)}


@pytest.fixture(scope="module")
def ref(default_model: Path) -> HFReference:
    return HFReference(default_model)


@pytest.fixture(scope="module")
def prompt() -> ModelInput:
    from transformers import AutoTokenizer

    from mint_rl.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    return chat_prompt(tok, [{"role": "user", "content": "What is 3 + 4?"}])


def _max_diff(ref: HFReference, prompt: ModelInput, tokens: list[int], logprobs: list[float],
              adapter: Path | None, temperature: float = 1.0) -> float:
    p = prompt.to_ints()
    want = ref.logprobs(p + tokens, adapter, temperature)[len(p) - 1:]
    assert len(want) == len(logprobs) == len(tokens)
    return max(abs(a - b) for a, b in zip(logprobs, want, strict=True))


def _load(engine: SamplerEngine, ref: HFReference, adapter: Path | None,
          policy_version: int) -> SamplingClient:
    expected = ref.logprobs(engine.probe_tokens(), adapter)
    return SamplingClient.load(engine, adapter, policy_version, expected)


# ------------------------------------------------------------------------------------ merged


@pytest.fixture(scope="module")
def merged(sampler_engine) -> SamplerEngine:
    engine = get_engine(DEFAULT_MODEL, EngineConfig(strategy="merged"))
    assert engine is sampler_engine  # the same settings: the shared engine
    assert engine.config.strategy == "merged"
    return engine


def test_merged_base_logprobs_match_hf(merged: SamplerEngine, ref: HFReference,
                                       prompt: ModelInput) -> None:
    client = SamplingClient(DEFAULT_MODEL)
    assert client.policy_version == 0 and client.get_base_model() == DEFAULT_MODEL
    out = client.sample(prompt, 3, SamplingParams(max_tokens=12, seed=3)).result()
    assert len(out.sequences) == 3
    for seq in out.sequences:
        assert seq.policy_versions == [0] * len(seq.tokens)
        assert _max_diff(ref, prompt, seq.tokens, seq.logprobs, None) < TOL
    # Behaviour logprobs are those of the distribution sampled from: temperature applied.
    hot = client.sample(prompt, 2, SamplingParams(max_tokens=8, temperature=0.7)).result()
    for seq in hot.sequences:
        assert _max_diff(ref, prompt, seq.tokens, seq.logprobs, None, temperature=0.7) < TOL


def test_merged_load_serves_adapter_and_old_client_keeps_old(
    merged: SamplerEngine, ref: HFReference, prompt: ModelInput, adapters: dict[int, Path],
) -> None:
    old = SamplingClient(DEFAULT_MODEL)
    v1 = _load(merged, ref, adapters[1], 1)  # load hands back the client of the loaded version
    assert (v1.policy_version, v1.get_base_model()) == (1, DEFAULT_MODEL)
    v2 = _load(merged, ref, adapters[2], 2)
    v1_again = SamplingClient(DEFAULT_MODEL, adapters[1], 1)  # the same folder: the same version
    params = SamplingParams(max_tokens=10)
    futures = [(c, c.sample(prompt, 2, params)) for c in (old, v1, v2, v1_again, old)]
    for client, future in futures:
        adapter = {0: None, 1: adapters[1], 2: adapters[2]}[client.policy_version]
        for seq in future.result().sequences:
            assert seq.policy_versions == [client.policy_version] * len(seq.tokens)
            assert _max_diff(ref, prompt, seq.tokens, seq.logprobs, adapter) < TOL


def _tokens_made(engine: SamplerEngine) -> dict[str, int]:
    """Tokens made so far by each request the engine runs or recently finished."""
    return engine.run(engine.vllm.call_workers("mint_token_counts"))[0]


def test_merged_load_mid_flight_stamps_each_token(
    merged: SamplerEngine, ref: HFReference, adapters: dict[int, Path],
) -> None:
    _load(merged, ref, adapters[1], 1)
    client = SamplingClient(DEFAULT_MODEL, adapters[1], 1)
    story = chat_prompt(client.get_tokenizer(),
                        [{"role": "user", "content": "Tell me a long story about a ship."}])
    before = set(_tokens_made(merged))
    future = client.sample(story, 4, SamplingParams(max_tokens=100, seed=5, stop_token_ids=[]))
    # Switch while the requests run, once they have made a few tokens (not by the clock: on a
    # busy machine the first step alone can take seconds).
    while not future.done():
        made = [n for key, n in _tokens_made(merged).items() if key not in before]
        if made and max(made) >= 6:
            break
        time.sleep(0.1)
    SamplingClient.load(merged, adapters[2], 2)
    p = story.to_ints()
    switched = 0
    for seq in future.result().sequences:
        versions = seq.policy_versions
        assert versions is not None and versions == sorted(versions) and set(versions) <= {1, 2}
        n1 = versions.count(1)
        # The tokens stamped 1 were sampled by version 1: their logprobs match HF+peft(v1).
        if n1:
            assert _max_diff(ref, story, seq.tokens[:n1], seq.logprobs[:n1], adapters[1]) < TOL
        if not 0 < n1 < len(seq.tokens):
            continue  # ended before the switch
        switched += 1
        # The ones stamped 2 by version 2, on top of the keys and values version 1 cached for
        # the positions before the switch; version 1 would have given other logprobs.
        full = p + seq.tokens
        cut = len(p) + n1 - 1  # the last token of version 1 is the input of version 2's first
        want = ref.logprobs_after_switch(full, cut, adapters[1], adapters[2])
        got = seq.logprobs[n1:]
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < TOL
        v1 = ref.logprobs(full, adapters[1])[cut:]
        assert max(abs(a - b) for a, b in zip(got, v1, strict=True)) > 10 * TOL
    assert switched, "no request saw the weights change: the test checked nothing mid-flight"


def test_load_with_wrong_expectation_raises(merged: SamplerEngine, ref: HFReference,
                                            adapters: dict[int, Path]) -> None:
    wrong = ref.logprobs(merged.probe_tokens(), adapters[1])
    with pytest.raises(WeightSyncError, match="policy version 7"):
        SamplingClient.load(merged, adapters[2], 7, wrong)
    with pytest.raises(InvalidInputError, match="expected_probe_logprobs"):
        SamplingClient.load(merged, adapters[2], 8, wrong[:-1])


def test_sampling_options_and_prompt_logprobs(merged: SamplerEngine, ref: HFReference,
                                              prompt: ModelInput) -> None:
    client = SamplingClient(DEFAULT_MODEL)
    p = prompt.to_ints()
    lps = client.compute_logprobs(prompt).result()
    assert lps[0] is None and len(lps) == len(p)
    want = ref.logprobs(p)
    assert max(abs(a - b) for a, b in zip(lps[1:], want, strict=True)) < TOL
    out = client.sample(prompt, 1, SamplingParams(max_tokens=4), include_prompt_logprobs=True,
                        topk_prompt_logprobs=3).result()
    assert out.prompt_logprobs is not None and out.prompt_logprobs[0] is None
    assert max(abs(a - b) for a, b in zip(out.prompt_logprobs[1:], want, strict=True)) < TOL
    top = out.topk_prompt_logprobs
    assert top is not None and top[0] is None and all(len(t) == 3 for t in top[1:])
    # Seeds reproduce; sample i uses seed + i.
    a = client.sample(prompt, 2, SamplingParams(max_tokens=8, seed=11)).result()
    b = client.sample(prompt, 2, SamplingParams(max_tokens=8, seed=11)).result()
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    # Stop token ids end a sequence with the stop token included.
    stop_at = a.sequences[0].tokens[2]
    c = client.sample(prompt, 1, SamplingParams(max_tokens=8, seed=11, stop=[stop_at])).result()
    assert c.sequences[0].tokens == a.sequences[0].tokens[:3]
    assert c.sequences[0].stop_reason == "stop"
    # Stop strings.
    tok = client.get_tokenizer()
    text = tok.decode(a.sequences[0].tokens)
    word = text.strip().split()[0] if text.strip() else None
    if word:
        d = client.sample(prompt, 1, SamplingParams(max_tokens=8, seed=11, stop=word)).result()
        assert d.sequences[0].stop_reason == "stop"
    assert a.sequences[0].stop_reason in ("length", "stop")


def test_async_and_concurrent_calls_are_in_flight_together(merged: SamplerEngine,
                                                            prompt: ModelInput) -> None:
    client = SamplingClient(DEFAULT_MODEL)
    params = SamplingParams(max_tokens=16, stop_token_ids=[])
    engine = merged
    in_flight: list[int] = []

    async def many(n: int) -> list:
        async def watch() -> None:
            while True:
                in_flight.append(len(engine.stamps))  # requests the engine holds right now
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        try:
            return await asyncio.gather(*[client.sample_async(prompt, 1, params)
                                          for _ in range(n)])
        finally:
            watcher.cancel()

    outs = asyncio.run(many(8))
    assert len(outs) == 8 and all(len(o.sequences[0].tokens) <= 16 for o in outs)
    # All eight were submitted to vLLM together (one batch), not one after another.
    assert max(in_flight) == 8
    assert len(engine.stamps) == 0


def test_samples_of_one_prompt_share_its_prefill(merged: SamplerEngine) -> None:
    """A group's samples arrive together; all but the first find the prompt's full KV blocks in
    the prefix cache (32-token blocks on CPU), so the prompt is not prefilled once per sample."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams as VllmParams

    engine = merged
    assert engine.config.block_size == 32
    tok = AutoTokenizer.from_pretrained(engine.vllm.model_dir)
    question = "Name a prime number between 7,000,123 and 7,000,999 and say why it is prime."
    tokens = chat_prompt(tok, [{"role": "user", "content": question}]).to_ints()
    assert len(tokens) >= 40  # a full block and some
    params = VllmParams(max_tokens=2, temperature=1.0)

    async def group() -> list:
        return await asyncio.gather(*[
            engine.vllm.generate(tokens, params, engine.vllm.new_request_id(), {})
            for _ in range(8)])

    cached = sorted(c.cached_prompt_tokens for c in engine.vllm.run(group()))
    assert cached[0] == 0  # a prompt never seen: someone computes it
    assert all(n == len(tokens) // 32 * 32 for n in cached[1:]), cached


def test_bad_input_is_rejected(merged: SamplerEngine, prompt: ModelInput, tmp_path: Path) -> None:
    client = SamplingClient(DEFAULT_MODEL)
    with pytest.raises(InvalidInputError, match="num_samples"):
        client.sample(prompt, 0, SamplingParams()).result()
    with pytest.raises(InvalidInputError, match="prompt"):
        client.sample(ModelInput.empty(), 1, SamplingParams()).result()
    with pytest.raises(InvalidInputError, match="model_path"):
        SamplingClient(DEFAULT_MODEL, tmp_path)
    with pytest.raises(NotFoundError, match="policy_version"):
        merged.store.folder(12345)


# ------------------------------------------------------------------------------------ adapter


@pytest.fixture(scope="module")
def adapter_sync(default_model: Path) -> SamplerEngine:
    close_all()  # one engine per base model and process: this one replaces the shared one
    engine = get_engine(DEFAULT_MODEL, EngineConfig(strategy="adapter", max_lora_rank=16))
    assert engine.config.strategy == "adapter"
    return engine


@pytest.mark.own_engine
def test_adapter_strategy_logprobs_and_versions(
    adapter_sync: SamplerEngine, ref: HFReference, prompt: ModelInput, adapters: dict[int, Path],
) -> None:
    base = SamplingClient(DEFAULT_MODEL)
    _load(adapter_sync, ref, adapters[1], 1)
    v1 = SamplingClient(DEFAULT_MODEL, adapters[1], 1)
    _load(adapter_sync, ref, adapters[2], 2)
    v2 = SamplingClient(DEFAULT_MODEL, adapters[2], 2)
    params = SamplingParams(max_tokens=8)
    futures = [(c, c.sample(prompt, 2, params)) for c in (base, v1, v2)]
    for client, future in futures:
        adapter = {0: None, 1: adapters[1], 2: adapters[2]}[client.policy_version]
        for seq in future.result().sequences:
            assert seq.policy_versions == [client.policy_version] * len(seq.tokens)
            assert _max_diff(ref, prompt, seq.tokens, seq.logprobs, adapter) < TOL


@pytest.mark.own_engine
def test_close_leaves_no_engine_process(adapter_sync: SamplerEngine) -> None:
    def engine_processes() -> list[psutil.Process]:
        found = []
        for p in psutil.Process().children(recursive=True):
            try:  # (multiprocessing's resource tracker is a child too, and stays)
                if "VLLM" in p.name() and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
        return found

    assert engine_processes(), "the engine runs in child processes"
    close_all()
    deadline = time.time() + 15
    while engine_processes() and time.time() < deadline:
        time.sleep(0.2)
    assert engine_processes() == []

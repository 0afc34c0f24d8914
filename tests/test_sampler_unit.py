"""Sampler pieces that need no vLLM engine: LoRA merging, version stamps, config, chat prompts."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sampler_reference import make_random_adapter

from mint_rl.errors import InvalidInputError, NotFoundError
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.lora_merge import (
    fused_target,
    merged_weight,
    read_adapter,
    shard_names,
    targets_of,
)
from mint_rl.sampler.versions import VersionStamps, VersionStore, engine_request_key

PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_adapter(tiny_model, tmp_path_factory.mktemp("ad") / "a", rank=4, alpha=8)


def test_merged_weights_equal_peft_merge(tiny_model: Path, tiny_adapter: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = load_file(str(tiny_model / "model.safetensors"))
    merged_ref = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), str(tiny_adapter)
    ).merge_and_unload().state_dict()
    adapter = read_adapter(tiny_adapter)
    assert adapter.rank == 4 and len(adapter.deltas) == 2 * 7
    targets = targets_of(adapter, PACKED)
    assert "model.layers.0.self_attn.qkv_proj" in targets
    for name in targets:
        got = merged_weight(name, adapter, PACKED, lambda s: base[f"{s}.weight"])
        want = torch.cat([merged_ref[f"{s}.weight"] for s in shard_names(name, PACKED)])
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # No adapter: the plain base weights come back (restoring matrices an older version touched).
    name = "model.layers.1.mlp.gate_up_proj"
    restored = merged_weight(name, None, PACKED, lambda s: base[f"{s}.weight"])
    want = torch.cat([base["model.layers.1.mlp.gate_proj.weight"],
                      base["model.layers.1.mlp.up_proj.weight"]])
    assert torch.equal(restored, want)


def test_fused_target_mapping() -> None:
    assert fused_target("model.layers.3.self_attn.v_proj", PACKED) == (
        "model.layers.3.self_attn.qkv_proj", 2)
    down = "model.layers.3.mlp.down_proj"
    assert fused_target(down, PACKED) == (down, 0)


def test_read_adapter_rejects_what_cannot_be_merged(tiny_adapter: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_adapter, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["use_dora"] = True
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match="use_dora"):
        read_adapter(bad)
    with pytest.raises(InvalidInputError, match="adapter_model.safetensors"):
        read_adapter(tmp_path)
    with pytest.raises(InvalidInputError, match="not a folder"):
        read_adapter(tmp_path / "missing")


def test_version_stamps_follow_switches() -> None:
    stamps = VersionStamps()
    stamps.start("a", 1)
    stamps.start("b", 1)
    stamps.switch({"a-1f2e": 3}, 2)  # a had 3 tokens; b was not scheduled yet
    stamps.start("c", 2)
    stamps.switch({"a-1f2e": 5, "c-99": 1}, 4)
    assert stamps.finish("a", 7) == [1, 1, 1, 2, 2, 4, 4]
    assert stamps.finish("b", 2) == [4, 4]  # not scheduled before either switch
    assert stamps.finish("c", 3) == [2, 4, 4]
    assert len(stamps) == 0
    assert engine_request_key("mint12-ab12cd34") == "mint12"


def test_version_stamps_unscheduled_request_gets_latest_version() -> None:
    stamps = VersionStamps()
    stamps.start("x", 1)
    stamps.switch({}, 2)
    stamps.switch({}, 3)
    assert stamps.finish("x", 2) == [3, 3]


def test_version_store_numbers_copies_and_evicts(tiny_adapter: Path, tmp_path: Path) -> None:
    import shutil

    folders = {v: Path(shutil.copytree(tiny_adapter, tmp_path / f"v{v}")) for v in (1, 2, 3, 4)}
    store = VersionStore(keep_versions=2)
    try:
        assert store.add(None, None) == 0 and store.folder(0) is None  # the base weights
        assert store.add(folders[1], 1) == 1
        copy1 = store.folder(1)
        assert copy1 is not None and copy1 != folders[1]
        assert (copy1 / "adapter_model.safetensors").exists()  # a copy: the learner may overwrite
        assert store.add(folders[1], None) == 1  # a folder keeps its number
        assert store.add(folders[1], 1) == 1
        with pytest.raises(InvalidInputError, match="policy_version"):
            store.add(folders[2], 1)
        with pytest.raises(InvalidInputError, match="policy_version"):
            store.add(folders[2], True)  # type: ignore[arg-type]
        assert store.add(folders[4], None) == -1  # nobody numbered it: untracked
        assert store.evict() == []
        assert (store.add(folders[2], 2), store.add(folders[3], 3)) == (2, 3)
        assert store.evict() == [1] and not copy1.exists()  # base and untracked are kept
        with pytest.raises(NotFoundError, match="policy_version: 1 is not served"):
            store.folder(1)
        assert all(v in store for v in (0, -1, 2, 3)) and 1 not in store
        served = store.folder(3)
        assert served is not None
        assert sorted(store.reset(in_use=served)) == [-1, 0, 2, 3]
        assert served.exists()  # the weights being served came from it
        assert store.add(folders[1], None) == -2  # numbers were forgotten
        # Another learner at the same step shares the engine: its folder gets a private number.
        assert store.add(folders[2], 5) == 5
        assert store.add(folders[3], 5, exclusive=False) == -3
        assert store.add(folders[3], 5, exclusive=False) == -3  # and keeps it
        assert store.add(folders[4], 0) == 0  # a learner's step 0 ...
        assert store.add(None, None) == -4  # ... so the base weights get another number
    finally:
        store.close()
    assert not served.exists()


def test_engine_config_resolves_per_hardware() -> None:
    cpu = EngineConfig(device="cpu").resolve()
    assert (cpu.strategy, cpu.dtype) == ("merged", "float32")
    gpu = EngineConfig(device="cuda").resolve()
    assert (gpu.strategy, gpu.dtype) == ("adapter", "bfloat16")
    assert EngineConfig(device="cpu", strategy="adapter").resolve().strategy == "adapter"
    with pytest.raises(InvalidInputError, match="strategy"):
        EngineConfig(strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="kv_cache_bytes"):
        EngineConfig(kv_cache_bytes=10)
    # KV blocks short enough for a group's samples to share their prompt's prefill on CPU.
    assert (cpu.block_size, gpu.block_size) == (32, None)
    assert EngineConfig(device="cpu", block_size=128).resolve().block_size == 128
    for bad in (0, 24, -32):
        with pytest.raises(InvalidInputError, match="block_size"):
            EngineConfig(block_size=bad)


def test_probe_tolerance_follows_the_samplers_precision() -> None:
    """fp32 is checked to 1e-3 nats at every position; bf16 rounding alone moves single probe
    logprobs by over 0.5 nats, so a bf16 engine (a GPU's default) is checked on the mean."""
    assert EngineConfig(device="cpu").resolve().probe_tolerance == 1e-3
    assert EngineConfig(device="cuda").resolve().probe_tolerance == 0.25
    assert EngineConfig(device="cpu", dtype="bfloat16").resolve().probe_tolerance == 0.25
    assert EngineConfig(device="cuda", probe_tolerance=0.1).resolve().probe_tolerance == 0.1
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="probe_tolerance"):
            EngineConfig(probe_tolerance=bad)
    # bf16: one position off by 0.6 (rounding) passes on the mean; everything off by 0.2 fails.
    from mint_rl.errors import WeightSyncError
    from mint_rl.sampler.weight_sync import check_arrival

    expected = [-1.0] * 10
    check_arrival(3, [-1.6] + [-1.0] * 9, expected, 0.1, exact=False)
    with pytest.raises(WeightSyncError, match="on average"):
        check_arrival(3, [-1.2] * 10, expected, 0.1, exact=False)
    with pytest.raises(WeightSyncError, match="position 1"):
        check_arrival(3, [-1.6] + [-1.0] * 9, expected, 1e-3)


def test_chat_prompt_uses_template(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from mint_rl.sampler import chat_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = chat_prompt(tok, [{"role": "user", "content": "What is 3 + 4?"}])
    text = tok.decode(prompt.to_ints())
    assert text.startswith("<|im_start|>user") and text.endswith("<|im_start|>assistant\n")
    with pytest.raises(InvalidInputError, match=r"messages\[0\]"):
        chat_prompt(tok, [{"content": "x"}])


def _sampler_imports() -> dict[str, set[str]]:
    """Module -> the mint_rl.sampler modules it imports anywhere in its file (TYPE_CHECKING
    blocks and function bodies included)."""
    package = Path(__file__).resolve().parents[1] / "mint_rl" / "sampler"
    names = {f.stem for f in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for file in package.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target == "mint_rl.sampler":
                    deps.add("__init__")
                elif target.startswith("mint_rl.sampler."):
                    name = target.split(".")[2]
                    if name in names:
                        deps.add(name)
        graph[file.stem] = deps - {file.stem}
    return graph


def test_sampler_imports_point_one_way() -> None:
    graph = _sampler_imports()
    assert all("__init__" not in deps for deps in graph.values())  # nobody reaches up
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())
    # The vLLM engine and the version store know nothing of strategies or of each other.
    assert not graph["vllm_engine"] & {"weight_sync", "engine", "versions"}
    assert not graph["versions"] & {"weight_sync", "engine", "vllm_engine"}
    assert "engine" not in graph["weight_sync"]


def test_the_cpu_kv_cache_is_sized_for_the_workload_within_its_share_of_memory() -> None:
    from types import SimpleNamespace

    from mint_rl.sampler.config import MIN_KV_CACHE, kv_bytes_per_token, kv_cache_size

    GiB = 1 << 30
    # Qwen3-0.6B's shape: 2 (K, V) x 28 layers x 8 KV heads x 128 x 4 bytes per token in fp32.
    qwen = SimpleNamespace(num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                           head_dim=128, hidden_size=1024)
    assert kv_bytes_per_token(qwen, "float32") == 229_376
    assert kv_bytes_per_token(qwen, "bfloat16") == 114_688
    config = EngineConfig(device="cpu", sequences=32, sequence_tokens=576).resolve()
    # Plenty of memory: exactly the batch at full length, vLLM's own concurrency.
    roomy = kv_cache_size(config, qwen, available=64 * GiB)
    assert roomy.bytes == 32 * 576 * 229_376 and roomy.max_num_seqs is None
    # A quarter of 8 GiB holds 16 of the 32 sequences at full length: vLLM runs 16 at a time,
    # so the admitted ones finish instead of evicting each other.
    tight = kv_cache_size(config, qwen, available=8 * GiB)
    assert tight.bytes == 2 * GiB and tight.max_num_seqs == 2 * GiB // (576 * 229_376) == 16
    # Never below the floor; an explicit size wins.
    assert kv_cache_size(config, qwen, available=GiB).bytes == MIN_KV_CACHE
    fixed = replace(config, kv_cache_bytes=GiB)
    assert kv_cache_size(fixed, qwen, available=64 * GiB).bytes == GiB
    assert kv_cache_size(fixed, qwen, available=64 * GiB).max_num_seqs == GiB // (576 * 229_376)
    with pytest.raises(InvalidInputError, match="sequences"):
        EngineConfig(sequences=0)


def test_an_engine_sized_for_another_workload_still_serves_a_run() -> None:
    running = EngineConfig(device="cpu").resolve()
    # A run's batch sized the KV cache only at the engine's start: a second run reuses it ...
    assert EngineConfig(device="cpu", sequences=64, sequence_tokens=518).served_by(running)
    # ... but not an engine that computes differently.
    assert not EngineConfig(device="cpu", dtype="bfloat16").served_by(running)
    assert not EngineConfig(device="cpu", kv_cache_bytes=1 << 30).served_by(running)


def test_the_engine_never_asks_for_more_context_than_the_model_has(tiny_model: Path) -> None:
    """vLLM refuses to start when max_model_len exceeds the model's context: the engine caps it
    (the tiny model has 512 positions; the default asks for 4096)."""
    from mint_rl.sampler.engine import _within_context

    context = json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"]
    assert _within_context(EngineConfig(), tiny_model).max_model_len == context < 4096
    assert _within_context(EngineConfig(max_model_len=256), tiny_model).max_model_len == 256
    assert _within_context(EngineConfig(max_model_len=None), tiny_model).max_model_len is None

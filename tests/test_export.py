"""`mint-rl export`: an exported adapter and merged model load as they are (transformers + peft
here on the tiny model, vLLM on the default model) and compute the learner's logprobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import randomize_lora_b, reference_logprobs

import mint_rl as mint
from mint_rl import types
from mint_rl.cli import main as cli_main
from mint_rl.errors import ConflictError
from mint_rl.run.checkpoints import RunCheckpoints
from mint_rl.run.export import export
from mint_rl.run.run_folder import find_checkpoint

TOKENS = [5, 17, 101, 33, 250, 7, 64, 300, 12, 99, 41]


def _learner_logprobs(client: mint.TrainingClient, tokens: list[int]) -> torch.Tensor:
    datum = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                        loss_fn_inputs={"target_tokens": tokens[1:],
                                        "weights": [0.0] * (len(tokens) - 1)})
    out = client.forward([datum], "cross_entropy").result()
    return out.loss_fn_outputs[0]["logprobs"].to_torch()


def trained_run(base: Path, run_dir: Path, *, rank: int, seed: int = 1, step: int = 3
                ) -> tuple[mint.TrainingClient, Path]:
    """A run folder whose one checkpoint holds an adapter that changes the model (LoRA B != 0)."""
    client = mint.ServiceClient().create_lora_training_client(str(base), rank=rank, seed=0)
    randomize_lora_b(client.engine.model, seed=seed, scale=0.05)
    state = client.save_state(f"export-{run_dir.name}-{seed}").result().path
    RunCheckpoints(run_dir).record(step, state, step, [])
    return client, run_dir


@pytest.fixture(scope="module")
def tiny_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return trained_run(tiny_model, tmp_path_factory.mktemp("run") / "tiny", rank=4)


def test_exported_adapter_and_merged_model_compute_the_learners_logprobs(
        tiny_model: Path, tiny_run: tuple[mint.TrainingClient, Path], tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client, run_dir = tiny_run
    learner = _learner_logprobs(client, TOKENS)
    assert cli_main(["export", str(run_dir), str(tmp_path / "adapter")]) == 0
    assert cli_main(["export", str(run_dir), str(tmp_path / "merged"), "--merged"]) == 0

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        unadapted = reference_logprobs(base, TOKENS[:-1], TOKENS[1:])
        on_base = reference_logprobs(PeftModel.from_pretrained(base, tmp_path / "adapter"),
                                     TOKENS[:-1], TOKENS[1:])
        # The adapter folder alone: peft finds the base through base_model_name_or_path.
        alone = reference_logprobs(AutoPeftModelForCausalLM.from_pretrained(
            tmp_path / "adapter", dtype=torch.float32), TOKENS[:-1], TOKENS[1:])
        merged = reference_logprobs(AutoModelForCausalLM.from_pretrained(
            tmp_path / "merged", dtype=torch.float32), TOKENS[:-1], TOKENS[1:])
    assert (learner - unadapted).abs().max() > 1e-2, "the adapter should change the model"
    for exported in (on_base, alone, merged):
        torch.testing.assert_close(exported, learner, atol=1e-5, rtol=0)

    # Self-contained: the tokenizer travels with both folders.
    reference = AutoTokenizer.from_pretrained(tiny_model)
    for folder in ("adapter", "merged"):
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / folder)
        assert tokenizer.encode("What is 3 + 4?") == reference.encode("What is 3 + 4?")
        assert tokenizer.chat_template == reference.chat_template


def test_export_writes_standard_folders_without_the_optimizer(
        tiny_model: Path, tiny_run: tuple[mint.TrainingClient, Path], tmp_path: Path) -> None:
    _, run_dir = tiny_run
    checkpoint = find_checkpoint(run_dir)
    adapter = {p.name for p in export(checkpoint, tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= adapter
    assert not adapter & {"optimizer.safetensors", "mint_state.json"}
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model.resolve())

    merged = {p.name for p in export(checkpoint, tmp_path / "merged", merged=True).iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json",
            "tokenizer.json"} <= merged
    assert not [name for name in merged if name.endswith((".bin", ".pt", ".pth"))]
    assert not [name for name in merged if name.startswith("adapter")]


def test_export_refuses_to_overwrite_what_is_not_an_earlier_export(
        tiny_run: tuple[mint.TrainingClient, Path], tmp_path: Path) -> None:
    checkpoint = find_checkpoint(tiny_run[1])
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConflictError, match="out: .* not empty"):
        export(checkpoint, out)
    with pytest.raises(ConflictError, match="no earlier export"):
        export(checkpoint, out, force=True)
    assert (out / "notes.txt").read_text() == "mine"

    fresh = tmp_path / "fresh"
    export(checkpoint, fresh)
    with pytest.raises(ConflictError, match="--force"):
        export(checkpoint, fresh, merged=True)
    assert cli_main(["export", str(tiny_run[1]), str(fresh), "--merged"]) == 2  # refused
    export(checkpoint, fresh, merged=True, force=True)  # an earlier export: replaced
    assert (fresh / "model.safetensors").is_file()
    assert not (fresh / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_exported_folders_serve_the_learners_logprobs_in_vllm(
        default_model: Path, sampler_engine, tmp_path: Path) -> None:
    from mint_rl.sampler import IN_PROCESS, SamplingClient

    client, run_dir = trained_run(default_model, tmp_path / "run", rank=8)
    tokens = client.get_tokenizer().encode("The capital of France is Paris, and 3 + 4 = 7.")
    learner = _learner_logprobs(client, tokens)
    checkpoint = find_checkpoint(run_dir)
    adapter = export(checkpoint, tmp_path / "adapter")
    merged = export(checkpoint, tmp_path / "merged", merged=True)

    # The adapter on the session's engine (the adapter names the default model's folder).
    served = SamplingClient(model_path=adapter).compute_logprobs(
        types.ModelInput.from_ints(tokens)).result()
    # The merged folder is a model of its own: vLLM starts an engine on it.
    try:
        alone = SamplingClient(base_model=str(merged)).compute_logprobs(
            types.ModelInput.from_ints(tokens)).result()
    finally:
        engine = IN_PROCESS.running(str(merged))
        if engine is not None:
            engine.close()
    for logprobs in (served, alone):
        assert logprobs[0] is None
        torch.testing.assert_close(torch.tensor(logprobs[1:]), learner, atol=1e-3, rtol=0)

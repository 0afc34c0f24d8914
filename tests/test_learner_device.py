"""The learner's device: "auto" picks CUDA when there is one, an explicit device is honoured or
refused by name before any model loads, tensors follow the model, results come back on the CPU,
and checkpoints do not depend on the device.

torch.cuda is monkeypatched where a test is about CUDA's presence, so the tests say the same on
any machine; the tests marked `cuda` run only where a GPU is.
"""

from __future__ import annotations

import pytest
import torch
from helpers import rl_batch, to_datums

import mint_rl as mint
from mint_rl import types
from mint_rl.errors import InvalidInputError
from mint_rl.learner import base_models as base_models_module
from mint_rl.learner import checkpoint as ckpt
from mint_rl.learner import engine as engine_module
from mint_rl.learner.engine import LearnerEngine, LearnerSettings
from mint_rl.run.config import OfflineConfig, RLConfig, parse_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _client(model, device: str, seed: int = 0) -> mint.TrainingClient:
    service = mint.ServiceClient(learner_settings=LearnerSettings(device=device))
    return service.create_lora_training_client(str(model), rank=4, seed=seed)


def _datums(vocab: int) -> list[types.Datum]:
    items = rl_batch(vocab, seed=5)
    return to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])


def _devices(client: mint.TrainingClient) -> set[str]:
    return {p.device.type for p in client.engine.model.parameters()}


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every attempt of the engine to load a tokenizer or a model (and fails it)."""
    seen: list[str] = []

    class Loader:
        def __init__(self, what: str) -> None:
            self.what = what

        def from_pretrained(self, *args, **kwargs):
            seen.append(self.what)
            raise AssertionError(f"{self.what} loaded")

    monkeypatch.setattr(engine_module, "AutoTokenizer", Loader("tokenizer"))
    monkeypatch.setattr(base_models_module, "AutoModelForCausalLM", Loader("model"))
    return seen


def test_an_explicit_cpu_learner_trains_on_the_cpu_and_returns_cpu_results(tiny_model):
    client = _client(tiny_model, "cpu")
    assert client.engine.device == torch.device("cpu")
    assert _devices(client) == {"cpu"}
    before = client.engine.lora_state()
    out = client.forward_backward(_datums(client.engine.vocab_size), "cross_entropy").result()
    step = client.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert out.loss > 0 and step.metrics["step:max"] == 1.0
    logprobs = [o["logprobs"].to_torch() for o in out.loss_fn_outputs]
    assert all(lp.device.type == "cpu" and lp.dtype == torch.float32 for lp in logprobs)
    after = client.engine.lora_state()
    assert any(not torch.equal(after[k], before[k]) for k in before)  # it trained
    assert {v.device.type for v in after.values()} == {"cpu"}
    moments = client.engine.optimizer_state()
    assert moments and {v.device.type for v in moments.values()} == {"cpu"}


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_cuda_device_is_refused_by_name_before_loading(tiny_model, no_cuda,
                                                                     loads, device):
    with pytest.raises(InvalidInputError) as info:
        LearnerEngine(tiny_model, types.LoraConfig(rank=2), LearnerSettings(device=device))
    assert info.value.field == "device"
    assert "no CUDA device is available" in str(info.value)
    assert "device='cpu' or 'auto'" in str(info.value)
    with pytest.raises(InvalidInputError, match="^device: "):  # the client's path, the same
        _client(tiny_model, device)
    assert loads == []


def test_a_cuda_index_past_the_last_device_is_refused_by_name(tiny_model, monkeypatch, loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InvalidInputError) as info:
        LearnerEngine(tiny_model, types.LoraConfig(rank=2), LearnerSettings(device="cuda:2"))
    assert info.value.field == "device" and "2 CUDA device(s)" in str(info.value)
    assert loads == []


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CUDA", "cuda:", "cuda:-1", " cpu", "mps",
                                    "", None, 0])
def test_a_malformed_device_is_refused_naming_the_field(device):
    with pytest.raises(InvalidInputError) as info:
        LearnerSettings(device=device)  # type: ignore[arg-type]
    assert info.value.field == "device"
    assert "'auto', 'cpu', 'cuda' or 'cuda:N'" in str(info.value)
    for config in (RLConfig, OfflineConfig):
        with pytest.raises(InvalidInputError) as info:
            config(learner_device=device)  # type: ignore[arg-type]
        assert info.value.field == "learner_device"


def test_the_learner_device_option_reaches_the_settings(capsys):
    assert RLConfig().learner_device == "auto" and OfflineConfig().learner_device == "auto"
    assert parse_config(RLConfig, ["--learner-device", "cuda:1"]).learner_device == "cuda:1"
    with pytest.raises(SystemExit):
        parse_config(RLConfig, ["--learner-device", "gpu"])
    assert "learner_device" in capsys.readouterr().err


def test_auto_is_cuda_when_there_is_one_else_the_cpu(tiny_model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert LearnerSettings().device == "auto"
    assert LearnerSettings().resolve_device() == torch.device("cuda", 1)
    assert LearnerSettings(device="cuda").resolve_device() == torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert LearnerSettings().resolve_device() == torch.device("cpu")
    client = _client(tiny_model, "auto")
    assert client.engine.device == torch.device("cpu") and _devices(client) == {"cpu"}
    assert client.engine.pack([[1, 2, 3]]).input_ids.device.type == "cpu"


def test_a_checkpoint_round_trips_on_the_cpu(tiny_model):
    a = _client(tiny_model, "cpu", seed=3)
    datums = _datums(a.engine.vocab_size)
    a.forward_backward(datums, "cross_entropy").result()
    a.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    saved = a.save_state("device-round-trip", overwrite=True).result()

    folder = ckpt.resolve_path(saved.path)
    assert {v.device.type for v in ckpt.read_adapter(folder, "cpu").values()} == {"cpu"}
    service = mint.ServiceClient(learner_settings=LearnerSettings(device="cpu"))
    b = service.create_training_client_from_state_with_optimizer(saved.path)
    assert b.engine.device == torch.device("cpu") and b.engine.step == 1
    mine, theirs = a.engine.lora_state(), b.engine.lora_state()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    mine, theirs = a.engine.optimizer_state(), b.engine.optimizer_state()
    assert mine and mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # The same next step: the restored moments are the ones the optimizer uses.
    steps = [c.forward_backward(datums, "cross_entropy").result().loss for c in (a, b)]
    for c in (a, b):
        c.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert steps[0] == steps[1]
    assert all(torch.equal(v, b.engine.lora_state()[k]) for k, v in a.engine.lora_state().items())


def test_a_custom_loss_gets_cpu_logprobs_whatever_the_device(tiny_model):
    client = _client(tiny_model, "auto")
    seen: list[torch.Tensor] = []

    def nll(data, logprobs):
        seen.extend(logprobs)
        return sum(-(d.loss_fn_inputs["weights"].to_torch() * lp).sum()
                   for d, lp in zip(data, logprobs, strict=True)), {}

    client.forward_backward_custom(_datums(client.engine.vocab_size), nll).result()
    assert seen and all(lp.device.type == "cpu" and lp.requires_grad for lp in seen)
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in client.engine.params.values())


# --------------------------------------------------------------------------------------------
# On a GPU


@cuda
def test_a_cuda_learner_matches_the_cpu_learner_in_fp32(tiny_model):
    on_gpu, on_cpu = _client(tiny_model, "cuda", seed=1), _client(tiny_model, "cpu", seed=1)
    assert _devices(on_gpu) == {"cuda"} and on_gpu.engine.device.index is not None
    datums = _datums(on_cpu.engine.vocab_size)
    outs = [c.forward_backward(datums, "cross_entropy").result() for c in (on_gpu, on_cpu)]
    assert outs[0].loss == pytest.approx(outs[1].loss, rel=1e-4)
    for g, c in zip(outs[0].loss_fn_outputs, outs[1].loss_fn_outputs, strict=True):
        torch.testing.assert_close(g["logprobs"].to_torch(), c["logprobs"].to_torch(),
                                   atol=1e-4, rtol=1e-4)
    for c in (on_gpu, on_cpu):
        c.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert {v.device.type for v in on_gpu.engine.optimizer_state().values()} == {"cpu"}


@cuda
def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu_and_back(tiny_model):
    a = _client(tiny_model, "cuda", seed=2)
    a.forward_backward(_datums(a.engine.vocab_size), "cross_entropy").result()
    a.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    saved = a.save_state("cuda-to-cpu", overwrite=True).result()
    for device in ("cpu", "cuda"):
        service = mint.ServiceClient(learner_settings=LearnerSettings(device=device))
        b = service.create_training_client_from_state_with_optimizer(saved.path)
        assert _devices(b) == {device}
        mine, theirs = a.engine.lora_state(), b.engine.lora_state()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
        mine, theirs = a.engine.optimizer_state(), b.engine.optimizer_state()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)

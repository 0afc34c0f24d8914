"""Many LoRAs on one base: training clients of one base model share its frozen weights, and
nothing one client does reaches another."""

from __future__ import annotations

import gc
import math

import numpy as np
import torch
from helpers import rl_batch, to_datums

import mint_rl as mint
from mint_rl.learner.base_models import BaseModels, load_base, sharing_weights


def _base_params(client: mint.TrainingClient) -> dict[str, torch.Tensor]:
    return {n: p for n, p in client.engine.model.named_parameters() if not p.requires_grad}


def _lora_params(client: mint.TrainingClient) -> dict[str, torch.Tensor]:
    return dict(client.engine.params)


def _logprobs(client: mint.TrainingClient, data) -> list[np.ndarray]:
    out = client.forward(data, "cross_entropy").result()
    return [o["logprobs"].to_numpy() for o in out.loss_fn_outputs]


def _sft(client: mint.TrainingClient, weight: float = 1.0):
    items = rl_batch(client.engine.vocab_size, groups=1, samples=2, prompt_len=4)
    for item in items:
        item["weights"] = [w * weight for w in item["weights"]]
    return to_datums(items, "cross_entropy", [[] for _ in items])


def test_clients_of_one_base_share_its_weights_and_nothing_else(tiny_model) -> None:
    service = mint.ServiceClient()
    a = service.create_lora_training_client(str(tiny_model), rank=4, seed=0)
    b = service.create_lora_training_client(str(tiny_model), rank=8, seed=1)
    base_a, base_b = _base_params(a), _base_params(b)
    assert base_a.keys() == base_b.keys() and base_a
    assert all(base_a[n].data_ptr() == base_b[n].data_ptr() for n in base_a)  # one copy
    lora_a, lora_b = _lora_params(a), _lora_params(b)
    assert lora_a and not {p.data_ptr() for p in lora_a.values()} & {
        p.data_ptr() for p in lora_b.values()}
    assert len(service.base_models.loaded()) == 1
    # a client of its own (another ServiceClient) loads a copy of its own
    c = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=0)
    assert all(_base_params(c)[n].data_ptr() != base_a[n].data_ptr() for n in base_a)
    # same seed, same start, shared base or not
    data = _sft(a)
    for x, y in zip(_logprobs(a, data), _logprobs(c, data), strict=True):
        np.testing.assert_array_equal(x, y)
    for client in (a, b, c):
        client.close()


def test_training_one_client_leaves_the_other_and_the_base_untouched(tiny_model) -> None:
    service = mint.ServiceClient()
    a = service.create_lora_training_client(str(tiny_model), rank=4, seed=0)
    b = service.create_lora_training_client(str(tiny_model), rank=4, seed=0)
    data = _sft(a)
    before = _logprobs(b, data)
    base_before = {n: p.detach().clone() for n, p in _base_params(b).items()}
    for _ in range(3):
        a.forward_backward(data, "cross_entropy").result()
        a.optim_step(mint.types.AdamParams(learning_rate=1e-2)).result()
    # a bad request to a: refused, and nothing anywhere changes
    try:
        a.forward_backward(_sft(a, weight=math.nan), "cross_entropy").result()
    except ValueError:
        pass
    else:
        raise AssertionError("a NaN weight must be refused")
    assert any(np.abs(x - y).max() > 1e-3 for x, y in zip(_logprobs(a, data), before,
                                                          strict=True))
    for x, y in zip(_logprobs(b, data), before, strict=True):
        np.testing.assert_array_equal(x, y)
    assert all(torch.equal(p, base_before[n]) for n, p in _base_params(b).items())
    a.close()
    b.close()


def test_the_last_client_to_go_frees_the_base(tiny_model) -> None:
    models = BaseModels()
    device = torch.device("cpu")
    first = models.get(tiny_model, device)
    assert models.get(tiny_model, device) is first and len(models.loaded()) == 1
    copy = sharing_weights(first)
    assert copy is not first and not any(p.requires_grad for p in copy.parameters())
    del first, copy  # what an engine holds while it lives (LearnerEngine.shared_base)
    gc.collect()
    assert models.loaded() == []
    assert not any(p.requires_grad for p in load_base(tiny_model, device).parameters())

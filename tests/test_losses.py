"""Each loss equals its formula, computed here independently of the learner (values and grads).

The reference runs every sequence through the plain HF forward (no packing, no shared prompts,
full log-softmax) and applies the formula as written in the docs; the learner's packed, selective
computation must agree.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import lora_grads, randomize_lora_b, reference_logprobs, rl_batch, to_datums

import mint_rl as mint
from mint_rl.losses import soft_clip_ratio


def _hard_clip(r, lo, hi):
    return torch.clamp(r, lo, hi)


def _soft_clip(r, lo, hi, beta):
    d = torch.log(r)
    a, b = math.log(lo), math.log(hi)
    softplus = lambda x: torch.log1p(torch.exp(beta * x)) / beta  # noqa: E731
    s = a + softplus(d - a) - softplus(d - b)
    return torch.exp(s)


def formula(loss_fn: str, config: dict, lp, item, q):
    """The documented per-datum loss, written out directly."""
    w = torch.tensor(item["weights"])
    if loss_fn == "cross_entropy":
        return -(w * lp).sum()
    a = torch.tensor(item["advantages"])
    q = torch.tensor(q)
    r = torch.exp(lp - q)
    if loss_fn == "importance_sampling":
        return -(r * a).sum()
    if loss_fn == "ppo":
        eps = config.get("clip_ratio", 0.2)
        return -torch.minimum(r * a, _hard_clip(r, 1 - eps, 1 + eps) * a).sum()
    if loss_fn == "cispo":
        beta = config.get("beta", 1.0)
        coef = _hard_clip(r, 0.8, 1.2) if math.isinf(beta) else _soft_clip(r, 0.8, 1.2, beta)
        return -(coef.detach() * lp * a).sum()
    if loss_fn == "dro":
        beta = config.get("beta", 0.05)
        return -(w * (lp * a - 0.5 * beta * (lp - q) ** 2)).sum()
    raise AssertionError(loss_fn)


CASES = [
    ("cross_entropy", {}),
    ("importance_sampling", {}),
    ("ppo", {}),
    ("ppo", {"clip_ratio": 0.1}),
    ("cispo", {}),
    ("cispo", {"beta": math.inf}),
    ("dro", {"beta": 0.3}),
]


def _check_against_reference(client: mint.TrainingClient, loss_fn: str, config: dict, seed: int):
    model = client.engine.model
    vocab = client.engine.vocab_size
    items = rl_batch(vocab, seed=seed)
    with torch.no_grad():
        ref_lp = [reference_logprobs(model, it["tokens"], it["targets"]) for it in items]
    # Sampler logprobs: the learner's, shifted so that some ratios fall outside [0.8, 1.2].
    g = torch.Generator().manual_seed(seed)
    offsets = [torch.empty(len(lp)).uniform_(-0.5, 0.5, generator=g) for lp in ref_lp]
    q = [(lp + off).tolist() for lp, off in zip(ref_lp, offsets, strict=True)]

    client.engine.zero_grad()
    reference = sum(
        formula(loss_fn, config, reference_logprobs(model, it["tokens"], it["targets"]), it, qi)
        for it, qi in zip(items, q, strict=True)
    )
    reference.backward()
    ref_grads = lora_grads(model)
    client.engine.zero_grad()

    datums = to_datums(items, loss_fn, q)
    forward = client.forward(datums, loss_fn, config).result()
    assert not lora_grads(model), "forward must not touch gradients"
    out = client.forward_backward(datums, loss_fn, config).result()
    grads = lora_grads(model)
    client.engine.zero_grad()

    assert out.loss == pytest.approx(float(reference.detach()), rel=1e-4, abs=1e-4)
    assert forward.loss == pytest.approx(out.loss, rel=1e-5, abs=1e-5)
    for got, want in zip(out.loss_fn_outputs, ref_lp, strict=True):
        torch.testing.assert_close(got["logprobs"].to_torch(), want, atol=2e-4, rtol=0)
    assert set(grads) == set(ref_grads) and ref_grads
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    assert scale > 0
    for name, want in ref_grads.items():
        torch.testing.assert_close(grads[name], want, atol=1e-4 * scale, rtol=1e-3, msg=name)
    return out


@pytest.fixture(scope="module")
def tiny_client(tiny_model):
    client = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=0)
    randomize_lora_b(client.engine.model)
    return client


@pytest.mark.parametrize(("loss_fn", "config"), CASES)
def test_loss_matches_formula_tiny(tiny_client, loss_fn, config):
    out = _check_against_reference(tiny_client, loss_fn, config, seed=3)
    if loss_fn in ("ppo", "cispo"):
        # The batch must exercise both sides of the clip for the check to mean something.
        assert 0.05 < out.metrics["clip_frac:mean"] < 0.95


@pytest.fixture(scope="module")
def default_client(default_model):
    client = mint.ServiceClient().create_lora_training_client(str(default_model), rank=8, seed=0)
    randomize_lora_b(client.engine.model, scale=0.01)
    return client


@pytest.mark.slow
@pytest.mark.parametrize(("loss_fn", "config"), [CASES[0], CASES[2], CASES[4], CASES[6]])
def test_loss_matches_formula_default_model(default_client, loss_fn, config):
    _check_against_reference(default_client, loss_fn, config, seed=5)


def test_soft_clip_limits():
    d = torch.linspace(-2, 2, 101, dtype=torch.float64)
    r = d.exp()
    hard = soft_clip_ratio(d, 0.8, 1.2, math.inf)
    torch.testing.assert_close(hard, r.clamp(0.8, 1.2))
    previous_gap = math.inf
    for beta in (1.0, 10.0, 100.0, 1000.0):
        soft = soft_clip_ratio(d, 0.8, 1.2, beta)
        assert (soft >= 0.8 - 1e-6).all() and (soft <= 1.2 + 1e-6).all()  # inside the bounds
        assert (soft[1:] - soft[:-1] >= -1e-12).all()  # monotone in the ratio
        gap = float((soft - hard).abs().max())
        assert gap < previous_gap  # sharper beta -> closer to the hard clip
        previous_gap = gap
    assert previous_gap < 1e-3
    # One-sided (lo = 0, Tinker's CISPO default range): no lower clamp at all.
    torch.testing.assert_close(soft_clip_ratio(d, 0.0, 4.0, math.inf), r.clamp(0.0, 4.0))


def test_one_advantage_per_trajectory_broadcasts(tiny_client):
    tokens = [5, 6, 7, 8]
    q = [-0.5, -0.3, -0.8, -0.2]
    per_token = mint.types.Datum(
        model_input=mint.ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": tokens, "logprobs": q, "advantages": [0.15] * 4},
    )
    broadcast = mint.types.Datum(
        model_input=mint.ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": tokens, "logprobs": q, "advantages": [0.15]},
    )
    a = tiny_client.forward([per_token], "ppo").result().loss
    b = tiny_client.forward([broadcast], "ppo").result().loss
    assert a == pytest.approx(b, rel=1e-6) and a != 0
    # With weights, the single advantage lands only on weighted tokens.
    masked = mint.types.Datum(
        model_input=mint.ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": tokens, "logprobs": q, "advantages": [0.15],
                        "weights": [0, 0, 1, 1]},
    )
    explicit = mint.types.Datum(
        model_input=mint.ModelInput.from_ints(tokens),
        loss_fn_inputs={"target_tokens": tokens, "logprobs": q, "advantages": [0, 0, 0.15, 0.15]},
    )
    assert tiny_client.forward([masked], "importance_sampling").result().loss == pytest.approx(
        tiny_client.forward([explicit], "importance_sampling").result().loss, rel=1e-6
    )


def test_custom_loss_equals_cross_entropy(tiny_client):
    items = rl_batch(tiny_client.engine.vocab_size, seed=11)
    datums = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])
    tiny_client.engine.zero_grad()
    ce = tiny_client.forward_backward(datums, "cross_entropy").result()
    ce_grads = lora_grads(tiny_client.engine.model)
    tiny_client.engine.zero_grad()

    def nll(data, logprobs):
        loss = sum(-(d.loss_fn_inputs["weights"].to_torch() * lp).sum()
                   for d, lp in zip(data, logprobs, strict=True))
        return loss, {"n_datums": len(data)}

    custom = tiny_client.forward_backward_custom(datums, nll).result()
    custom_grads = lora_grads(tiny_client.engine.model)
    tiny_client.engine.zero_grad()
    assert custom.metrics["custom_loss:sum"] == pytest.approx(ce.loss, rel=1e-5)
    assert custom.loss == pytest.approx(ce.loss, rel=1e-5)  # linear loss: surrogate == loss
    assert custom.metrics["n_datums"] == len(datums)
    for name, want in ce_grads.items():
        torch.testing.assert_close(custom_grads[name], want, atol=1e-6, rtol=1e-4)


def test_gradients_accumulate_as_a_sum(tiny_client):
    items = rl_batch(tiny_client.engine.vocab_size, seed=21)
    datums = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])
    tiny_client.engine.zero_grad()
    whole = tiny_client.forward_backward(datums, "cross_entropy").result().loss
    whole_grads = lora_grads(tiny_client.engine.model)
    tiny_client.engine.zero_grad()
    first = tiny_client.forward_backward(datums[:2], "cross_entropy")
    second = tiny_client.forward_backward(datums[2:], "cross_entropy")
    assert first.result().loss + second.result().loss == pytest.approx(whole, rel=1e-5)
    for name, want in whole_grads.items():
        torch.testing.assert_close(lora_grads(tiny_client.engine.model)[name], want,
                                   atol=1e-6, rtol=1e-4)
    tiny_client.engine.zero_grad()

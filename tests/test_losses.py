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
from mint_rl.losses import LOSSES, get_loss, soft_clip_ratio


def _hard_clip(r, lo, hi):
    return torch.clamp(r, lo, hi)


def _soft_clip(r, lo, hi, beta):
    d = torch.log(r)
    a, b = math.log(lo), math.log(hi)
    softplus = lambda x: torch.log1p(torch.exp(beta * x)) / beta  # noqa: E731
    s = a + softplus(d - a) - softplus(d - b)
    return torch.exp(s)


def _bounds(config: dict) -> tuple[float, float]:
    """The seed's clip_ratio eps gives [1 - eps, 1 + eps]; Tinker's thresholds are the bounds."""
    eps = config.get("clip_ratio", 0.2)
    return (config.get("clip_low_threshold", 1 - eps), config.get("clip_high_threshold", 1 + eps))


def formula(loss_fn: str, config: dict, lp, item, q):
    """The documented per-datum loss, written out directly."""
    w = torch.tensor(item["weights"])
    if loss_fn == "cross_entropy":
        return -(w * lp).sum()
    a = torch.tensor(item["advantages"])
    q = torch.tensor(q)
    r = torch.exp(lp - q)
    lo, hi = _bounds(config)
    if loss_fn == "importance_sampling":
        return -(w * r * a).sum()
    if loss_fn == "ppo":
        return -(w * torch.minimum(r * a, _hard_clip(r, lo, hi) * a)).sum()
    if loss_fn == "cispo":
        beta = config.get("beta", 1.0)
        coef = _hard_clip(r, lo, hi) if math.isinf(beta) else _soft_clip(r, lo, hi, beta)
        return -(w * coef.detach() * lp * a).sum()
    if loss_fn == "dro":
        beta = config.get("beta", 0.05)
        return -(w * (lp * a - 0.5 * beta * (lp - q) ** 2)).sum()
    if loss_fn == "gspo":
        return _gspo_reference(config, lp, w, a, q, torch.tensor(item["ratio_mask"]))
    if loss_fn == "stable_reinforce":
        return _stable_reinforce_reference(config, lp, w, a, q)
    raise AssertionError(loss_fn)


def _with_gradient(value, lp, coef):
    """A scalar equal to `value` whose gradient with respect to lp is `coef` (detached): the
    value and the gradient of the two new losses are written out separately, as derived by
    hand, rather than through the learner's stop-gradient construction."""
    return value.detach() + (coef.detach() * (lp - lp.detach())).sum()


def _gspo_reference(config, lp, w, a, q, m):
    # The paper's sequence ratio (pi/pi_old)^(1/|M|) over the masked positions ...
    s = torch.exp(((lp.detach() - q) * m).sum() / m.sum())
    lo = config.get("clip_low_threshold", 1 - 3e-4)
    hi = config.get("clip_high_threshold", 1 + 4e-4)
    clipped = torch.clamp(s, lo, hi)
    value = -(w * torch.minimum(s * a, clipped * a)).sum()
    # ... and the gradient: -w·A·s where min() picks the unclipped term s·A, else 0.
    unclipped = s * a <= clipped * a
    return _with_gradient(value, lp, torch.where(unclipped, -w * a * s, 0.0))


def _stable_reinforce_reference(config, lp, w, a, q):
    c_max = config.get("clip_high_threshold", 2.0)
    band = (config.get("mask_low_threshold", 0.2), config.get("mask_high_threshold", 5.0))
    beta = config.get("kl_coeff", 0.0)
    r = torch.exp(lp.detach() - q)
    keep = ((r >= band[0]) & (r <= band[1])).float()
    c = torch.clamp(r, max=c_max)
    k3 = r - 1 - torch.log(r)
    value = -(w * keep * (c * lp.detach() * a - beta * k3)).sum()
    # d/dlogp: -w·k·(c·A - beta·(r - 1))
    return _with_gradient(value, lp, -w * keep * (c * a - beta * (r - 1)))


CASES = [
    ("cross_entropy", {}),
    ("importance_sampling", {}),
    ("ppo", {}),
    ("ppo", {"clip_ratio": 0.1}),
    ("cispo", {}),
    ("cispo", {"beta": math.inf}),
    ("dro", {"beta": 0.3}),
    ("gspo", {}),  # the paper's bounds: nearly every sequence is clipped
    ("gspo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1, "ratio_mask": "half"}),
    ("stable_reinforce", {}),
    ("stable_reinforce", {"kl_coeff": 0.5, "clip_high_threshold": 1.2,
                          "mask_low_threshold": 0.7, "mask_high_threshold": 1.4}),
    # Fractional weights and per-token advantages of both signs ("weights": "varied"): a loss
    # that dropped w, or read one advantage per datum, would still pass with 0/1 weights.
    ("importance_sampling", {"weights": "varied"}),
    ("ppo", {"weights": "varied"}),
    ("cispo", {"weights": "varied"}),
    ("dro", {"beta": 0.3, "weights": "varied"}),
    # Tinker's form of the clip config: absolute, asymmetric ratio bounds.
    ("ppo", {"clip_low_threshold": 0.7, "clip_high_threshold": 1.1, "weights": "varied"}),
    ("cispo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.3, "beta": 2.0,
               "weights": "varied"}),
    # One-sided and hard, like Tinker's CISPO default (0, 4); 1.1 so that the bound acts here.
    ("cispo", {"clip_low_threshold": 0.0, "clip_high_threshold": 1.1, "beta": math.inf}),
]
# Both sides of the clip (and of the stable_reinforce trust band) must occur in these cases;
# (loss, n) is the loss's n-th case above.
CLIP_BOTH_SIDES = {("ppo", 0), ("cispo", 0), ("gspo", 1), ("stable_reinforce", 1), ("ppo", 2),
                   ("ppo", 3), ("cispo", 2), ("cispo", 3), ("cispo", 4)}


def _ratio_masks(items: list[dict], how: str | None) -> list[list[float]]:
    """GSPO's sequence ratio mask: the default (the weighted positions), or the first half of
    each completion only, which a default would not give."""
    masks = []
    for it in items:
        m = list(it["weights"])
        if how == "half":
            trained = [i for i, w in enumerate(m) if w]
            for i in trained[len(trained) // 2:]:
                m[i] = 0.0
        masks.append(m)
    return masks


def _vary_weights(items: list[dict], seed: int) -> None:
    """Weights in [0.25, 2] and advantages ~ N(0, 1) on each completion token (prompt: 0)."""
    g = torch.Generator().manual_seed(seed)
    for it in items:
        trained = torch.tensor(it["weights"]) != 0
        w = torch.empty(len(trained)).uniform_(0.25, 2.0, generator=g)
        a = torch.randn(len(trained), generator=g)
        it["weights"] = torch.where(trained, w, 0.0).tolist()
        it["advantages"] = torch.where(trained, a, 0.0).tolist()


def _check_against_reference(client: mint.TrainingClient, loss_fn: str, config: dict, seed: int):
    model = client.engine.model
    vocab = client.engine.vocab_size
    config = dict(config)
    how = config.pop("ratio_mask", None)
    items = rl_batch(vocab, seed=seed)
    if config.pop("weights", None) == "varied":
        _vary_weights(items, seed)
    for it, m in zip(items, _ratio_masks(items, how), strict=True):
        it["ratio_mask"] = m
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
    if how is not None:
        for d, it in zip(datums, items, strict=True):
            d.loss_fn_inputs["sequence_ratio_mask"] = mint.types.TensorData.from_list(
                it["ratio_mask"], "float32")
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
    variant = [c for c in CASES if c[0] == loss_fn].index((loss_fn, config))
    if (loss_fn, variant) in CLIP_BOTH_SIDES:
        # The batch must exercise both sides of the clip for the check to mean something.
        assert 0.05 < out.metrics["clip_frac:mean"] < 0.95
    if loss_fn == "stable_reinforce" and variant == 1:
        assert 0.05 < out.metrics["mask_frac:mean"] < 0.95


@pytest.fixture(scope="module")
def default_client(default_model):
    client = mint.ServiceClient().create_lora_training_client(str(default_model), rank=8, seed=0)
    randomize_lora_b(client.engine.model, scale=0.01)
    return client


@pytest.mark.slow
@pytest.mark.parametrize(("loss_fn", "config"),
                         [CASES[0], CASES[2], CASES[4], CASES[6], CASES[8], CASES[10]])
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


# --------------------------------------------------------------------------------------------
# gspo and stable_reinforce on numbers worked out by hand (the formulas of docs/losses.md)


def _per_token(loss_fn: str, config: dict, logp: list[float], **x: list[float]):
    """The loss's per-token values and d(sum)/d(logp), straight from mint_rl.losses."""
    lp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    loss = get_loss(loss_fn)
    inputs = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()}
    values = loss.per_token(lp, inputs, loss.config(config))
    values.sum().backward()
    assert lp.grad is not None
    return values.detach(), lp.grad


def test_gspo_by_hand():
    # Position 0 is the prompt; the ratio mask takes positions 1 and 2 only, where
    # logp - logq = 0.2 and -0.1: s = exp((0.2 - 0.1) / 2) = exp(0.05) = 1.0512711, inside
    # [0.9, 1.1]. Every trained token (1, 2 and 3) then has loss -s·A and gradient -s·A.
    values, grad = _per_token(
        "gspo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1},
        [-1.0, -2.0, -0.5, -3.0], logprobs=[0.0, -2.2, -0.4, -3.1],
        advantages=[0.0, 1.0, 1.0, 1.0], weights=[0.0, 1.0, 1.0, 1.0],
        sequence_ratio_mask=[0.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(values, torch.tensor([0.0, -1.0512711, -1.0512711, -1.0512711],
                                                    dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([0.0, -1.0512711, -1.0512711, -1.0512711],
                                                  dtype=torch.float64))
    # s = exp(0.2) = 1.2214 > 1.1 with A = 2 > 0: min() takes the clipped 1.1·2, a constant:
    # loss -2.2 per token and no gradient at all.
    values, grad = _per_token(
        "gspo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1},
        [-1.0, -1.0], logprobs=[-1.2, -1.2], advantages=[2.0, 2.0], weights=[1.0, 1.0],
        sequence_ratio_mask=[1.0, 1.0])
    torch.testing.assert_close(values, torch.tensor([-2.2, -2.2], dtype=torch.float64))
    assert grad.abs().max() == 0
    # With A = -2 the unclipped s·A = -2.443 is the smaller: gradient -s·A = +2.443 each.
    _, grad = _per_token(
        "gspo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1},
        [-1.0, -1.0], logprobs=[-1.2, -1.2], advantages=[-2.0, -2.0], weights=[1.0, 1.0],
        sequence_ratio_mask=[1.0, 1.0])
    torch.testing.assert_close(grad, torch.full((2,), 2 * math.exp(0.2), dtype=torch.float64))


def test_stable_reinforce_by_hand():
    # Ratios r = 0.1, 1.5, 3, 10, 1 with kl_coeff 0.5, cap C = 2, band [0.2, 5]:
    #   r = 0.1 and r = 10 leave the band: no loss, no gradient;
    #   r = 1.5 (logp -1, A 1):  -(1.5·(-1)·1 - 0.5·(1.5 - 1 - ln 1.5)) = 1.5472674,
    #                            gradient -(1.5·1 - 0.5·(1.5 - 1)) = -1.25;
    #   r = 3 -> C = 2 (logp -0.5, A -1): -(2·(-0.5)·(-1) - 0.5·(3 - 1 - ln 3)) = -0.5493061,
    #                            gradient -(2·(-1) - 0.5·(3 - 1)) = 3;
    #   the last token has weight 0.
    logp = [-2.0, -1.0, -0.5, -0.2, -1.5]
    ratios = [0.1, 1.5, 3.0, 10.0, 1.0]
    values, grad = _per_token(
        "stable_reinforce", {"kl_coeff": 0.5}, logp,
        logprobs=[lp - math.log(r) for lp, r in zip(logp, ratios, strict=True)],
        advantages=[1.0, 1.0, -1.0, 1.0, 0.0], weights=[1.0, 1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(values, torch.tensor([0.0, 1.5472674, -0.5493061, 0.0, 0.0],
                                                    dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([0.0, -1.25, 3.0, 0.0, 0.0],
                                                  dtype=torch.float64))
    # A ratio that overflows float32 (exp(94.9) = inf; logq = -95 on a trained token) leaves
    # the band: its loss and gradient are 0, not nan.
    loss = get_loss("stable_reinforce")
    lp32 = torch.tensor([-0.1], requires_grad=True)
    out = loss.per_token(lp32, {"logprobs": torch.tensor([-95.0]),
                                "advantages": torch.tensor([1.0]),
                                "weights": torch.tensor([1.0])}, loss.config({"kl_coeff": 1}))
    out.sum().backward()
    assert float(out.detach()) == 0 and lp32.grad is not None and float(lp32.grad) == 0


def test_ppo_spends_its_clip_on_staleness_where_stable_reinforce_does_not():
    # What docs/off_policy.md measures: the pipeline takes one optimizer step per batch, so
    # on-policy (r = 1) PPO, importance_sampling and stable_reinforce have the same gradient,
    # -r·A per token. Off-policy the ratio measures staleness: PPO zeroes every token the
    # previous step already moved past its band in A's direction, importance_sampling weighs
    # each by r, stable_reinforce by r capped at 2.
    logp = [-1.0, -1.0, -1.0, -1.0]
    advantages = [1.0, -1.0, 1.0, 1.0]
    same = dict(logprobs=logp, advantages=advantages, weights=[1.0] * 4)
    grads = {loss: _per_token(loss, {}, logp, **same)[1]
             for loss in ("ppo", "importance_sampling", "stable_reinforce")}
    for grad in grads.values():
        torch.testing.assert_close(grad, -torch.tensor(advantages, dtype=torch.float64))

    # One step stale: ratios 3 and 0.5 left [0.8, 1.2] in A's direction, 1.1 is inside, and
    # the last 0.5 moved against A (PPO keeps it).
    ratios = [3.0, 0.5, 1.1, 0.5]
    stale = dict(same, logprobs=[lp - math.log(r) for lp, r in zip(logp, ratios, strict=True)])
    grads = {loss: _per_token(loss, {}, logp, **stale)[1]
             for loss in ("ppo", "importance_sampling", "stable_reinforce")}
    expected = {"ppo": [0.0, 0.0, -1.1, -0.5],
                "importance_sampling": [-3.0, 0.5, -1.1, -0.5],
                "stable_reinforce": [-2.0, 0.5, -1.1, -0.5]}
    for loss, grad in grads.items():
        torch.testing.assert_close(grad, torch.tensor(expected[loss], dtype=torch.float64))


def test_new_loss_configs_defaults_and_errors():
    assert get_loss("gspo").config(None) == {"clip_low_threshold": 1 - 3e-4,
                                             "clip_high_threshold": 1 + 4e-4}
    assert get_loss("stable_reinforce").config({}) == {
        "clip_high_threshold": 2.0, "mask_low_threshold": 0.2, "mask_high_threshold": 5.0,
        "kl_coeff": 0.0}
    assert get_loss("stable_reinforce").config(
        {"clip_high_threshold": math.inf, "mask_high_threshold": math.inf})["kl_coeff"] == 0.0
    for loss_fn, config, field in [
        ("gspo", {"clip_ratio": 0.2}, "clip_ratio"),  # GSPO takes absolute bounds only
        ("gspo", {"clip_low_threshold": 1.2}, "clip_low_threshold"),
        ("gspo", {"clip_high_threshold": 0.99}, "clip_high_threshold"),
        ("stable_reinforce", {"beta": 0.1}, "beta"),
        ("stable_reinforce", {"kl_coeff": -1.0}, "kl_coeff"),
        ("stable_reinforce", {"kl_coeff": math.inf}, "kl_coeff"),
        ("stable_reinforce", {"clip_high_threshold": 0.5}, "clip_high_threshold"),
        ("stable_reinforce", {"mask_low_threshold": 1.5}, "mask_low_threshold"),
        ("stable_reinforce", {"mask_high_threshold": 0.9}, "mask_high_threshold"),
        ("stable_reinforce", {"kl_coeff": float("nan")}, "kl_coeff"),
    ]:
        with pytest.raises(mint.InvalidInputError, match=field):
            get_loss(loss_fn).config(config)
    assert set(LOSSES) == {"cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo",
                           "stable_reinforce"}


def test_gspo_sequence_ratio_mask_input(tiny_client):
    tokens = [5, 6, 7, 8]
    base = {"target_tokens": tokens, "logprobs": [-0.5, -0.3, -0.8, -0.2],
            "advantages": [0.0, 0.2, 0.2, 0.2]}

    def datum(**extra):
        return mint.types.Datum(model_input=mint.ModelInput.from_ints(tokens),
                                loss_fn_inputs={**base, **extra})

    config = {"clip_low_threshold": 0.5, "clip_high_threshold": 2.0}
    default = tiny_client.forward([datum()], "gspo", config).result().loss
    # The default mask is the trained positions (A != 0 here): the same as giving it.
    explicit = tiny_client.forward([datum(sequence_ratio_mask=[0, 1, 1, 1])], "gspo",
                                   config).result().loss
    other = tiny_client.forward([datum(sequence_ratio_mask=[0, 1, 0, 0])], "gspo",
                                config).result().loss
    assert default == pytest.approx(explicit, rel=1e-6) and other != pytest.approx(default)
    with pytest.raises(mint.InvalidInputError, match="sequence_ratio_mask"):
        tiny_client.forward([datum(sequence_ratio_mask=[0, 0.5, 1, 1])], "gspo")
    with pytest.raises(mint.InvalidInputError, match="sequence_ratio_mask"):
        tiny_client.forward([datum(sequence_ratio_mask=[0, 0, 0, 0])], "gspo")
    with pytest.raises(mint.InvalidInputError, match="sequence_ratio_mask"):
        tiny_client.forward([datum(sequence_ratio_mask=[0, 1, 1])], "gspo")


def test_rl_recipes_accept_every_policy_gradient_loss():
    import typing

    from mint_rl.run.config import LossName

    assert set(typing.get_args(LossName)) == {name for name, loss in LOSSES.items()
                                              if loss.is_rl}

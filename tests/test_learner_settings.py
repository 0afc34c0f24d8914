"""LearnerSettings that change how the learner computes, not what: micro-batches, packed rows
and bfloat16.

A batch split into several micro-batches (and packed into several rows) must give the loss,
logprobs, metrics and gradients of the same batch in one piece (fp32, tight tolerances). The
bf16 learner must compute in bf16 (its numbers differ from fp32), stay close to fp32 within the
tolerances stated below, and train.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import lora_grads, randomize_lora_b, rl_batch, to_datums

import mint_rl as mint
from mint_rl import types
from mint_rl.learner.engine import LearnerSettings


def _client(model, **settings) -> mint.TrainingClient:
    service = mint.ServiceClient(learner_settings=LearnerSettings(**settings))
    client = service.create_lora_training_client(str(model), rank=4, seed=0)
    randomize_lora_b(client.engine.model)  # B = 0 at init: make the adapter matter
    return client


def _batch(client: mint.TrainingClient, loss_fn: str, seed: int) -> list[types.Datum]:
    """Three prompts x three samples, sampler logprobs shifted off the learner's so that the
    PPO clip acts on some tokens."""
    items = rl_batch(client.engine.vocab_size, seed=seed, groups=3, samples=3, prompt_len=12)
    out = client.forward(to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items]),
                         "cross_entropy").result()
    g = torch.Generator().manual_seed(seed)
    q = [(o["logprobs"].to_torch() + torch.empty(it["n"]).uniform_(-0.4, 0.4, generator=g))
         .clamp(max=0.0).tolist() for o, it in zip(out.loss_fn_outputs, items, strict=True)]
    return to_datums(items, loss_fn, q)


def _run(client: mint.TrainingClient, datums, loss_fn: str):
    client.engine.zero_grad()
    out = client.forward_backward(datums, loss_fn).result()
    grads = lora_grads(client.engine.model)
    client.engine.zero_grad()
    return out, grads


@pytest.mark.parametrize("loss_fn", ["cross_entropy", "ppo", "gspo"])
def test_a_batch_split_into_micro_batches_and_rows_equals_one_piece(tiny_model, loss_fn):
    whole = _client(tiny_model)  # defaults: micro-batches planned from memory, 256 per row
    # Without prompt sharing each datum is a unit: micro-batches of two or three, two rows each.
    split = _client(tiny_model, tokens_per_microbatch=40, row_capacity=24, share_prefixes=False)
    datums = _batch(whole, loss_fn, seed=4)
    loss, prepared = split.engine.prepare(datums, loss_fn)
    trained = [loss.trained(d.x) for d in prepared]
    _, parts = split.engine.plan(prepared, trained, backward=True)
    assert len(parts) >= 4 and len(whole.engine.plan(prepared, trained, backward=True)[1]) == 1
    assert max(split.engine.pack([prepared[i].tokens for i in p.datums]).input_ids.shape[0]
               for p in parts) >= 2  # a micro-batch packed into several rows too

    a, grads_a = _run(whole, datums, loss_fn)
    b, grads_b = _run(split, datums, loss_fn)
    assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-6)
    assert b.metrics.keys() == a.metrics.keys()
    for key, value in a.metrics.items():
        if not key.startswith("memory/"):  # the plan differs, by design
            assert b.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert b.metrics["memory/microbatches:sum"] == len(parts)
    for x, y in zip(a.loss_fn_outputs, b.loss_fn_outputs, strict=True):
        torch.testing.assert_close(y["logprobs"].to_torch(), x["logprobs"].to_torch(),
                                   atol=1e-5, rtol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, atol=1e-6, rtol=1e-4, msg=name)
    if loss_fn == "ppo":
        assert 0 < a.metrics["clip_frac:mean"] < 1  # the clip acts, across micro-batches too


# Tolerances of the bf16 learner against fp32 on the tiny model (bf16 keeps 8 bits of
# mantissa; the log-softmax stays fp32). Observed: logprobs within 0.003 nats, loss within
# 0.03%, gradient cosine 0.99998; the bounds leave about 10x.
BF16_LOGPROB_ATOL = 0.02
BF16_LOSS_REL = 3e-3
BF16_GRAD_COSINE = 0.999


@pytest.mark.parametrize("loss_fn", ["cross_entropy", "ppo"])
def test_bf16_learner_is_close_to_fp32(tiny_model, loss_fn):
    fp32 = _client(tiny_model)
    bf16 = _client(tiny_model, dtype="bfloat16")
    datums = _batch(fp32, loss_fn, seed=6)
    a, grads_a = _run(fp32, datums, loss_fn)
    b, grads_b = _run(bf16, datums, loss_fn)
    lp_a = torch.cat([o["logprobs"].to_torch() for o in a.loss_fn_outputs])
    lp_b = torch.cat([o["logprobs"].to_torch() for o in b.loss_fn_outputs])
    # It really computes in bf16: not fp32's numbers ...
    assert (lp_a - lp_b).abs().max() > 1e-4
    # ... but close to them, and finite.
    assert math.isfinite(b.loss) and torch.isfinite(lp_b).all()
    torch.testing.assert_close(lp_b, lp_a, atol=BF16_LOGPROB_ATOL, rtol=0)
    assert b.loss == pytest.approx(a.loss, rel=BF16_LOSS_REL)
    flat_a = torch.cat([grads_a[n].flatten() for n in sorted(grads_a)])
    flat_b = torch.cat([grads_b[n].flatten() for n in sorted(grads_a)])
    assert torch.isfinite(flat_b).all()
    assert float(torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0)) > BF16_GRAD_COSINE
    # The probe the samplers are checked against stays fp32 in a bf16 learner.
    probe = datums[0].model_input.to_ints()
    assert bf16.probe_logprobs(probe).result() == pytest.approx(
        fp32.probe_logprobs(probe).result(), abs=1e-6)


def _sft_losses(client: mint.TrainingClient, steps: int) -> list[float]:
    tokens = [5 + (i % 11) for i in range(24)]  # a pattern the adapter can learn
    datum = types.Datum(types.ModelInput.from_ints(tokens[:-1]),
                        {"target_tokens": tokens[1:], "weights": [1.0] * 23})
    losses = []
    for _ in range(steps):
        fb = client.forward_backward([datum], "cross_entropy")
        client.optim_step(types.AdamParams(learning_rate=2e-2)).result()
        losses.append(fb.result().loss)
    return losses


def test_bf16_learner_trains_like_fp32(tiny_model):
    fp32 = _sft_losses(_client(tiny_model), 10)
    bf16 = _sft_losses(_client(tiny_model, dtype="bfloat16"), 10)
    assert all(math.isfinite(x) for x in bf16)
    # (observed on the tiny model, rank 4: 134.7 -> 122.4 in fp32, 134.7 -> 120.9 in bf16)
    assert bf16[-1] < 0.95 * bf16[0], bf16
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.05)

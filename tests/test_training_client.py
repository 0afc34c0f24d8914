"""The TrainingClient: bad input is rejected before anything changes; state round-trips exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import lora_grads, rl_batch, to_datums

import mint_rl as mint
from mint_rl import types


@pytest.fixture(scope="module")
def client(tiny_model):
    return mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=0)


def _datum(tokens, **inputs):
    return types.Datum(model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs=inputs)


GOOD = dict(target_tokens=[6, 7, 8], logprobs=[-0.5, -0.3, -0.8], advantages=[0.15])


def _bad_requests(vocab: int):
    """(description, thunk, expected error type, text the message must contain)."""
    nan = float("nan")
    return [
        ("missing logprobs",
         lambda c: c.forward_backward([_datum([5, 6, 7], target_tokens=[6, 7, 8],
                                              advantages=[1.0])], "ppo"),
         KeyError, "logprobs"),
        ("target_logprobs instead of logprobs",
         lambda c: c.forward_backward([_datum([5, 6, 7], target_tokens=[6, 7, 8],
                                              target_logprobs=np.zeros(3, np.float32),
                                              advantages=[1.0])], "importance_sampling"),
         KeyError, "target_logprobs"),
        ("missing weights for cross_entropy",
         lambda c: c.forward_backward([_datum([5, 6, 7], target_tokens=[6, 7, 8])],
                                      "cross_entropy"),
         KeyError, "weights"),
        ("seed's SFT weights, one element too long",
         lambda c: c.forward_backward([_datum([5, 6, 7], target_tokens=[6, 7, 8],
                                              weights=[0, 1, 1, 1])], "cross_entropy"),
         ValueError, "weights"),
        ("logprobs of the wrong length",
         lambda c: c.forward_backward([_datum([5, 6, 7], target_tokens=[6, 7, 8],
                                              logprobs=[-1.0], advantages=[1.0, 1.0, 1.0])], "ppo"),
         ValueError, "logprobs"),
        ("NaN advantage",
         lambda c: c.forward_backward([_datum([5, 6, 7], **{**GOOD, "advantages": [nan]})], "ppo"),
         ValueError, "advantages"),
        ("inf logprob",
         lambda c: c.forward_backward(
             [_datum([5, 6, 7], **{**GOOD, "logprobs": [0, -math.inf, 0]})], "ppo"),
         ValueError, "logprobs"),
        ("target token outside the vocabulary",
         lambda c: c.forward_backward(
             [_datum([5, 6, 7], **{**GOOD, "target_tokens": [6, 7, vocab]})], "ppo"),
         ValueError, "target_tokens"),
        ("input token outside the vocabulary",
         lambda c: c.forward_backward([_datum([5, vocab + 3, 7], **GOOD)], "ppo"),
         ValueError, "model_input"),
        ("unknown loss",
         lambda c: c.forward_backward([_datum([5, 6, 7], **GOOD)], "grpo"),
         ValueError, "loss_fn"),
        ("clip_ratio out of range",
         lambda c: c.forward_backward([_datum([5, 6, 7], **GOOD)], "ppo", {"clip_ratio": 0.6}),
         ValueError, "clip_ratio"),
        ("clip_ratio and thresholds together",
         lambda c: c.forward_backward([_datum([5, 6, 7], **GOOD)], "ppo",
                                      {"clip_ratio": 0.2, "clip_low_threshold": 0.7}),
         ValueError, "clip_ratio"),
        ("cispo beta not positive",
         lambda c: c.forward_backward([_datum([5, 6, 7], **GOOD)], "cispo", {"beta": 0.0}),
         ValueError, "beta"),
        ("config key the loss does not take",
         lambda c: c.forward_backward([_datum([5, 6, 7], **GOOD)], "importance_sampling",
                                      {"clip_ratio": 0.2}),
         ValueError, "clip_ratio"),
        ("empty batch", lambda c: c.forward_backward([], "ppo"), ValueError, "data"),
        ("empty model input",
         lambda c: c.forward_backward([_datum([], target_tokens=[], weights=[])], "cross_entropy"),
         ValueError, "model_input"),
        ("bad learning rate", lambda c: c.optim_step(types.AdamParams(learning_rate=-1.0)),
         ValueError, "learning_rate"),
        ("optim_step without AdamParams", lambda c: c.optim_step({"learning_rate": 1e-4}),
         ValueError, "adam_params"),
        ("beta1 = 1 (Adam's bias correction divides by 1 - beta1^t)",
         lambda c: c.optim_step(types.AdamParams(beta1=1.0)), ValueError, "beta1"),
        ("eps = 0", lambda c: c.optim_step(types.AdamParams(eps=0.0)), ValueError, "eps"),
        ("no loss_fn",
         lambda c: c.forward_backward([_datum([5, 6, 7], **GOOD)], None), ValueError, "loss_fn"),
        ("positive logprob",
         lambda c: c.forward_backward(
             [_datum([5, 6, 7], **{**GOOD, "logprobs": [-0.5, 0.3, -0.8]})], "ppo"),
         ValueError, "logprobs"),
        ("absurd logprob on a trained token (the ratio would overflow)",
         lambda c: c.forward_backward(
             [_datum([5, 6, 7], **{**GOOD, "logprobs": [-0.5, -1e4, -0.8]})], "ppo"),
         ValueError, "logprobs"),
        ("a datum longer than the model's context (the tiny model's is 512)",
         lambda c: c.forward_backward([_datum([5] * 600, target_tokens=[6] * 600,
                                              weights=[1.0] * 600)], "cross_entropy"),
         ValueError, "context"),
        ("fractional target token id",
         lambda c: c.forward_backward(
             [_datum([5, 6, 7], **{**GOOD, "target_tokens": [6.0, 7.5, 8.0]})], "ppo"),
         ValueError, "target_tokens"),
    ]


def test_bad_input_is_rejected_and_changes_nothing(client):
    items = rl_batch(client.engine.vocab_size, seed=2)
    good = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])
    client.engine.zero_grad()
    client.forward_backward(good, "cross_entropy").result()  # some accumulated gradient
    grads_before = lora_grads(client.engine.model)
    weights_before = {k: v.clone() for k, v in client.engine.lora_state().items()}
    step_before = client.engine.step
    for description, thunk, error, text in _bad_requests(client.engine.vocab_size):
        with pytest.raises(error) as info:
            thunk(client).result()
        assert text in str(info.value), f"{description}: {info.value}"
        assert isinstance(info.value, mint.BadRequestError), description
    grads_after = lora_grads(client.engine.model)
    assert grads_after.keys() == grads_before.keys()
    for name, g in grads_before.items():
        assert torch.equal(grads_after[name], g), name
    for name, w in client.engine.lora_state().items():
        assert torch.equal(weights_before[name], w), name
    assert client.engine.step == step_before
    client.engine.zero_grad()


def test_plain_list_under_unknown_key_is_a_key_error():
    with pytest.raises(KeyError, match="target_logprobs"):
        _datum([1, 2], target_tokens=[2, 3], target_logprobs=[-1.0, -1.0])


def _train_steps(client, datums, n, lr=1e-2):
    losses = []
    for _ in range(n):
        fb = client.forward_backward(datums, "cross_entropy")
        step = client.optim_step(types.AdamParams(learning_rate=lr))  # submitted before waiting
        losses.append(fb.result().loss)
        step.result()
    return losses


def test_save_and_resume_with_optimizer_is_exact(tiny_model):
    service = mint.ServiceClient()
    items = rl_batch(64, seed=4)
    datums = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])

    a = service.create_lora_training_client(str(tiny_model), rank=4, seed=7)
    _train_steps(a, datums, 2)
    saved = a.save_state("after-2").result()
    assert saved.path.startswith("mint://") and "/weights/after-2" in saved.path
    uninterrupted = _train_steps(a, datums, 2)

    b = service.create_training_client_from_state_with_optimizer(saved.path)
    assert b.engine.step == 2
    resumed = _train_steps(b, datums, 2)
    assert resumed == uninterrupted  # bit-for-bit: same weights, same Adam moments
    for name, w in a.engine.lora_state().items():
        assert torch.equal(b.engine.lora_state()[name], w), name

    # Weights only: same first loss, but a fresh optimizer takes a different step.
    c = service.create_training_client_from_state(saved.path)
    fresh = _train_steps(c, datums, 2)
    assert fresh[0] == uninterrupted[0] and fresh[1] != uninterrupted[1]

    with pytest.raises(mint.ConflictError):
        a.save_state("after-2").result()
    a.save_state("after-2", overwrite=True).result()


def test_load_state_into_existing_client_and_errors(client, tiny_model):
    saved = client.save_state("for-load", overwrite=True).result()
    other = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=99)
    other.load_state(saved.path).result()
    for name, w in client.engine.lora_state().items():
        assert torch.equal(other.engine.lora_state()[name], w)
    wrong_rank = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=2)
    with pytest.raises(ValueError, match="path"):
        wrong_rank.load_state(saved.path)
    with pytest.raises(mint.NotFoundError):
        client.load_state("mint://no-such-run/weights/x")
    with pytest.raises(ValueError, match="path"):
        client.load_state("mint://bad-form")


def test_non_finite_loss_is_refused_and_earlier_gradients_are_kept(tiny_model):
    client = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=3)
    items = rl_batch(client.engine.vocab_size, seed=4)
    good = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])
    client.engine.zero_grad()
    client.forward_backward(good, "cross_entropy").result()
    accumulated = lora_grads(client.engine.model)
    # Plausible-looking behaviour logprobs (-100 nats) against the learner's ~-6: the ratio
    # exp(logp - logprob) overflows, and with a negative advantage so does the loss.
    item = items[0]
    poisoned = _datum(item["tokens"], target_tokens=item["targets"],
                      logprobs=[-100.0] * item["n"], advantages=[-1.0],
                      weights=item["weights"])
    with pytest.raises(mint.InvalidInputError, match="not finite") as info:
        client.forward_backward([poisoned], "importance_sampling").result()
    assert "accumulated before it are kept" in str(info.value)
    after = lora_grads(client.engine.model)
    assert after.keys() == accumulated.keys()
    for name, g in accumulated.items():
        assert torch.equal(after[name], g), name
    step = client.optim_step(types.AdamParams(learning_rate=1e-3)).result()  # still trains
    assert math.isfinite(step.metrics["grad_norm:mean"]) and step.metrics["grad_norm:mean"] > 0


def test_a_datum_too_long_to_train_on_is_refused_before_it_runs(tiny_model, monkeypatch):
    from mint_rl.learner import engine as learner_engine

    datum = _datum(list(range(5, 45)), target_tokens=list(range(6, 46)), weights=[1.0] * 40)
    capped = mint.ServiceClient(learner_settings=mint.LearnerSettings(max_tokens_per_datum=32))
    client = capped.create_lora_training_client(str(tiny_model), rank=4)
    with pytest.raises(mint.InvalidInputError, match=r"data\[0\].model_input.*max_tokens"):
        client.forward_backward([datum], "cross_entropy")
    assert client.forward([datum], "cross_entropy").result().loss > 0  # no backward: fine

    # By default the limit is what free memory holds, with per-layer recompute: 40 tokens need
    # more than 64 KiB here.
    client = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4)
    monkeypatch.setattr(learner_engine, "free_memory", lambda device: 1 << 16)
    with pytest.raises(mint.InvalidInputError, match="free memory"):
        client.forward_backward([datum], "cross_entropy")


def test_corrupt_checkpoint_is_refused_and_changes_nothing(client):
    from mint_rl.learner.checkpoint import resolve_path

    saved = client.save_state("to-corrupt", overwrite=True).result()
    folder = resolve_path(saved.path)
    before = {k: v.clone() for k, v in client.engine.lora_state().items()}
    adapter = folder / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])  # half-written
    with pytest.raises(mint.CorruptCheckpointError, match="adapter_model.safetensors"):
        client.load_state(saved.path)
    (folder / "mint_state.json").write_text("{not json")
    with pytest.raises(mint.CorruptCheckpointError):
        mint.ServiceClient().create_training_client_from_state_with_optimizer(saved.path)
    for name, w in before.items():
        assert torch.equal(client.engine.lora_state()[name], w), name


def test_sampler_weights_are_a_standard_peft_adapter(client, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mint_rl.learner.checkpoint import resolve_path

    saved = client.save_weights_for_sampler("peft-check").result()
    folder = resolve_path(saved.path)
    assert (folder / "adapter_model.safetensors").exists()
    assert not list(folder.glob("*.bin")), "no pickle files"
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, folder)
    tokens = [5, 6, 7, 8, 9]
    datum = _datum(tokens[:-1], target_tokens=tokens[1:], weights=[1.0] * 4)
    ours = client.forward([datum], "cross_entropy").result().loss_fn_outputs[0]["logprobs"]
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor([tokens[:-1]])).logits[0]
    theirs = logits.log_softmax(-1).gather(-1, torch.tensor(tokens[1:])[:, None]).squeeze(-1)
    torch.testing.assert_close(ours.to_torch(), theirs, atol=1e-5, rtol=0)


def test_ops_apply_in_submission_order(client):
    items = rl_batch(client.engine.vocab_size, seed=8)
    datums = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])
    before = client.forward(datums, "cross_entropy")
    client.forward_backward(datums, "cross_entropy")
    client.optim_step(types.AdamParams(learning_rate=0.05))
    after = client.forward(datums, "cross_entropy")
    # Queued without waiting: `after` still sees the optimizer step, `before` does not.
    assert after.result().loss < before.result().loss


async def _async_round(client, datums):
    fb = await client.forward_backward_async(datums, "cross_entropy")
    step = await client.optim_step_async(types.AdamParams(learning_rate=1e-3))
    out = await fb
    await step
    return out


def test_async_forms_double_await(client):
    import anyio

    items = rl_batch(client.engine.vocab_size, seed=9)
    datums = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])
    out = anyio.run(_async_round, client, datums)
    assert math.isfinite(out.loss)
    client.engine.zero_grad()


def test_get_info_and_tokenizer(client):
    info = client.get_info()
    assert info.is_lora and info.lora_rank == 4
    assert client.get_tokenizer().encode("3 + 4")


@pytest.mark.slow
def test_sft_drives_loss_down_on_default_model(default_model):
    tc = mint.ServiceClient().create_lora_training_client(str(default_model), rank=16, seed=0)
    tok = tc.get_tokenizer()
    examples = [("The capital of France is", " Paris."), ("Two plus two equals", " four."),
                ("The sky is", " blue."), ("Water freezes at zero degrees", " Celsius.")]
    datums = []
    for prompt, answer in examples:
        p, a = tok.encode(prompt), tok.encode(answer)
        full = p + a
        datums.append(_datum(full[:-1], target_tokens=full[1:],
                             weights=[0.0] * (len(p) - 1) + [1.0] * len(a)))
    losses = _train_steps(tc, datums, 6, lr=1e-3)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses


# --------------------------------------------------------------------------------------------
# stable_reinforce: provenance spans and the behaviour logprobs recorded at sampling time


def _sampled_datum(prompt, sampled, logprobs, advantage, sequence_id, *, spans=True):
    """A datum laid out as the cookbook's rl_loop builds it (prompt targets padded with 0),
    with its with_sampled_provenance spans."""
    ob = len(prompt) - 1
    d = types.Datum(
        model_input=types.ModelInput.from_ints(prompt + sampled[:-1]),
        loss_fn_inputs={"target_tokens": [0] * ob + sampled,
                        "logprobs": [0.0] * ob + logprobs,
                        "advantages": [0.0] * ob + [advantage] * len(sampled)})
    if not spans:
        return d
    P, S = types.PromptProvenanceSpan, types.SampledProvenanceSpan
    return d.with_provenance(
        model_input=[P(sequence_id=sequence_id, length=len(prompt)),
                     S(sequence_id=sequence_id, length=len(sampled) - 1)],
        loss_fn_inputs=[P(sequence_id=sequence_id, offset=1, length=len(prompt) - 1),
                        S(sequence_id=sequence_id, length=len(sampled))])


def test_stable_reinforce_trains_against_the_recorded_logprobs(client):
    from mint_rl.stability import RECORDED

    prompt, sampled = [5, 9, 11, 4], [7, 8, 3]
    # Behaviour logprobs near the learner's own, so that the ratios fall inside the trust band.
    own = client.forward([_datum(prompt + sampled[:-1], target_tokens=prompt[1:] + sampled,
                                 weights=[1.0] * 6)], "cross_entropy").result()
    learner = own.loss_fn_outputs[0]["logprobs"].tolist()[3:]
    recorded = [lp + d for lp, d in zip(learner, (0.3, -0.2, 0.1), strict=True)]
    RECORDED.record("rec-1", prompt, sampled, recorded)
    sent = [lp + d for lp, d in zip(learner, (-0.4, 0.5, 0.0), strict=True)]  # not as sampled
    with_spans = _sampled_datum(prompt, sampled, sent, 0.5, "rec-1")
    as_recorded = _sampled_datum(prompt, sampled, recorded, 0.5, "rec-1", spans=False)
    as_sent = _sampled_datum(prompt, sampled, sent, 0.5, "rec-1", spans=False)
    config = {"kl_coeff": 0.1}
    out = client.forward([with_spans], "stable_reinforce", config).result()
    assert out.loss == pytest.approx(
        client.forward([as_recorded], "stable_reinforce", config).result().loss, rel=1e-6)
    assert out.loss != pytest.approx(
        client.forward([as_sent], "stable_reinforce", config).result().loss, rel=1e-3)
    assert out.metrics["recorded_frac:mean"] == 1.0
    # Spans naming a sequence nobody recorded: the datum's own logprobs.
    unknown = _sampled_datum(prompt, sampled, sent, 0.5, "never-recorded")
    fallback = client.forward([unknown], "stable_reinforce", config).result()
    assert fallback.loss == pytest.approx(
        client.forward([as_sent], "stable_reinforce", config).result().loss, rel=1e-6)
    assert fallback.metrics["recorded_frac:mean"] == 0.0
    # Other losses accept the spans and ignore them.
    assert client.forward([with_spans], "importance_sampling").result().loss == pytest.approx(
        client.forward([as_sent], "importance_sampling").result().loss, rel=1e-6)


def test_stable_reinforce_spans_must_match_what_was_recorded(client):
    from mint_rl.stability import RECORDED

    prompt, sampled = [5, 9, 11, 4], [7, 8, 3]
    RECORDED.record("rec-2", prompt, sampled, [-0.4, -1.1, -0.7])
    P, S = types.PromptProvenanceSpan, types.SampledProvenanceSpan
    good = _sampled_datum(prompt, sampled, [-0.4, -1.1, -0.7], 0.5, "rec-2")
    client.forward([good], "stable_reinforce").result()
    # Only the last sampled token differs: it is a target, never an input.
    other_tokens = _sampled_datum(prompt, [7, 8, 2], [-0.4, -1.1, -0.7], 0.5, "rec-2")
    too_long = good.with_provenance(
        model_input=good.model_input_spans or [],
        loss_fn_inputs=[P(sequence_id="rec-2", offset=1, length=3),
                        S(sequence_id="rec-2", offset=1, length=3)])
    other_prompt = _sampled_datum([5, 9, 12, 4], sampled, [-0.4, -1.1, -0.7], 0.5, "rec-2")
    prompt_advantage = types.Datum(
        good.model_input, {**good.loss_fn_inputs, "advantages": [0.0, 0.3, 0.0, 0.5, 0.5, 0.5]},
        good.model_input_spans, good.loss_fn_input_spans)
    for datum, field in [
        (other_tokens, r"loss_fn_input_spans\[1\]: the datum's tokens there are not"),
        (too_long, r"loss_fn_input_spans\[1\]: covers positions 1..3"),
        (other_prompt, r"model_input_spans\[0\]"),
        (prompt_advantage, r"loss_fn_inputs\['advantages'\]: is nonzero at a prompt position"),
    ]:
        with pytest.raises(mint.InvalidInputError, match=field):
            client.forward_backward([datum], "stable_reinforce")

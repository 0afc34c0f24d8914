"""`mint-rl serve` driven by the unmodified tinker SDK (0.38).

A server runs in this process on a free loopback port; the SDK talks HTTP to it. Training
results are compared with an in-process mint_rl client fed the same data: the server must add
nothing and lose nothing. Sampling tests share the session's vLLM engine (marked slow).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from helpers import rl_batch

import mint_rl as mint
from mint_rl.errors import InvalidInputError
from mint_rl.learner import checkpoint as ckpt
from mint_rl.models import DEFAULT_MODEL
from mint_rl.server import ServerConfig, create_app, paths, wire
from mint_rl.server import tinker_wire_pb2 as pb
from mint_rl.server.registry import Model, Registry
from mint_rl.server.sequencer import Sequencer
from mint_rl.server.tensors import decode_tensor
from mint_rl.server.turns import Turns

tinker = pytest.importorskip("tinker")
from tinker import types as tt  # noqa: E402  (after the skip: tinker is a dev dependency)

RANK, SEED = 4, 0
CHUNK_LEN = 2  # datums per forward_backward request: larger batches go as parallel chunks


# --------------------------------------------------------------------------------------------
# The server and the SDK


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server in a thread (long polls of 1 s, so the SDK's re-poll path runs too)."""
    config = ServerConfig(long_poll_s=1.0, compress_forward_backward=True,
                          forward_backward_chunk_len=CHUNK_LEN)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def service(server: str) -> Iterator[tinker.ServiceClient]:
    saved = os.environ.get("TINKER_API_KEY")
    os.environ["TINKER_API_KEY"] = "tml-dummy"  # the SDK insists on the prefix
    client = tinker.ServiceClient(base_url=server)
    yield client
    client.close("success").result()
    if saved is None:
        os.environ.pop("TINKER_API_KEY", None)
    else:
        os.environ["TINKER_API_KEY"] = saved


@pytest.fixture
def pair(service, tiny_model: Path):
    """A LoRA client on the server and the same client in-process: identical at the start."""
    remote = service.create_lora_training_client(str(tiny_model), rank=RANK, seed=SEED).result()
    local = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=RANK, seed=SEED)
    yield remote, local
    local.close()


def _batch(local, loss_fn: str, n: int = 2) -> tuple[list, list]:
    """The same n datums for the SDK and for mint_rl. Sampler logprobs are the model's own
    plus noise, so importance ratios and clipping are not trivial."""
    items = rl_batch(local.engine.vocab_size, groups=1, samples=n, prompt_len=5)
    plain = [mint.types.Datum(model_input=mint.types.ModelInput.from_ints(it["tokens"]),
                              loss_fn_inputs={"target_tokens": it["targets"],
                                              "weights": [1.0] * it["n"]})
             for it in items]
    own = local.forward(plain, "cross_entropy").result().loss_fn_outputs
    rng = np.random.default_rng(1)
    sdk, ours = [], []
    for it, out in zip(items, own, strict=True):
        inputs: dict = {"target_tokens": it["targets"], "weights": it["weights"]}
        if loss_fn != "cross_entropy":
            noisy = out["logprobs"].to_numpy() + rng.normal(0, 0.3, it["n"])
            inputs.update(logprobs=np.minimum(noisy, 0).astype(np.float32).tolist(),
                          advantages=it["advantages"])
        if loss_fn == "gspo":  # the ratio over the first completion tokens: not the default
            inputs["sequence_ratio_mask"] = [1.0 if w and i < len(it["weights"]) - 2 else 0.0
                                             for i, w in enumerate(it["weights"])]
        sdk.append(tt.Datum(model_input=tt.ModelInput.from_ints(it["tokens"]),
                            loss_fn_inputs=inputs))
        ours.append(mint.types.Datum(model_input=mint.types.ModelInput.from_ints(it["tokens"]),
                                     loss_fn_inputs=inputs))
    return sdk, ours


def _assert_same(remote_out, local_out, *, means_too: bool = True) -> None:
    """Same loss, same logprobs per datum (float32 through the wire: exact up to rounding)."""
    keys = set(local_out.metrics) if means_too else {"loss:sum"}
    assert keys <= set(remote_out.metrics)
    for key in keys:
        assert remote_out.metrics[key] == pytest.approx(local_out.metrics[key], rel=1e-6,
                                                        abs=1e-7), key
    assert len(remote_out.loss_fn_outputs) == len(local_out.loss_fn_outputs)
    for r, loc in zip(remote_out.loss_fn_outputs, local_out.loss_fn_outputs, strict=True):
        np.testing.assert_allclose(r["logprobs"].to_numpy(), loc["logprobs"].to_numpy(),
                                   rtol=0, atol=1e-6)


def _step(client, data, loss_fn: str = "cross_entropy", lr: float = 1e-2):
    """forward_backward + optim_step submitted back to back, as the cookbook does."""
    types = mint.types if isinstance(client, mint.TrainingClient) else tt
    fb = client.forward_backward(data, loss_fn)
    opt = client.optim_step(types.AdamParams(learning_rate=lr))
    return fb.result(), opt.result()


# --------------------------------------------------------------------------------------------
# Training through the SDK == training in-process

LOSS_CONFIGS = {
    "cross_entropy": None,
    "importance_sampling": None,
    "ppo": {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1},
    # With `beta`, the seed's soft clip: what the in-process client computes (Tinker's CISPO, the
    # server's default, is checked against Tinker's formula below).
    "cispo": {"beta": 2.0, "clip_low_threshold": 0.8, "clip_high_threshold": 1.2},
    "dro": {"beta": 0.1},
    "gspo": {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1},
    "stable_reinforce": {"kl_coeff": 0.1, "clip_high_threshold": 1.2},
}


@pytest.mark.parametrize("loss_fn", list(LOSS_CONFIGS))
def test_losses_match_in_process(pair, loss_fn: str) -> None:
    remote, local = pair
    sdk, ours = _batch(local, loss_fn)
    config = LOSS_CONFIGS[loss_fn]
    # forward: loss and logprobs, no gradient
    _assert_same(remote.forward(sdk, loss_fn, config).result(),
                 local.forward(ours, loss_fn, config).result())
    # forward_backward then optim_step: the gradient norm says the gradients are the same
    fb_r = remote.forward_backward(sdk, loss_fn, config)
    opt_r = remote.optim_step(tt.AdamParams(learning_rate=1e-2))
    fb_l = local.forward_backward(ours, loss_fn, config)
    opt_l = local.optim_step(mint.types.AdamParams(learning_rate=1e-2))
    _assert_same(fb_r.result(), fb_l.result())
    grad_r, grad_l = opt_r.result().metrics, opt_l.result().metrics
    assert grad_r["grad_norm:mean"] > 0
    assert grad_r["grad_norm:mean"] == pytest.approx(grad_l["grad_norm:mean"], rel=1e-5)
    # and the step moved both models the same way
    after_r = remote.forward(sdk, loss_fn, config).result()
    _assert_same(after_r, local.forward(ours, loss_fn, config).result())
    before = fb_l.result().loss_fn_outputs[0]["logprobs"].to_numpy()
    assert np.abs(after_r.loss_fn_outputs[0]["logprobs"].to_numpy() - before).max() > 1e-4


def _tinker_rl_batch(local, log_ratio_shift: float) -> tuple[list, list[dict]]:
    """RL datums as the cookbook sends them (target_tokens, logprobs, advantages; no weights).
    The sampler logprobs are the model's own minus `log_ratio_shift` on every other completion
    token, so those tokens' ratios are exp(shift) and a clip at 4 binds when shift > log 4."""
    items = rl_batch(local.engine.vocab_size, groups=1, samples=3, prompt_len=5)
    plain = [mint.types.Datum(model_input=mint.types.ModelInput.from_ints(it["tokens"]),
                              loss_fn_inputs={"target_tokens": it["targets"],
                                              "weights": [1.0] * it["n"]}) for it in items]
    own = local.forward(plain, "cross_entropy").result().loss_fn_outputs
    sdk, inputs = [], []
    for it, out in zip(items, own, strict=True):
        shift = np.where(np.arange(it["n"]) % 2 == 0, log_ratio_shift, -0.3)
        x = {"target_tokens": it["targets"], "advantages": it["advantages"],
             "logprobs": (out["logprobs"].to_numpy() - shift).astype(np.float32).tolist()}
        inputs.append(x)
        sdk.append(tt.Datum(model_input=tt.ModelInput.from_ints(it["tokens"]), loss_fn_inputs=x))
    return sdk, inputs


def _tinker_cispo(logp: np.ndarray, x: dict, lo: float, hi: float) -> tuple[float, np.ndarray]:
    """Tinker's CISPO (docs /tinker/losses; tutorial 202): L = -sum sg(clip(rho, lo, hi))·logp·A
    with rho = exp(logp - logq). Returns L and dL/dlogp = -clip(rho)·A (the ratio detached)."""
    adv = np.asarray(x["advantages"], dtype=np.float64)
    coef = np.clip(np.exp(logp - np.asarray(x["logprobs"], dtype=np.float64)), lo, hi)
    return float(-(coef * logp * adv).sum()), -coef * adv


@pytest.mark.parametrize("config, bounds", [(None, (0.0, 4.0)),
                                            ({"clip_low_threshold": 0.5,
                                              "clip_high_threshold": 1.5}, (0.5, 1.5))])
def test_cispo_is_tinkers_hard_clip(service, pair, tiny_model, config, bounds) -> None:
    """Through the SDK, CISPO is Tinker's: its loss is Tinker's formula on the returned logprobs,
    and its gradient is that of -sum g·logp with g = Tinker's dL/dlogp (a cross-entropy with
    weights -g), in norm and in the step it takes, on a twin client with the same start."""
    remote, local = pair
    sdk, inputs = _tinker_rl_batch(local, log_ratio_shift=2.0)  # ratios e^2 > 4: clipped
    twin = service.create_lora_training_client(str(tiny_model), rank=RANK, seed=SEED).result()
    fb = remote.forward_backward(sdk, "cispo", config).result()
    expected, grads = 0.0, []
    for out, x in zip(fb.loss_fn_outputs, inputs, strict=True):
        value, grad = _tinker_cispo(out["logprobs"].to_numpy().astype(np.float64), x, *bounds)
        expected += value
        grads.append(grad)
    assert fb.metrics["loss:sum"] == pytest.approx(expected, rel=1e-4)
    clipped = [np.exp(o["logprobs"].to_numpy() - np.asarray(x["logprobs"])) > bounds[1]
               for o, x in zip(fb.loss_fn_outputs, inputs, strict=True)]
    assert any(c.any() for c in clipped)  # the high clip binds somewhere
    same_gradient = [tt.Datum(model_input=d.model_input,
                              loss_fn_inputs={"target_tokens": x["target_tokens"],
                                              "weights": (-g).astype(np.float32).tolist()})
                     for d, x, g in zip(sdk, inputs, grads, strict=True)]
    twin.forward_backward(same_gradient, "cross_entropy").result()
    step = tt.AdamParams(learning_rate=1e-2)
    norm, twin_norm = (c.optim_step(step).result().metrics["grad_norm:mean"]
                       for c in (remote, twin))
    assert norm > 0 and norm == pytest.approx(twin_norm, rel=1e-4)
    after, twin_after = (c.forward(sdk, "cispo", config).result() for c in (remote, twin))
    for a, b in zip(after.loss_fn_outputs, twin_after.loss_fn_outputs, strict=True):
        np.testing.assert_allclose(a["logprobs"].to_numpy(), b["logprobs"].to_numpy(),
                                   rtol=1e-4, atol=1e-5)


def _tinker_formula(loss_fn: str, logp: np.ndarray, x: dict, config: dict) -> float:
    """Tinker's documented losses (docs /tinker/losses/*), token sums, rho = exp(logp - logq)."""
    adv, logq = np.asarray(x["advantages"]), np.asarray(x["logprobs"])
    rho = np.exp(logp - logq)
    if loss_fn == "importance_sampling":
        return float(-(rho * adv).sum())
    if loss_fn == "ppo":
        clipped = np.clip(rho, config.get("clip_low_threshold", 0.8),
                          config.get("clip_high_threshold", 1.2))
        return float(-np.minimum(rho * adv, clipped * adv).sum())
    assert loss_fn == "dro"
    return float(-(logp * adv - 0.5 * config["beta"] * (logp - logq) ** 2).sum())


@pytest.mark.parametrize("loss_fn, config", [("importance_sampling", None), ("ppo", None),
                                             ("ppo", {"clip_low_threshold": 0.9,
                                                      "clip_high_threshold": 1.1}),
                                             ("dro", {"beta": 0.3})])
def test_other_losses_are_tinkers_formulas(pair, loss_fn, config) -> None:
    """The losses Tinker documents with a formula, on datums whose every token has an advantage
    (where A = 0, dro's quadratic term is masked here; Tinker's docs leave that open)."""
    remote, local = pair
    sdk, inputs = _tinker_rl_batch(local, log_ratio_shift=0.5)
    for x in inputs:
        x["advantages"] = [a if a else 0.25 for a in x["advantages"]]
    sdk = [tt.Datum(model_input=d.model_input, loss_fn_inputs=x)
           for d, x in zip(sdk, inputs, strict=True)]
    out = remote.forward(sdk, loss_fn, config).result()
    expected = sum(_tinker_formula(loss_fn, o["logprobs"].to_numpy().astype(np.float64), x,
                                   config or {})
                   for o, x in zip(out.loss_fn_outputs, inputs, strict=True))
    assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-4)


def test_cispo_soft_clip_by_beta_is_the_seeds(pair) -> None:
    """`beta` asks the server for the seed's soft clip: the in-process default, with its
    default bounds [0.8, 1.2]; without it the same datums give Tinker's hard clip."""
    remote, local = pair
    sdk, inputs = _tinker_rl_batch(local, log_ratio_shift=2.0)
    ours = [mint.types.Datum(model_input=mint.types.ModelInput.from_ints(d.model_input.to_ints()),
                             loss_fn_inputs=x) for d, x in zip(sdk, inputs, strict=True)]
    soft = remote.forward(sdk, "cispo", {"beta": 1.0}).result()
    _assert_same(soft, local.forward(ours, "cispo").result(), means_too=False)
    hard = remote.forward(sdk, "cispo").result()
    assert hard.metrics["loss:sum"] != pytest.approx(soft.metrics["loss:sum"], rel=1e-3)


def test_two_dimensional_cross_entropy_targets(pair) -> None:
    """[N, K] target_tokens and weights (top-k distillation; the SDK sends torch tensors as
    CSR where that is smaller): logprobs come back [N, K], each column the logprob of that
    column's tokens, and the loss is Tinker's -sum_n sum_k w[n,k]·logp(target[n,k])."""
    remote, local = pair
    vocab, n, k = local.engine.vocab_size, 12, 3
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, vocab, (n,), generator=g).tolist()
    targets = torch.randint(3, vocab, (n, k), generator=g)
    weights = torch.zeros(n, k)
    weights[-1, :] = torch.rand(k, generator=g) + 0.1  # this sparse, the SDK sends it as CSR
    datum = tt.Datum(model_input=tt.ModelInput.from_ints(tokens),
                     loss_fn_inputs={"target_tokens": targets, "weights": weights})
    out = remote.forward([datum], "cross_entropy").result()
    logprobs = out.loss_fn_outputs[0]["logprobs"].to_numpy()
    assert logprobs.shape == (n, k)
    columns = [tt.Datum(model_input=tt.ModelInput.from_ints(tokens),
                        loss_fn_inputs={"target_tokens": targets[:, j].tolist(),
                                        "weights": weights[:, j].tolist()}) for j in range(k)]
    one_d = remote.forward(columns, "cross_entropy").result()
    for j in range(k):
        np.testing.assert_allclose(logprobs[:, j], one_d.loss_fn_outputs[j]["logprobs"]
                                   .to_numpy(), rtol=0, atol=1e-6)
    expected = -(weights.numpy() * logprobs).sum()
    assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    assert one_d.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(tinker.RequestFailedError, match="weights"):
        remote.forward([tt.Datum(model_input=tt.ModelInput.from_ints(tokens),
                                 loss_fn_inputs={"target_tokens": targets,
                                                 "weights": weights[:, :2]})],
                       "cross_entropy").result()


def test_chunked_batch_matches_in_process(pair) -> None:
    """5 datums go as 3 requests sent together (the first one last); the server must apply
    every chunk once, before the optim_step that follows."""
    remote, local = pair
    sdk, ours = _batch(local, "ppo", n=5)
    assert len(sdk) > 2 * CHUNK_LEN
    fb_r, opt_r = _step(remote, sdk, "ppo")
    fb_l, opt_l = _step(local, ours, "ppo")
    _assert_same(fb_r, fb_l, means_too=False)  # per-chunk means merge differently in the SDK
    assert opt_r.metrics["grad_norm:mean"] == pytest.approx(opt_l.metrics["grad_norm:mean"],
                                                            rel=1e-5)
    _assert_same(remote.forward(sdk, "ppo").result(), local.forward(ours, "ppo").result(),
                 means_too=False)


def test_metrics_keys_are_name_colon_reduction(pair) -> None:
    remote, local = pair
    sdk, _ = _batch(local, "importance_sampling")
    out = remote.forward_backward(sdk, "importance_sampling").result()
    assert "loss:sum" in out.metrics and "ratio:mean" in out.metrics
    assert all(key.count(":") == 1 for key in out.metrics)
    assert wire.wire_metrics({"loss:sum": 1.0, "entropy": 2.0, "a:b:max": 3.0, "x:avg": 4.0}) \
        == {"loss:sum": 1.0, "entropy:mean": 2.0, "a_b:max": 3.0, "x_avg:mean": 4.0}


def test_status_reports_the_servers_memory_and_each_models_plan(server, pair) -> None:
    remote, local = pair
    sdk, _ = _batch(local, "importance_sampling")
    remote.forward_backward(sdk, "importance_sampling").result()
    status = httpx.get(f"{server}/api/v1/status").json()
    memory = status["memory"]
    assert memory["server_peak_rss"] >= memory["server_rss"] > 0
    plans = [m["memory_plan"] for m in status["models"].values() if m["memory_plan"]]
    assert plans and all(p["memory/microbatches:sum"] >= 1 and p["memory/recompute:max"] == 0
                         for p in plans)
    # every model of the tiny model's base shares one copy of its weights
    tiny = [b for b in status["base_models"] if b["folder"] == str(Path(local.engine.model_dir)
                                                                   .resolve())]
    assert len(tiny) == 1 and tiny[0]["bytes"] > 0
    own = [m for m in status["models"].values() if m["base_model"] == str(local.engine.model_dir)]
    assert own and all(0 < m["adapter_bytes"] < tiny[0]["bytes"] for m in own)


# --------------------------------------------------------------------------------------------
# stable_reinforce with provenance, as the cookbook sends it


def _cookbook_datum(prompt: list[int], sampled: list[int], logprobs: list[float],
                    advantage: float, sequence_id: str | None):
    """A datum laid out as tinker_cookbook's rl_loop builds it (prompt targets and logprobs
    padded with 0), with rl_loop's own with_sampled_provenance spans when given an id."""
    from tinker_cookbook.recipes.rl_loop import with_sampled_provenance

    ob = len(prompt) - 1
    datum = tt.Datum(model_input=tt.ModelInput.from_ints(prompt + sampled[:-1]),
                     loss_fn_inputs={"target_tokens": [0] * ob + sampled,
                                     "logprobs": [0.0] * ob + list(logprobs),
                                     "advantages": [0.0] * ob + [advantage] * len(sampled)})
    if sequence_id is None:
        return datum
    return with_sampled_provenance(datum, len(prompt), len(sampled), sequence_id)


def _as_mint(datum) -> mint.types.Datum:
    return mint.types.Datum(mint.types.ModelInput.from_ints(datum.model_input.to_ints()),
                            {k: v.tolist() for k, v in datum.loss_fn_inputs.items()})


def test_stable_reinforce_with_cookbook_provenance(pair) -> None:
    """The spans travel the wire, and the server trains against the logprobs recorded for the
    sequences they name, not those the datum carries. (Recorded here directly: the server runs
    in this process, so this is the store its samplers write; the slow test below samples.)"""
    from mint_rl.stability import RECORDED

    remote, local = pair
    items = rl_batch(local.engine.vocab_size, groups=1, samples=2, prompt_len=5)
    plain = [mint.types.Datum(model_input=mint.types.ModelInput.from_ints(it["tokens"]),
                              loss_fn_inputs={"target_tokens": it["targets"],
                                              "weights": [1.0] * it["n"]}) for it in items]
    own = local.forward(plain, "cross_entropy").result().loss_fn_outputs
    rng = np.random.default_rng(2)
    sdk, reference = [], []
    for i, (it, out) in enumerate(zip(items, own, strict=True)):
        full = it["tokens"] + it["targets"][-1:]
        prompt, sampled = full[:5], full[5:]
        learner = out["logprobs"].to_numpy()[4:]
        recorded = np.minimum(learner + rng.normal(0, 0.2, len(sampled)), 0).tolist()
        sent = np.minimum(learner + rng.normal(0, 0.2, len(sampled)), 0).tolist()
        sequence_id = f"test-provenance:{i}"
        RECORDED.record(sequence_id, prompt, sampled, recorded)
        advantage = 1.0 if i == 0 else -0.5
        sdk.append(_cookbook_datum(prompt, sampled, sent, advantage, sequence_id))
        reference.append(_as_mint(_cookbook_datum(prompt, sampled, recorded, advantage, None)))
    config = {"kl_coeff": 0.1}
    out_r = remote.forward(sdk, "stable_reinforce", config).result()
    out_l = local.forward(reference, "stable_reinforce", config).result()
    _assert_same(out_r, out_l, means_too=False)
    assert out_r.metrics["recorded_frac:mean"] == 1.0
    assert out_r.metrics["ratio:mean"] == pytest.approx(out_l.metrics["ratio:mean"], rel=1e-6)
    fb_r, opt_r = _step(remote, sdk, "stable_reinforce")
    fb_l, opt_l = _step(local, reference, "stable_reinforce")
    _assert_same(fb_r, fb_l, means_too=False)
    assert opt_r.metrics["grad_norm:mean"] > 0
    assert opt_r.metrics["grad_norm:mean"] == pytest.approx(opt_l.metrics["grad_norm:mean"],
                                                            rel=1e-5)
    # A datum whose spans name a recorded sequence but whose tokens are not that sequence's
    wrong = _cookbook_datum(prompt, sampled[:-1] + [sampled[-1] + 1], sent, 1.0, sequence_id)
    with pytest.raises(tinker.RequestFailedError, match=r"loss_fn_input_spans\[1\]"):
        remote.forward([wrong], "stable_reinforce").result()


def test_spans_that_do_not_tile_are_refused_by_the_server(pair) -> None:
    """The SDK's Datum only checks tiling in with_provenance: built directly, a miscounted
    datum reaches the server, which names the field."""
    remote, _ = pair
    spans = [tt.PromptProvenanceSpan(sequence_id="x", length=2)]
    datum = tt.Datum(model_input=tt.ModelInput.from_ints([5, 6, 7]),
                     loss_fn_inputs={"target_tokens": [6, 7, 8], "weights": [1.0] * 3},
                     model_input_spans=spans, loss_fn_input_spans=spans)
    with pytest.raises(tinker.RequestFailedError,
                       match=r"data\[0\]\.model_input_spans: cover 2 positions"):
        remote.forward([datum], "cross_entropy").result()


# --------------------------------------------------------------------------------------------
# Checkpoints


def _forward_logprobs(client, data) -> np.ndarray:
    outs = client.forward(data, "cross_entropy").result().loss_fn_outputs
    return np.concatenate([o["logprobs"].to_numpy() for o in outs])


def test_save_state_and_resume_with_and_without_optimizer(service, pair) -> None:
    remote, local = pair
    sdk, _ = _batch(local, "cross_entropy")
    _step(remote, sdk)
    _step(remote, sdk)
    path = remote.save_state("two-steps").result().path
    assert path == f"tinker://{remote.model_id}/weights/two-steps"
    exact = service.create_training_client_from_state_with_optimizer(path).result()
    fresh = service.create_training_client_from_state(path).result()
    assert exact.get_info().lora_rank == RANK and exact.model_id != remote.model_id
    saved = _forward_logprobs(remote, sdk)
    np.testing.assert_allclose(_forward_logprobs(exact, sdk), saved, atol=1e-6)
    np.testing.assert_allclose(_forward_logprobs(fresh, sdk), saved, atol=1e-6)
    for client in (remote, exact, fresh):
        _step(client, sdk)
    # Adam's moments came back with the optimizer: the next step is the one `remote` took
    np.testing.assert_allclose(_forward_logprobs(exact, sdk), _forward_logprobs(remote, sdk),
                               atol=1e-6)
    # a fresh Adam takes a different step from the same weights
    assert np.abs(_forward_logprobs(fresh, sdk) - _forward_logprobs(remote, sdk)).max() > 1e-4


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the SDK deprecates TrainingClient.load_*
def test_load_state_into_an_existing_client(service, pair) -> None:
    """The legacy load_state (weights, fresh Adam) and load_state_with_optimizer (exact) on a
    live client: each then steps as a client created from the checkpoint the same way does."""
    remote, local = pair
    sdk, _ = _batch(local, "cross_entropy")
    _step(remote, sdk)
    path = remote.save_state("one-step").result().path
    at_save = _forward_logprobs(remote, sdk)
    stepped: dict[bool, np.ndarray] = {}
    for optimizer, create in ((False, service.create_training_client_from_state),
                              (True, service.create_training_client_from_state_with_optimizer)):
        _step(remote, sdk)
        assert np.abs(_forward_logprobs(remote, sdk) - at_save).max() > 1e-4
        load = remote.load_state_with_optimizer if optimizer else remote.load_state
        load(path).result()
        np.testing.assert_allclose(_forward_logprobs(remote, sdk), at_save, atol=1e-6)
        twin = create(path).result()
        _step(remote, sdk)
        _step(twin, sdk)
        stepped[optimizer] = _forward_logprobs(twin, sdk)
        np.testing.assert_allclose(_forward_logprobs(remote, sdk), stepped[optimizer], atol=1e-6)
    # the restored Adam moments make a different step than a fresh Adam
    assert np.abs(stepped[True] - stepped[False]).max() > 1e-4


def test_checkpoints_list_describe_and_delete(server, pair) -> None:
    remote, local = pair
    remote.save_state("kept").result()
    sampler_path = remote.save_weights_for_sampler("for-sampling").result().path
    assert sampler_path == f"tinker://{remote.model_id}/sampler_weights/for-sampling"
    rest = tinker.RestClient(base_url=server)
    listed = rest.list_checkpoints(remote.model_id).result().checkpoints
    assert {(c.checkpoint_id, c.checkpoint_type) for c in listed} == {
        ("weights/kept", "training"), ("sampler_weights/for-sampling", "sampler")}
    run = rest.get_training_run(remote.model_id).result()
    assert run.lora_rank == RANK and run.training_run_id == remote.model_id
    rest.delete_checkpoint(remote.model_id, "weights/kept").result()
    listed = rest.list_checkpoints(remote.model_id).result().checkpoints
    assert [c.checkpoint_id for c in listed] == ["sampler_weights/for-sampling"]
    assert not (ckpt.runs_dir() / remote.model_id / "weights" / "kept").exists()


# --------------------------------------------------------------------------------------------
# Errors: a bad request fails alone, with the field named


def test_bad_datum_fails_that_request_only(service, pair, tiny_model) -> None:
    remote, local = pair
    other = service.create_lora_training_client(str(tiny_model), rank=RANK, seed=SEED).result()
    sdk, ours = _batch(local, "cross_entropy")
    bad = tt.Datum(model_input=tt.ModelInput.from_ints([5, 6, 7]),
                   loss_fn_inputs={"target_tokens": [6, 7], "weights": [1.0, 1.0]})
    failing = remote.forward_backward([bad], "cross_entropy")
    meanwhile, meanwhile_step = _step(other, sdk)
    with pytest.raises(tinker.RequestFailedError, match="target_tokens") as err:
        failing.result()
    assert err.value.category == tt.RequestErrorCategory.User
    expected, expected_step = _step(local, ours)
    _assert_same(meanwhile, expected)
    # the failed client keeps working, and the failure added nothing to its gradient
    after, after_step = _step(remote, sdk)
    _assert_same(after, expected)
    for step in (meanwhile_step, after_step):
        assert step.metrics["grad_norm:mean"] == pytest.approx(
            expected_step.metrics["grad_norm:mean"], rel=1e-5)


@pytest.mark.parametrize("loss_fn, config, field", [
    ("reinforce_pp", None, "loss_fn"),  # not a loss of this server
    ("ppo", {"clip_ratio": 0.9}, "clip_ratio"),
    ("gspo", {"clip_high_threshold": 0.5}, "clip_high_threshold"),
    ("stable_reinforce", {"kl_coeff": -1.0}, "kl_coeff"),
])
def test_bad_loss_is_refused_by_name(pair, loss_fn, config, field) -> None:
    remote, local = pair
    sdk, _ = _batch(local, "ppo")
    with pytest.raises(tinker.RequestFailedError, match=field):
        remote.forward_backward(sdk, loss_fn, config).result()


def test_path_escapes_are_refused(service, pair, server, tmp_path) -> None:
    remote, _ = pair
    remote.save_state("ok").result()
    for path in ("tinker://../weights/ok", f"tinker://{remote.model_id}/weights/..",
                 f"tinker://{remote.model_id}/secrets/ok", "/etc/passwd"):
        with pytest.raises(tinker.RequestFailedError, match="path"):
            service.create_training_client_from_state(path).result()
    with pytest.raises(tinker.BadRequestError, match="path"):
        service.create_sampling_client(model_path="tinker://../../weights").result()
    # a run folder that links outside the storage is not followed
    outside = tmp_path / "outside" / "weights" / "x"
    outside.mkdir(parents=True)
    shutil.copytree(ckpt.runs_dir() / remote.model_id / "weights" / "ok", outside,
                    dirs_exist_ok=True)
    link = ckpt.runs_dir() / "linked"
    link.symlink_to(tmp_path / "outside")
    try:
        with pytest.raises(tinker.RequestFailedError, match="path"):
            service.create_training_client_from_state("tinker://linked/weights/x").result()
        assert httpx.delete(f"{server}/api/v1/training_runs/linked/checkpoints/weights/x"
                            ).status_code == 400
    finally:
        link.unlink()
    # DELETE with an encoded '..' in the checkpoint id
    victim = ckpt.runs_dir() / remote.model_id / "weights" / "ok"
    url = f"{server}/api/v1/training_runs/{remote.model_id}/checkpoints/weights%2F..%2Fweights"
    assert httpx.delete(url).status_code == 400
    assert victim.is_dir() and outside.is_dir()


def test_malformed_bodies_get_4xx_json(server, pair) -> None:
    remote, _ = pair
    api = f"{server}/api/v1"
    proto = {"content-type": "application/x-protobuf"}
    cases = [
        httpx.post(f"{api}/forward_backward", content=b"\xff\xff not protobuf", headers=proto),
        httpx.post(f"{api}/forward_backward", content=b"x", headers={**proto,
                                                                     "content-encoding": "zstd"}),
        httpx.post(f"{api}/forward_backward", json={"model_id": remote.model_id}),
        httpx.post(f"{api}/optim_step", content=b"{not json",
                   headers={"content-type": "application/json"}),
        httpx.post(f"{api}/optim_step", json={"seq_id": 3}),
        httpx.post(f"{api}/create_model", json={"session_id": 5}),
        httpx.post(f"{api}/get_info", json={"model_id": "nobody:train:0"}),
        httpx.post(f"{api}/retrieve_future", json={"request_id": "nope"}),
        httpx.post(f"{api}/asample", json={"sampling_session_id": "x", "prompt": {"chunks": []},
                                           "sampling_params": {}}),
    ]
    assert [r.status_code for r in cases] == [400, 400, 415, 422, 422, 422, 404, 404, 404]
    assert all("detail" in r.json() for r in cases)
    assert "model_id" in cases[6].json()["detail"]


def test_uncompressed_protobuf_request_and_result(server, pair) -> None:
    """The wire format by hand: a ForwardBackwardRequest without zstd, the result as protobuf."""
    remote, local = pair
    _, ours = _batch(local, "cross_entropy", n=1)
    tokens = ours[0].model_input.to_ints()
    msg = pb.ForwardBackwardRequest(model_id=remote.model_id, seq_id=0, loss_fn="cross_entropy",
                                    forward_only=True)
    datum = msg.data.add()
    datum.model_input.add().encoded_text.tokens = np.asarray(tokens, "<i4").tobytes()
    for key, array in (("target_tokens", np.asarray(ours[0].loss_fn_inputs["target_tokens"]
                                                    .data, "<i8")),
                       ("weights", np.asarray(ours[0].loss_fn_inputs["weights"].data, "<f4"))):
        datum.loss_fn_inputs[key].dense = array.tobytes()
        datum.loss_fn_inputs[key].dtype = pb.DTYPE_INT64 if key == "target_tokens" \
            else pb.DTYPE_FLOAT32
    api = f"{server}/api/v1"
    submitted = httpx.post(f"{api}/forward_backward", content=msg.SerializeToString(),
                           headers={"content-type": "application/x-protobuf"}).json()
    while True:
        r = httpx.post(f"{api}/retrieve_future", json={"request_id": submitted["request_id"]},
                       timeout=30)
        if r.status_code != 408:
            break
    assert r.headers["content-type"] == "application/x-protobuf"
    out = pb.ForwardBackwardOutput.FromString(r.content)
    expected = local.forward(ours, "cross_entropy").result()
    assert out.metrics["loss:sum"] == pytest.approx(expected.metrics["loss:sum"], rel=1e-6)
    field = out.loss_fn_outputs[0].fields["logprobs"]
    assert np.frombuffer(field.offsets, "<i8").tolist() == [0, 4 * len(tokens)]
    np.testing.assert_allclose(np.frombuffer(field.data, "<f4"),
                               expected.loss_fn_outputs[0]["logprobs"].to_numpy(), atol=1e-6)


# --------------------------------------------------------------------------------------------
# Safety settings (no SDK needed)


def test_public_host_needs_an_api_key() -> None:
    with pytest.raises(InvalidInputError, match="host"):
        ServerConfig(host="0.0.0.0")
    with pytest.raises(InvalidInputError, match="api_key"):
        ServerConfig(host="0.0.0.0", api_key="secret")  # the SDK could not send it
    assert ServerConfig(host="0.0.0.0", api_key="tml-secret").api_key == "tml-secret"
    assert ServerConfig(host="::1").api_key is None


def test_cli_serve_refuses_an_unsafe_setup(monkeypatch, capfd) -> None:
    from mint_rl import cli

    monkeypatch.delenv("MINT_RL_API_KEY", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "API key" in capfd.readouterr().out
    assert cli.main(["serve", "--host", "0.0.0.0", "--api-key", "no-prefix"]) == 2
    monkeypatch.setenv("MINT_RL_API_KEY", "also-no-prefix")
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "tml-" in capfd.readouterr().out


def test_api_key_and_request_size_are_checked() -> None:
    from fastapi.testclient import TestClient

    app = create_app(ServerConfig(host="0.0.0.0", api_key="tml-secret",
                                  max_request_bytes=4096))
    with TestClient(app) as client:
        body = {"tags": [], "user_metadata": None, "sdk_version": "0.38.0"}
        assert client.post("/api/v1/create_session", json=body).status_code == 401
        assert client.post("/api/v1/create_session", json=body,
                           headers={"X-API-Key": "tml-wrong"}).status_code == 401
        key = {"X-API-Key": "tml-secret"}
        assert client.post("/api/v1/create_session", json=body, headers=key).status_code == 200
        assert client.get("/api/v1/healthz").json() == {"status": "ok"}  # probes need no key
        big = client.post("/api/v1/create_session", headers=key,
                          json={**body, "tags": ["x" * 5000]})
        assert big.status_code == 413 and "4096" in big.json()["detail"]

        def chunked():  # no Content-Length: counted as it arrives
            yield b'{"tags": ["' + b"x" * 5000
            yield b'"]}'

        streamed = client.post("/api/v1/create_session", headers=key, content=chunked())
        assert streamed.status_code == 413


# --------------------------------------------------------------------------------------------
# Pieces: the wire schema, tensors, ordering


def test_wire_schema_matches_the_sdk() -> None:
    """Every field of our messages has the SDK's number and type: that is all the wire sees."""
    from tinker.proto import tinker_public_pb2 as sdk_pb

    def fields(descriptor) -> dict:
        return {f.name: (f.number, f.type, f.is_repeated, f.message_type.name if f.message_type
                         else None) for f in descriptor.fields}

    checked = 0
    for name, ours in pb.DESCRIPTOR.message_types_by_name.items():
        theirs = sdk_pb.DESCRIPTOR.message_types_by_name[name]
        assert fields(ours) == fields(theirs), name
        for nested in ours.nested_types:
            assert fields(nested) == fields(theirs.nested_types_by_name[nested.name])
        checked += 1
    assert checked >= 15
    for enum in ("DType", "StopReason"):
        ours_values = {v.name: v.number for v in pb.DESCRIPTOR.enum_types_by_name[enum].values}
        assert ours_values == {v.name: v.number
                               for v in sdk_pb.DESCRIPTOR.enum_types_by_name[enum].values}


def test_tensors_dense_and_sparse_csr_decode_as_the_sdk_encodes() -> None:
    import torch
    from tinker.proto import request_conv

    target = torch.tensor([[5, 0, 0, 9], [0, 0, 7, 0], [0, 0, 0, 0]], dtype=torch.int64)
    weights = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float32)
    for tensor, sparse in ((target, True), (weights, False)):
        sdk_td = (tt.TensorData.from_torch_sparse(tensor) if sparse
                  else tt.TensorData.from_torch(tensor))
        assert (sdk_td.sparse_crow_indices is not None) == sparse
        raw = request_conv._tensor_data_to_proto(sdk_td).SerializeToString()
        ours = decode_tensor("t", pb.Tensor.FromString(raw))
        np.testing.assert_array_equal(ours.to_numpy(), tensor.numpy())
        assert ours.dtype == str(tensor.dtype).removeprefix("torch.")


@pytest.mark.parametrize("change, field", [
    (lambda m: setattr(m.sparse_csr, "col_indices", np.asarray([0, 4], "<i8").tobytes()),
     "col_indices"),
    (lambda m: setattr(m.sparse_csr, "crow_indices", np.asarray([0, 2, 1], "<i8").tobytes()),
     "crow_indices"),
    (lambda m: m.shape.extend([1 << 20]), "sparse CSR tensor must be 2-D"),
    (lambda m: setattr(m, "dtype", pb.DTYPE_BFLOAT16), "dtype"),
])
def test_malformed_tensors_are_refused_naming_the_field(change, field) -> None:
    msg = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3])
    msg.sparse_csr.values = np.asarray([1.0, 2.0], "<f4").tobytes()
    msg.sparse_csr.crow_indices = np.asarray([0, 1, 2], "<i8").tobytes()
    msg.sparse_csr.col_indices = np.asarray([0, 2], "<i8").tobytes()
    assert decode_tensor("x", msg).to_numpy().tolist() == [[1, 0, 0], [0, 0, 2]]
    change(msg)
    with pytest.raises(InvalidInputError, match=field):
        decode_tensor("x", msg)
    dense = pb.Tensor(dtype=pb.DTYPE_FLOAT32, dense=b"\x00" * 6)  # 1.5 floats
    with pytest.raises(InvalidInputError, match="whole number"):
        decode_tensor("x", dense)


def test_sequencer_runs_in_seq_order_and_skips_a_lost_seq_id() -> None:
    ran: list[int] = []
    done = threading.Event()
    seq = Sequencer("test", next_seq=1, gap_timeout_s=0.3)
    for s in (3, 2, 5):  # 1 arrives last; 4 never arrives
        seq.submit(s, lambda s=s: ran.append(s))
    time.sleep(0.1)
    assert ran == []  # all wait for seq_id 1
    seq.submit(1, lambda: ran.append(1))
    seq.submit(None, lambda: ran.append(0))
    seq.submit(6, lambda: (ran.append(6), done.set()))
    assert done.wait(5)  # 4 was skipped after the gap timeout
    seq.close()
    assert ran == [1, 2, 3, 0, 5, 6]


def test_models_with_queued_work_take_turns() -> None:
    """Two models submit three operations each at once: they run one at a time, alternating,
    not all of the first model's before the second's."""
    turns, order, lock = Turns(), [], threading.Lock()
    running, most_at_once = [], []

    def op(name: str) -> None:
        with turns.turn():
            with lock:
                running.append(name)
                most_at_once.append(len(running))
            time.sleep(0.05)
            with lock:
                running.remove(name)
                order.append(name)

    a, b = Sequencer("a"), Sequencer("b")
    for seq in (1, 2, 3):
        a.submit(seq, lambda: op("a"))
        b.submit(seq, lambda: op("b"))
    a.close(wait=True)
    b.close(wait=True)
    assert sorted(order) == ["a"] * 3 + ["b"] * 3
    assert max(most_at_once) == 1, "two operations ran at once"
    assert all(x != y for x, y in itertools.pairwise(order)), order


def test_a_session_without_heartbeats_is_finished() -> None:
    """A client that went away: its session ends (the server checks in the background) and its
    models are freed; a session that heartbeats or sends requests stays."""
    from fastapi.testclient import TestClient

    registry = Registry()
    silent, beating, busy = (registry.new_session({}) for _ in range(3))
    long_ago = time.time() - 100
    silent.last_heartbeat = beating.last_heartbeat = busy.last_heartbeat = long_ago
    beating.last_heartbeat = time.time()
    registry.models["m"] = Model("m", busy.id, "base", client=None, sequencer=None)  # type: ignore[arg-type]
    registry.expire(50)
    assert (silent.finished, beating.finished, busy.finished) == (True, False, False)

    app = create_app(ServerConfig(session_timeout_s=0.5))
    with TestClient(app) as http:
        gone = http.post("/api/v1/create_session", json={}).json()["session_id"]
        deadline = time.monotonic() + 60
        while not app.state.server.registry.sessions[gone].finished:
            assert time.monotonic() < deadline, "the silent session was never finished"
            time.sleep(0.1)
        assert http.post("/api/v1/session_heartbeat",
                         json={"session_id": gone}).status_code == 410  # the SDK stops there


def test_tinker_paths_stay_in_storage() -> None:
    root = ckpt.runs_dir().resolve()
    assert paths.folder("run:train:0", "weights", "a") == root / "run:train:0" / "weights" / "a"
    for bad in ("tinker://a/weights", "tinker://a/b/c", "tinker://a/weights/b/c",
                "tinker://.hidden/weights/x", "tinker://a\\..\\b/weights/x", "mint://a/weights/x"):
        with pytest.raises(InvalidInputError, match="path"):
            paths.parse(bad)


# --------------------------------------------------------------------------------------------
# Sampling (vLLM; the session's shared engine)


@pytest.fixture(scope="module")
def trained(service, sampler_engine):
    """A LoRA on the default model, trained one step so it differs from the base model."""
    client = service.create_lora_training_client(DEFAULT_MODEL, rank=RANK, seed=SEED).result()
    tokenizer = client.get_tokenizer()  # tokenizer_id is a local folder: no hub needed
    ids = tokenizer.encode("The capital of France is Paris.")
    datum = tt.Datum(model_input=tt.ModelInput.from_ints(ids[:-1]),
                     loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)})
    _step(client, [datum], lr=1e-3)
    return client, ids, datum


@pytest.mark.slow
def test_sample_from_a_saved_checkpoint(service, trained) -> None:
    client, ids, _ = trained
    path = client.save_weights_for_sampler("sample-me").result().path
    sampler = service.create_sampling_client(model_path=path).result()
    assert sampler.get_base_model() == DEFAULT_MODEL
    params = tt.SamplingParams(max_tokens=6, temperature=0.0)
    result = sampler.sample(tt.ModelInput.from_ints(ids[:5]), 2, params).result()
    # the same folder sampled in-process, greedily: the same tokens and logprobs
    folder = ckpt.runs_dir() / client.model_id / "sampler_weights" / "sample-me"
    local = mint.SamplingClient(DEFAULT_MODEL, folder).sample(
        mint.types.ModelInput.from_ints(ids[:5]), 1,
        mint.types.SamplingParams(max_tokens=6, temperature=0.0)).result().sequences[0]
    assert len({s.sequence_id for s in result.sequences}) == 2
    for seq in result.sequences:
        assert seq.tokens == local.tokens and 1 <= len(seq.tokens) <= 6
        np.testing.assert_allclose(seq.logprobs, local.logprobs, atol=1e-4)
        assert seq.stop_reason in ("length", "stop")


@pytest.mark.slow
def test_compute_logprobs_match_the_learner(service, trained) -> None:
    client, ids, datum = trained
    sampler = client.save_weights_and_get_sampling_client().result()
    logprobs = sampler.compute_logprobs(tt.ModelInput.from_ints(ids)).result()
    learner = client.forward([datum], "cross_entropy").result().loss_fn_outputs[0]["logprobs"]
    assert logprobs[0] is None and len(logprobs) == len(ids)
    np.testing.assert_allclose(logprobs[1:], learner.tolist(), atol=2e-3)
    # prompt logprobs with top-k come back in the SDK's own shapes
    result = sampler.sample(tt.ModelInput.from_ints(ids), 1, tt.SamplingParams(max_tokens=1),
                            include_prompt_logprobs=True, topk_prompt_logprobs=3).result()
    assert result.prompt_logprobs[0] is None
    np.testing.assert_allclose(result.prompt_logprobs[1:], logprobs[1:], atol=1e-4)
    topk = result.topk_prompt_logprobs
    assert topk[0] is None and all(len(row) == 3 for row in topk[1:])
    assert all(row[0][1] >= lp - 1e-4 for row, lp in zip(topk[1:], logprobs[1:], strict=True))
    # top-k of each generated token: the best first, the sampled token's logprob among or
    # below them, and greedy picks the best
    greedy = sampler.sample(tt.ModelInput.from_ints(ids[:4]), 1,
                            tt.SamplingParams(max_tokens=4, temperature=0.0),
                            topk_sample_logprobs=2).result().sequences[0]
    assert greedy.topk_logprobs is not None and len(greedy.topk_logprobs) == len(greedy.tokens)
    for token, lp, row in zip(greedy.tokens, greedy.logprobs, greedy.topk_logprobs, strict=True):
        assert len(row) == 2 and row[0][1] >= row[1][1]
        assert row[0][0] == token and row[0][1] == pytest.approx(lp, abs=1e-4)


def _learner_logprobs(client, prompt: list[int], completion: list[int]) -> np.ndarray:
    full = prompt + completion
    datum = tt.Datum(model_input=tt.ModelInput.from_ints(full[:-1]),
                     loss_fn_inputs={"target_tokens": full[1:], "weights": [0.0] * (len(full) - 1)})
    out = client.forward([datum], "cross_entropy").result().loss_fn_outputs[0]["logprobs"]
    return out.to_numpy()[len(prompt) - 1:]


@pytest.mark.slow
def test_two_learners_share_the_engine_without_mixing(service, trained) -> None:
    """Two training clients of one base model at the same step: each sampling client samples
    its own learner's weights, also when the other's weights arrive while it samples."""
    a, ids, _ = trained
    b = service.create_lora_training_client(DEFAULT_MODEL, rank=RANK, seed=SEED + 1).result()
    text = b.get_tokenizer().encode("Bananas are yellow, long and curved.")
    _step(b, [tt.Datum(model_input=tt.ModelInput.from_ints(text[:-1]),
                       loss_fn_inputs={"target_tokens": text[1:],
                                       "weights": [1.0] * (len(text) - 1)})], lr=2e-2)
    prompt = ids[:4]
    params = tt.SamplingParams(max_tokens=24, temperature=1.0, seed=5)
    sampler_a = a.save_weights_and_get_sampling_client().result()
    in_flight = sampler_a.sample(tt.ModelInput.from_ints(prompt), 4, params)
    sampler_b = b.save_weights_and_get_sampling_client().result()  # same step as a's
    from_b = sampler_b.sample(tt.ModelInput.from_ints(prompt), 4, params)
    differ = 0.0
    for own, other, result in ((a, b, in_flight.result()), (b, a, from_b.result())):
        for seq in result.sequences:
            np.testing.assert_allclose(seq.logprobs, _learner_logprobs(own, prompt, seq.tokens),
                                       atol=2e-3)
            theirs = _learner_logprobs(other, prompt, seq.tokens)
            differ = max(differ, float(np.abs(np.asarray(seq.logprobs) - theirs).max()))
    assert differ > 0.05, "the two learners' policies should differ"


@pytest.mark.slow
def test_bad_sampling_request_is_refused_by_name(service, trained) -> None:
    client, ids, _ = trained
    sampler = service.create_sampling_client(base_model=DEFAULT_MODEL).result()
    with pytest.raises(tinker.RequestFailedError, match="top_p"):
        sampler.sample(tt.ModelInput.from_ints(ids), 1,
                       tt.SamplingParams(max_tokens=2, top_p=0.0)).result()
    ok = sampler.sample(tt.ModelInput.from_ints(ids), 1, tt.SamplingParams(max_tokens=2)).result()
    assert len(ok.sequences[0].tokens) <= 2


@pytest.mark.slow
def test_stable_reinforce_on_recorded_samples(service, sampler_engine) -> None:
    """The cookbook's rl_loop step: sample with record_stability_info, build the datums with
    with_sampled_provenance, train with stable_reinforce. The server must use the
    logprobs it recorded (the datums carry others) and match the same step in-process."""
    remote = service.create_lora_training_client(DEFAULT_MODEL, rank=RANK, seed=SEED).result()
    local = mint.ServiceClient().create_lora_training_client(DEFAULT_MODEL, rank=RANK,
                                                             seed=SEED)
    try:
        path = remote.save_weights_for_sampler("recorded").result().path
        sampler = service.create_sampling_client(model_path=path,
                                                 record_stability_info=True).result()
        prompt = remote.get_tokenizer().encode("Count with me: one, two, three,")
        result = sampler.sample(tt.ModelInput.from_ints(prompt), 3,
                                tt.SamplingParams(max_tokens=5, seed=3)).result()
        ids = [seq.sequence_id for seq in result.sequences]
        assert all(ids) and len(set(ids)) == 3
        sdk, reference = [], []
        for seq, advantage in zip(result.sequences, (1.0, -0.5, 0.25), strict=True):
            shifted = [min(lp + 0.05, 0.0) for lp in seq.logprobs]  # not what was sampled
            sdk.append(_cookbook_datum(prompt, seq.tokens, shifted, advantage, seq.sequence_id))
            reference.append(_as_mint(_cookbook_datum(prompt, seq.tokens, seq.logprobs,
                                                      advantage, None)))
        # The 3 datums go as 2 requests, packed unlike the in-process batch: on this model
        # that moves logprobs by ~1e-5, so the tolerances are wider than _assert_same's.
        out_r = remote.forward(sdk, "stable_reinforce").result()
        out_l = local.forward(reference, "stable_reinforce").result()
        assert out_r.metrics["recorded_frac:mean"] == 1.0
        assert out_r.metrics["loss:sum"] == pytest.approx(out_l.loss, rel=1e-5)
        for r, loc in zip(out_r.loss_fn_outputs, out_l.loss_fn_outputs, strict=True):
            np.testing.assert_allclose(r["logprobs"].to_numpy(), loc["logprobs"].to_numpy(),
                                       rtol=0, atol=1e-4)
        # The logprobs the datums carry would give another loss: the recorded ones were used.
        carried = [_as_mint(d) for d in sdk]
        assert local.forward(carried, "stable_reinforce").result().loss != pytest.approx(
            out_l.loss, rel=1e-3)
        fb_r, opt_r = _step(remote, sdk, "stable_reinforce", lr=1e-3)
        fb_l, opt_l = _step(local, reference, "stable_reinforce", lr=1e-3)
        assert fb_r.metrics["loss:sum"] == pytest.approx(fb_l.loss, rel=1e-5)
        assert opt_r.metrics["grad_norm:mean"] > 0
        assert opt_r.metrics["grad_norm:mean"] == pytest.approx(
            opt_l.metrics["grad_norm:mean"], rel=1e-4)
    finally:
        local.close()

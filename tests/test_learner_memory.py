"""The learner's memory plan (mint_rl/learner/memory.py): micro-batches sized to a memory budget,
per-layer recompute when a datum would not fit otherwise, a measured cost per token.

Changing the plan changes how the learner computes, never what: every plan must give the loss,
logprobs and gradients of the batch in one piece. The slow test at the end runs a real
architecture's shape (Qwen3-0.6B's, random weights) in a fresh process and checks that its peak
memory stays within the weights plus the budget the plan was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import lora_grads, randomize_lora_b, rl_batch, to_datums

import mint_rl as mint
from mint_rl.learner.engine import LearnerSettings
from mint_rl.learner.memory import ActivationCost, MemoryPlan, plan_memory, split_microbatches

MiB = 1 << 20


def _client(model, **settings) -> mint.TrainingClient:
    service = mint.ServiceClient(learner_settings=LearnerSettings(**settings))
    client = service.create_lora_training_client(str(model), rank=4, seed=0)
    randomize_lora_b(client.engine.model)
    return client


def _ppo_batch(client: mint.TrainingClient, seed: int = 3) -> list[mint.types.Datum]:
    items = rl_batch(client.engine.vocab_size, seed=seed, groups=3, samples=4, prompt_len=20)
    return to_datums(items, "ppo", [[-6.0] * it["n"] for it in items])


def _step(client: mint.TrainingClient, datums, loss_fn: str = "ppo"):
    client.engine.zero_grad()
    out = client.forward_backward(datums, loss_fn).result()
    grads = lora_grads(client.engine.model)
    client.engine.zero_grad()
    return out, grads


def _assert_same(a, grads_a, b, grads_b) -> None:
    assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-6)
    for x, y in zip(a.loss_fn_outputs, b.loss_fn_outputs, strict=True):
        torch.testing.assert_close(y["logprobs"].to_torch(), x["logprobs"].to_torch(),
                                   atol=1e-5, rtol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, atol=1e-6, rtol=1e-4, msg=name)


# ------------------------------------------------------------------------------------------------
# the plan, as a function


COST = ActivationCost(decoder=1000.0, head=100.0, layers=10)


def test_the_budget_is_the_smaller_of_free_memory_and_the_cap():
    # Without recompute 1,100 bytes a position; with it 0.4 x 1,100 = 440.
    # Half of the free memory at most: the rest covers what the cost per token leaves out.
    plan = plan_memory(COST, 1.0, free_bytes=1_000_000, cap_bytes=None, recompute="auto")
    assert plan.budget_bytes == 500_000 and plan.microbatch_positions == 500_000 // 1100
    assert plan.recompute_positions == plan.microbatch_positions and not plan.recompute_all
    plan = plan_memory(COST, 1.0, free_bytes=1_000_000, cap_bytes=100_000, recompute="auto")
    assert plan.budget_bytes == 100_000
    # The LM head's share is what a position costs only where it trains.
    assert plan_memory(COST, 0.5, 10**9, 105_000, "off").microbatch_positions == 100
    assert plan_memory(COST, 0.5, 10**9, 105_000, "off").recompute_positions is None
    assert plan_memory(COST, 1.0, 10**9, 60_000, "on").recompute_all


def test_only_micro_batches_holding_a_datum_too_long_for_the_budget_recompute():
    plan = plan_memory(COST, 1.0, free_bytes=10**9, cap_bytes=66_000, recompute="auto")
    assert (plan.microbatch_positions, plan.recompute_positions) == (60, 60)
    lengths = [30, 30, 30, 30, 50, 80, 100]
    units = [(20, [0, 1, 2, 3]), (0, [4]), (0, [5]), (0, [6])]
    parts = split_microbatches(units, lengths, plan)
    # The group (20 + 4 x 10 = 60 positions) and the 50 fit without recompute; 80 and 100 do not:
    # each gets a micro-batch of its own that recomputes.
    assert [(p.datums, p.recompute) for p in parts] == [
        ([0, 1, 2, 3], False), ([4], False), ([5], True), ([6], True)]
    off = split_microbatches(units, lengths, plan_memory(COST, 1.0, 10**9, 66_000, "off"))
    assert [(p.datums, p.recompute) for p in off] == [
        ([0, 1, 2, 3], False), ([4], False), ([5], False), ([6], False)]
    # "on": every micro-batch recomputes, 66,000 // 440 = 150 positions each.
    on = split_microbatches(units, lengths, plan_memory(COST, 1.0, 10**9, 66_000, "on"))
    assert [(p.datums, p.recompute) for p in on] == [([0, 1, 2, 3, 4], True), ([5], True),
                                                      ([6], True)]


def test_microbatches_keep_groups_whole_where_they_fit_and_count_a_shared_prompt_once():
    lengths = [30, 30, 30, 30, 50, 20]
    units = [(20, [0, 1, 2, 3]), (0, [4]), (0, [5])]  # a group: 20 + 4 x 10 = 60 positions

    def split(capacity: int) -> list[list[int]]:
        plan = MemoryPlan(budget_bytes=1, microbatch_positions=capacity, recompute_positions=None)
        return [p.datums for p in split_microbatches(units, lengths, plan)]

    assert split(60) == [[0, 1, 2, 3], [4], [5]]
    assert split(200) == [[0, 1, 2, 3, 4, 5]]
    # A group bigger than a micro-batch is cut; each part computes the prompt again.
    assert split(40) == [[0, 1], [2, 3], [4], [5]]


# ------------------------------------------------------------------------------------------------
# the plan, in the learner


def test_recompute_changes_how_the_learner_computes_not_what(tiny_model):
    plain = _client(tiny_model, recompute="off")
    recomputing = _client(tiny_model, recompute="on")
    datums = _ppo_batch(plain)
    a, grads_a = _step(plain, datums)
    b, grads_b = _step(recomputing, datums)
    assert a.metrics["memory/recompute:max"] == 0 and b.metrics["memory/recompute:max"] == 1
    _assert_same(a, grads_a, b, grads_b)


def test_little_free_memory_splits_the_batch_and_a_long_datum_turns_recompute_on(
        tiny_model, monkeypatch):
    from mint_rl.learner import engine as learner_engine

    client = _client(tiny_model)
    datums = _ppo_batch(client)
    a, grads_a = _step(client, datums)
    assert a.metrics["memory/microbatches:sum"] == 1 and a.metrics["memory/recompute:max"] == 0
    cost = client.engine.activation_cost  # measured by that call, replacing the estimate
    assert cost.measured and cost.decoder > 0 and cost.head > 0

    # Free memory for ~40 positions of activations (half of what is free is the budget): the
    # batch (3 groups of 20 + 4 x 4..9 positions) takes several micro-batches, same result.
    free = int(2 * 40 * cost.per_position(False))
    monkeypatch.setattr(learner_engine, "free_memory", lambda device: free)
    b, grads_b = _step(client, datums)
    assert b.metrics["memory/microbatches:sum"] >= 3 and b.metrics["memory/recompute:max"] == 0
    _assert_same(a, grads_a, b, grads_b)

    # One datum of 55 positions does not fit 40 without recompute: recompute turns on.
    tokens = [3 + (7 * i) % 300 for i in range(56)]
    long = mint.types.Datum(mint.types.ModelInput.from_ints(tokens[:-1]),
                            {"target_tokens": tokens[1:], "weights": [1.0] * 55})
    c, grads_c = _step(client, [long], "cross_entropy")
    assert c.metrics["memory/recompute:max"] == 1
    monkeypatch.undo()
    d, grads_d = _step(client, [long], "cross_entropy")
    assert d.metrics["memory/recompute:max"] == 0
    _assert_same(d, grads_d, c, grads_c)


def test_a_custom_loss_over_several_micro_batches_equals_one_piece(tiny_model):
    whole = _client(tiny_model)
    split = _client(tiny_model, tokens_per_microbatch=30)
    items = rl_batch(whole.engine.vocab_size, seed=5, groups=3, samples=3, prompt_len=12)
    datums = to_datums(items, "cross_entropy", [[0.0] * it["n"] for it in items])

    def loss_fn(data, logprobs):  # not a sum of per-datum terms: needs all logprobs at once
        flat = torch.cat(logprobs)
        return -(flat.mean() + flat.std()), {"n": float(len(flat))}

    outs = []
    for client in (whole, split):
        client.engine.zero_grad()
        out = client.forward_backward_custom(datums, loss_fn).result()
        outs.append((out, lora_grads(client.engine.model)))
    (a, grads_a), (b, grads_b) = outs
    assert a.metrics["memory/microbatches:sum"] == 1 and b.metrics["memory/microbatches:sum"] > 1
    assert b.metrics["custom_loss:sum"] == pytest.approx(a.metrics["custom_loss:sum"], rel=1e-5)
    _assert_same(a, grads_a, b, grads_b)


def test_bad_memory_settings_are_refused_naming_the_field():
    with pytest.raises(mint.InvalidInputError, match="recompute"):
        LearnerSettings(recompute="sometimes")  # type: ignore[arg-type]
    with pytest.raises(mint.InvalidInputError, match="activation_memory"):
        LearnerSettings(activation_memory=1000)
    with pytest.raises(mint.InvalidInputError, match="tokens_per_microbatch"):
        LearnerSettings(tokens_per_microbatch=0)


# ------------------------------------------------------------------------------------------------
# a real architecture's shape, in a process of its own (its peak RSS is the step's alone)

_STEP_IN_A_FRESH_PROCESS = """
import json, sys
import mint_rl as mint
from mint_rl import types
from mint_rl.process_memory import current_rss, peak_rss
from helpers import rl_step_data
settings = mint.LearnerSettings(activation_memory=int(sys.argv[2]))
client = mint.ServiceClient(learner_settings=settings).create_lora_training_client(
    sys.argv[1], rank=16, seed=0)
data = rl_step_data(client.engine.vocab_size, groups=1, samples=2, tokens=256, prompt=32)
client.forward(data[:1], "ppo").result()  # touches every weight (they load lazily), keeps nothing
loaded = current_rss()
out = client.forward_backward(data, "ppo").result()
client.optim_step(types.AdamParams(learning_rate=1e-5)).result()
print("RESULT " + json.dumps({"loaded": loaded, "peak": peak_rss(), "metrics": out.metrics,
      "cost": client.engine.activation_cost.per_position(False)}))
"""


@pytest.mark.slow
def test_a_real_shape_trains_within_the_weights_plus_its_activation_budget(tmp_path):
    from mint_rl.model_shapes import prepare_random_model

    model = prepare_random_model("qwen3-0.6b")
    budget = 512 * MiB  # ~90 positions of this shape without recompute: a 2 x 256 batch is split
    script = tmp_path / "step.py"
    script.write_text(_STEP_IN_A_FRESH_PROCESS)
    done = subprocess.run([sys.executable, str(script), str(model), str(budget)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    metrics = result["metrics"]
    assert metrics["memory/microbatches:sum"] > 1
    assert metrics["memory/budget_gib:max"] * (1 << 30) == pytest.approx(budget, rel=1e-6)
    # What one micro-batch keeps (measured) fits the budget ...
    assert metrics["memory/microbatch_tokens:max"] * result["cost"] <= budget * 1.05
    # ... and the step's peak is the loaded model plus that budget, with room for what the
    # estimate leaves out (activation gradients in flight, the LM head's chunk, the allocator).
    # (In one micro-batch, as before, its 480 positions would keep ~3 GiB at ~6.4 MiB each.)
    assert result["peak"] - result["loaded"] < 2.5 * budget, result


def test_memory_goes_back_to_the_system_only_after_the_learner_idles(monkeypatch):
    from mint_rl.learner import memory

    released = []
    monkeypatch.setattr(memory, "give_back_memory", lambda device: released.append(device))
    idle = memory.IdleRelease(torch.device("cpu"), after_s=0.2)
    idle.idle()
    idle.busy()  # a call came in: nothing is released under it
    time.sleep(0.4)
    assert released == []
    idle.idle()
    time.sleep(0.4)
    assert released == [torch.device("cpu")]


def test_counting_saved_bytes_keeps_no_graph_alive():
    """A graph whose backward never runs (an error, nothing trained) must be freed as usual."""
    import gc
    import weakref

    from mint_rl.learner.memory import SavedBytes

    x = torch.randn(1000, requires_grad=True)
    saved = SavedBytes(iter([]))
    with saved.counting():
        y = x.exp()  # saves its own result
    assert saved.bytes == 4000
    alive = weakref.ref(y)
    del y
    gc.collect()
    assert alive() is None

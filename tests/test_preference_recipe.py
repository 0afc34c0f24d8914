"""DPO: the loss and its gradient against the formula written out independently, the loss
through forward_backward_custom on a real learner, the pair data and the HH-RLHF loader, and a
short `mint-rl run preference`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import mint_rl as mint
from mint_rl import types
from mint_rl.cli import main
from mint_rl.errors import InvalidInputError
from mint_rl.learner.checkpoint import resolve_path
from mint_rl.recipes import preference
from mint_rl.recipes.preference import (
    PairSet,
    dpo_loss,
    dpo_loss_fn,
    preference_metrics,
    sequence_logprobs,
)
from mint_rl.recipes.preference_data import generated_pairs, load_pairs, parse_transcript
from mint_rl.run.metrics import read_metrics


def _formula(pc: float, pr: float, rc: float, rr: float, beta: float) -> float:
    """-log sigmoid(beta * ((pc - rc) - (pr - rr))), written as log(1 + exp(-m))."""
    m = beta * ((pc - rc) - (pr - rr))
    return math.log1p(math.exp(-m))


def test_dpo_loss_and_gradient_match_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=g, dtype=torch.float64) * 3 for _ in range(4))
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    beta = 0.3
    loss = dpo_loss(pc, pr, rc, rr, beta)
    rows = list(zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True))
    expected = sum(_formula(*row, beta) for row in rows) / len(rows)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    # d/dpc log(1 + exp(-m)) / n = -beta * sigmoid(-m) / n, and the opposite for pr.
    for i, (a, b, c, d) in enumerate(rows):
        m = beta * ((a - c) - (b - d))
        slope = beta / (1 + math.exp(m)) / len(rows)
        assert pc.grad is not None and pr.grad is not None
        assert float(pc.grad[i]) == pytest.approx(-slope, rel=1e-9)
        assert float(pr.grad[i]) == pytest.approx(slope, rel=1e-9)


def test_metrics_count_ties_as_half() -> None:
    zeros = torch.zeros(4)
    chosen = torch.tensor([1.0, -1.0, 0.0, 2.0])
    metrics = preference_metrics(chosen, zeros, zeros, zeros, beta=0.5)
    assert metrics["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert metrics["margin"] == pytest.approx(0.5 * 2.0 / 4)
    assert metrics["policy_accuracy"] == metrics["accuracy"]
    at_start = preference_metrics(chosen, zeros, chosen, zeros, beta=0.5)
    assert at_start["accuracy"] == 0.5 and at_start["loss"] == pytest.approx(math.log(2))


def _datum(tokens: list[int], weights: list[float]) -> types.Datum:
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights})


def test_the_custom_loss_sums_only_the_replys_tokens() -> None:
    data = [_datum([1, 2, 3, 4], [0.0, 1.0, 1.0]), _datum([1, 2, 5, 6], [0.0, 1.0, 1.0])]
    logprobs = [torch.tensor([-9.0, -1.0, -2.0], requires_grad=True),
                torch.tensor([-9.0, -3.0, -1.0], requires_grad=True)]
    reference = torch.tensor([-3.5, -3.5])
    loss, metrics = dpo_loss_fn(reference, beta=0.2)(data, logprobs)
    assert float(loss.detach()) == pytest.approx(_formula(-3.0, -4.0, -3.5, -3.5, 0.2))
    loss.backward()
    for lp in logprobs:
        assert lp.grad is not None and float(lp.grad[0]) == 0.0  # the prompt's token
    assert metrics["dpo/accuracy"] == 1.0


def test_dpo_through_forward_backward_custom_starts_at_log_2_and_learns(tiny_model) -> None:
    """The adapter starts at zero, so `forward` before training is the reference and the first
    loss is exactly log 2; a few steps on the same pairs raise their margin."""
    client = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=0)
    pairs = PairSet.build(client.get_tokenizer(), generated_pairs(4, seed=0), max_length=128)
    reference = sequence_logprobs(client, pairs.datums)
    losses = []
    for _ in range(4):
        out = client.forward_backward_custom(pairs.datums, dpo_loss_fn(reference, 0.5)).result()
        losses.append(out.metrics["dpo/loss"])
        client.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert losses[-1] < losses[0]
    policy = sequence_logprobs(client, pairs.datums)
    client.close()
    after = preference_metrics(policy[0::2], policy[1::2], reference[0::2], reference[1::2], 0.5)
    assert after["margin"] > 0


def test_generated_pairs_are_deterministic_and_the_chosen_reply_is_right() -> None:
    pairs = generated_pairs(40, seed=1)
    assert pairs == generated_pairs(40, seed=1) and pairs != generated_pairs(40, seed=2)
    assert {p.kind for p in pairs} == {"arithmetic", "fact", "one_word", "helpful"}
    for p in pairs:
        assert p.chosen != p.rejected
        if p.kind == "arithmetic":
            question = p.prompt[0]["content"].removeprefix("What is ").removesuffix("?")
            a, b = map(int, question.split(" + "))
            assert p.chosen == f"{a} + {b} = {a + b}."


_HH_ROWS = [
    {"chosen": "\n\nHuman: Name a color.\n\nAssistant: Blue.",
     "rejected": "\n\nHuman: Name a color.\n\nAssistant: No."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Well.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Go "
                 "away."},
    {"chosen": "\n\nHuman: A\n\nAssistant: B",  # differs before the last reply: skipped
     "rejected": "\n\nHuman: C\n\nAssistant: D"},
]


def test_hh_rlhf_loader_reads_a_local_file_of_its_format(tmp_path: Path) -> None:
    import datasets

    jsonl = tmp_path / "hh.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _HH_ROWS))
    parquet = tmp_path / "hh.parquet"
    datasets.Dataset.from_list(_HH_ROWS).to_parquet(str(parquet))
    for path in (jsonl, parquet):
        pairs = load_pairs(str(path), n=0, seed=0)
        assert [(p.chosen, p.rejected) for p in pairs] == [("Blue.", "No."), ("Well.",
                                                                              "Go away.")]
        assert pairs[1].prompt == [{"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": "Hello!"},
                                   {"role": "user", "content": "How are you?"}]
    assert parse_transcript("\n\nHuman: x\n\nAssistant:") == [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]


def test_the_loader_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="'generated', 'hh-rlhf'"):
        load_pairs("some/dataset", n=0, seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: y", "rejected": 3}) + "\n")
    with pytest.raises(InvalidInputError) as info:
        load_pairs(str(bad), n=0, seed=0)
    assert info.value.field == "data row 0['rejected']"
    with pytest.raises(InvalidInputError) as info:
        preference.Config(beta=0.0)
    assert info.value.field == "beta"


@pytest.mark.slow
def test_mint_rl_run_preference_raises_the_held_out_margin(tmp_path: Path) -> None:
    """Three DPO steps on the default model: held-out accuracy 0.5 and margin 0 at step 0 (the
    policy is the reference), margin up at the end; samples.jsonl's rewards are the run's;
    `evaluate_checkpoint` measures the final checkpoint as the run did."""
    run_dir = tmp_path / "run"
    held_out = 4
    assert main(["run", "preference", "--log-dir", str(run_dir), "--steps", "3",
                 "--batch-size", "4", "--pairs", "40", "--held-out", str(held_out),
                 "--eval-every", "0", "--samples", str(held_out),
                 # One thread: on cores that other jobs keep busy, two are many times slower.
                 "--learner-threads", "1"]) == 0
    for name in ("config.json", "metrics.jsonl", "curves.png", "samples.jsonl",
                 "checkpoints/step-000003.json"):
        assert (run_dir / name).is_file(), name
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(math.isfinite(v) for r in rows for v in r.values())
    first, last = rows[0], rows[-1]
    assert first["eval/accuracy"] == 0.5 and first["eval/margin"] == 0.0
    assert last["eval/margin"] > 0 and "train/loss" in rows[2]

    samples = read_metrics(run_dir / "samples.jsonl")
    for step in (0, 3):
        shown = [s for s in samples if s["step"] == step]
        assert len(shown) == held_out and all(s["policy_version"] == step for s in shown)
        margin = sum(s["reward"] - s["rejected_reward"] for s in shown) / held_out
        assert margin == pytest.approx(rows[0 if step == 0 else -1]["eval/margin"], abs=1e-5)

    manifest = json.loads((run_dir / "checkpoints" / "step-000003.json").read_text())
    config = preference.Config(**json.loads((run_dir / "config.json").read_text()))
    measured = preference.evaluate_checkpoint(config, resolve_path(manifest["state_path"]))
    for key in ("eval/accuracy", "eval/margin"):
        assert measured[key] == pytest.approx(last[key], abs=1e-4)

"""Supervised fine-tuning: the chat renderer (prompt weighted 0, replies 1, tokens exactly the
template's), the generated data and the no_robots loader, and a short `mint-rl run sft`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mint_rl.cli import main
from mint_rl.errors import InvalidInputError
from mint_rl.learner.checkpoint import resolve_path
from mint_rl.recipes import sft
from mint_rl.recipes.sft_data import generated_conversations, load_conversations
from mint_rl.run.metrics import read_metrics
from mint_rl.run.offline_run import batch_indices
from mint_rl.supervised import build_supervised_example

TWO_TURNS = [{"role": "user", "content": "Convert 3 hours to minutes."},
             {"role": "assistant", "content": "3 hours = 180 minutes."},
             {"role": "user", "content": "Reverse the order of these words: red sky"},
             {"role": "assistant", "content": "sky red"}]


@pytest.fixture(scope="module")
def tokenizer(default_model: Path):
    return AutoTokenizer.from_pretrained(default_model)


def _trained_text(tokenizer, datum) -> str:
    targets = datum.loss_fn_inputs["target_tokens"].tolist()
    weights = datum.loss_fn_inputs["weights"].tolist()
    return tokenizer.decode([t for t, w in zip(targets, weights, strict=True) if w == 1.0])


def test_the_datum_is_the_templates_tokens_with_only_the_reply_weighted(tokenizer) -> None:
    messages = TWO_TURNS[:2]
    datum = build_supervised_example(tokenizer, messages)
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    targets = datum.loss_fn_inputs["target_tokens"].tolist()
    assert datum.model_input.to_ints() + targets[-1:] == full
    assert targets == full[1:]
    weights = datum.loss_fn_inputs["weights"].tolist()
    assert set(weights) == {0.0, 1.0}
    # The prompt (system prompt, user turn, assistant header) is context; the reply and its
    # end-of-turn token are trained, the newline the template puts after it is not.
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
    assert weights[: len(prompt) - 1] == [0.0] * (len(prompt) - 1)
    assert _trained_text(tokenizer, datum) == "3 hours = 180 minutes.<|im_end|>"
    assert weights[-1] == 0.0 and tokenizer.decode(targets[-1:]) == "\n"


def test_train_on_picks_every_reply_or_the_last(tokenizer) -> None:
    every = build_supervised_example(tokenizer, TWO_TURNS, train_on="all_assistant")
    last = build_supervised_example(tokenizer, TWO_TURNS, train_on="last_assistant")
    assert every.model_input.to_ints() == last.model_input.to_ints()
    assert _trained_text(tokenizer, every) == ("3 hours = 180 minutes.<|im_end|>"
                                               "sky red<|im_end|>")
    assert _trained_text(tokenizer, last) == "sky red<|im_end|>"


def test_the_renderer_follows_another_template(tiny_model: Path) -> None:
    """The tiny model's template has no system prompt: the spans move with it."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    datum = build_supervised_example(tokenizer, TWO_TURNS, train_on="all_assistant")
    full = tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, return_dict=False)
    assert datum.model_input.to_ints() + datum.loss_fn_inputs["target_tokens"].tolist()[-1:] \
        == full
    assert _trained_text(tokenizer, datum) == ("3 hours = 180 minutes.<|im_end|>"
                                               "sky red<|im_end|>")


def test_max_length_cuts_the_tokens_and_their_weights(tokenizer) -> None:
    whole = build_supervised_example(tokenizer, TWO_TURNS, train_on="all_assistant")
    n = whole.model_input.length + 1
    cut = build_supervised_example(tokenizer, TWO_TURNS, train_on="all_assistant",
                                   max_length=n - 4)
    assert cut.model_input.length == n - 5
    assert cut.loss_fn_inputs["weights"].tolist() == \
        whole.loss_fn_inputs["weights"].tolist()[: n - 5]
    prompt_only = build_supervised_example(tokenizer, TWO_TURNS[:2], max_length=10)
    assert sum(prompt_only.loss_fn_inputs["weights"].tolist()) == 0


@pytest.mark.parametrize("messages, kwargs, field", [
    ([{"role": "user", "content": "hi"}], {}, "messages"),
    ([], {}, "messages"),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], {}, "messages[0]['content']"),
    ([{"role": "assistant", "content": "x"}], {}, "messages[0]"),
    (TWO_TURNS, {"train_on": "everything"}, "train_on"),
    (TWO_TURNS, {"max_length": 1}, "max_length"),
])
def test_bad_conversations_are_refused_naming_the_field(tokenizer, messages, kwargs,
                                                        field) -> None:
    with pytest.raises(InvalidInputError) as info:
        build_supervised_example(tokenizer, messages, **kwargs)
    assert info.value.field == field


def test_a_template_that_rewrites_earlier_turns_is_refused(tiny_model: Path) -> None:
    """Here the rendering starts with the number of messages, so no prefix of the conversation
    renders as a prefix of its tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = "{{ messages | length }}" + tokenizer.chat_template
    with pytest.raises(InvalidInputError, match="cannot be located"):
        build_supervised_example(tokenizer, TWO_TURNS)


def test_generated_conversations_are_deterministic_and_correct() -> None:
    first = generated_conversations(200, seed=3)
    assert first == generated_conversations(200, seed=3)
    assert first != generated_conversations(200, seed=4)
    assert any(len(c) == 4 for c in first) and any(len(c) == 2 for c in first)
    conversions = [(q["content"], a["content"]) for c in first
                   for q, a in zip(c[0::2], c[1::2], strict=True)
                   if q["content"].startswith("Convert 5 hours")]
    for _, answer in conversions:
        assert answer == "5 hours = 300 minutes."


def test_the_split_holds_out_conversations_never_trained_on() -> None:
    config = sft.Config(conversations=100, held_out=10)
    train, held_out = sft.split(config)
    assert len(train) == 90 and len(held_out) == 10
    assert not any(c in train for c in held_out)
    assert sft.split(config) == (train, held_out)


def test_batches_cover_every_example_once_per_pass() -> None:
    n, batch = 10, 4
    positions = [i for step in range(5) for i in batch_indices(step, batch, n, seed=0)]
    assert sorted(positions[:10]) == list(range(10)) and sorted(positions[10:20]) == \
        list(range(10))
    assert positions[:10] != positions[10:20]  # each pass in its own order
    assert batch_indices(3, batch, n, seed=0) == batch_indices(3, batch, n, seed=0)


_NO_ROBOTS_ROWS = [
    {"prompt": "Name a fruit.", "prompt_id": "a1", "category": "Brainstorm",
     "messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a fruit."},
                  {"role": "assistant", "content": "Apple."}]},
    {"prompt": "Say hi.", "prompt_id": "a2", "category": "Chat",
     "messages": [{"role": "user", "content": "Say hi."},
                  {"role": "assistant", "content": "Hi!"}]},
]


def test_no_robots_loader_reads_a_local_file_of_its_format(tmp_path: Path, tokenizer) -> None:
    import datasets

    jsonl = tmp_path / "no_robots.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _NO_ROBOTS_ROWS))
    parquet = tmp_path / "no_robots.parquet"
    datasets.Dataset.from_list(_NO_ROBOTS_ROWS).to_parquet(str(parquet))
    for path in (jsonl, parquet):
        conversations = load_conversations(str(path), n=0, seed=0)
        assert conversations == [r["messages"] for r in _NO_ROBOTS_ROWS]
    datum = build_supervised_example(tokenizer, conversations[0])
    assert _trained_text(tokenizer, datum) == "Apple.<|im_end|>"


def test_the_loader_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="'generated', 'no_robots'"):
        load_conversations("some/dataset", n=0, seed=0)
    with pytest.raises(InvalidInputError, match="no such file"):
        load_conversations(str(tmp_path / "missing.jsonl"), n=0, seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": []}) + "\n")
    with pytest.raises(InvalidInputError) as info:
        load_conversations(str(bad), n=0, seed=0)
    assert info.value.field == "data row 0['messages']"


def test_bad_options_are_refused_naming_the_field() -> None:
    for kwargs, field in [({"steps": 0}, "steps"), ({"held_out": 0}, "held_out"),
                          ({"lr": 0.0}, "lr"), ({"learner_threads": 0}, "learner_threads")]:
        with pytest.raises(InvalidInputError) as info:
            sft.Config(**kwargs)
        assert info.value.field == field


@pytest.mark.slow
def test_mint_rl_run_sft_trains_checkpoints_and_evaluates(tmp_path: Path) -> None:
    """Three steps on the default model: a run folder like an RL run's, held-out loss down,
    a second run of the same command leaves the finished run as it is, `evaluate_checkpoint`
    measures the final checkpoint as the run did, and a longer run in the same folder resumes
    from it."""
    run_dir = tmp_path / "run"
    argv = ["run", "sft", "--log-dir", str(run_dir), "--steps", "3", "--batch-size", "4",
            "--conversations", "40", "--held-out", "4", "--eval-every", "2", "--no-generate",
            # One thread: on cores that other jobs keep busy, two are many times slower.
            "--learner-threads", "1"]
    assert main(argv) == 0
    for name in ("config.json", "metrics.jsonl", "curves.png", "checkpoints/step-000003.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(math.isfinite(v) for r in rows for v in r.values())
    evals = {r["step"]: r["eval/loss"] for r in rows if "eval/loss" in r}
    assert list(evals) == [0, 2, 3] and evals[3] < evals[0]

    manifest = json.loads((run_dir / "checkpoints" / "step-000003.json").read_text())
    adapter = resolve_path(manifest["state_path"])
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {
        p.name for p in adapter.iterdir()}
    before = (run_dir / "metrics.jsonl").read_text()
    assert main(argv) == 0  # finished: nothing retrained, nothing overwritten
    assert (run_dir / "metrics.jsonl").read_text() == before

    config = sft.Config(**json.loads((run_dir / "config.json").read_text()))
    measured = sft.evaluate_checkpoint(config, adapter)
    assert measured["eval/loss"] == pytest.approx(evals[3], abs=1e-4)

    # One step more in the same folder: it resumes from the step-3 checkpoint.
    assert main([*argv[:argv.index("--steps") + 1], "4", *argv[argv.index("--steps") + 2:]]) == 0
    resumed = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]
    assert resumed[:3] == rows[:3]
    assert resumed[3]["eval/loss"] == pytest.approx(evals[3], abs=1e-4)


@pytest.mark.slow
def test_greedy_answers_go_to_samples_jsonl_and_match_the_metric(tmp_path: Path,
                                                                 sampler_engine) -> None:
    """With --generate the held-out prompts are answered through vLLM (the session's engine):
    samples.jsonl holds them with the policy version that answered, and their exact-match
    rewards average to the step's eval/exact_match."""
    run_dir = tmp_path / "run"
    held_out = 3
    assert main(["run", "sft", "--log-dir", str(run_dir), "--steps", "1", "--batch-size", "2",
                 "--conversations", "20", "--held-out", str(held_out), "--generate", "--samples",
                 str(held_out), "--sample-tokens", "16", "--learner-threads", "1"]) == 0
    rows = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}
    samples = read_metrics(run_dir / "samples.jsonl")
    _, expected = sft.split(sft.Config(conversations=20, held_out=held_out))
    for step in (0, 1):
        shown = [s for s in samples if s["step"] == step]
        assert len(shown) == held_out
        assert all(s["policy_version"] == step and s["completion"] for s in shown)
        assert [s["reference"] for s in shown] == [c[-1]["content"] for c in expected]
        assert sum(s["reward"] for s in shown) / held_out == rows[step]["eval/exact_match"]

"""The math recipe: the grader, the word-problem generator and its levels, the held-out split,
the GSM8K loader on local files, and a short run of `mint-rl run math` (then `mint-rl eval`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mint_rl.cli import main
from mint_rl.errors import InvalidInputError
from mint_rl.recipes.gsm8k import final_answer, load_gsm8k
from mint_rl.recipes.math import Config, MathDataset, load_problems, score
from mint_rl.recipes.math_grader import extract_answer, grade, last_boxed, normalize
from mint_rl.recipes.math_problems import generate, held_out, parse_levels, problem_at

# ------------------------------------------------------------------------------------------------
# The grader


@pytest.mark.parametrize(("reply", "answer"), [
    ("3 + 4 = 7. \\boxed{7}", "7"),
    ("\\boxed{ 1,200 }", "1200"),
    ("so \\boxed{-3}.", "-3"),
    ("\\boxed{5.0}", "5"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("first \\boxed{2}, then \\boxed{8}", "8"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("#### $1,234.50", "1234.5"),
    ("#### 18 apples", "18"),
    ("The answer is 12.", "12"),
    ("She has 2,500 coins left", "2500"),
    ("+6", "6"),
])
def test_the_grader_accepts_right_answers_in_each_format(reply: str, answer: str) -> None:
    assert grade(reply, answer)


@pytest.mark.parametrize(("reply", "answer"), [
    ("\\boxed{8}", "7"),
    ("\\boxed{7.5}", "7"),
    ("#### -3", "3"),
    ("I think 3 + 4 = 7, no wait, 8", "7"),   # the last number is the answer
    ("\\boxed{7} is wrong, it is \\boxed{6}", "7"),
    ("I do not know.", "7"),
    ("", "7"),
    ("\\boxed{}", "7"),
])
def test_the_grader_rejects_wrong_or_missing_answers(reply: str, answer: str) -> None:
    assert not grade(reply, answer)


def test_extraction_prefers_boxed_then_hashes_then_the_last_number() -> None:
    found = extract_answer("#### 3 and \\boxed{4} then 5")
    assert found is not None and (found.text, found.source) == ("4", "boxed")
    found = extract_answer("3 then 4\n#### 5\nthat is all, 6")
    assert found is not None and (found.text, found.source) == ("5", "hashes")
    found = extract_answer("3 then -4")
    assert found is not None and (found.text, found.source) == ("-4", "last_number")
    assert extract_answer("no number here") is None


def test_boxed_braces_nest_and_an_unclosed_box_falls_back() -> None:
    assert last_boxed("\\boxed{a{b{c}}d} tail") == "a{b{c}}d"
    assert last_boxed("\\boxed{12") is None
    found = extract_answer("it is 11 or \\boxed{12")
    assert found is not None and (found.text, found.source) == ("12", "last_number")


def test_normalize_writes_numbers_canonically() -> None:
    assert [normalize(x) for x in ("1,000,000", " 42 ", "007", "-0", "3.50", "12.", "$5")] == [
        "1000000", "42", "7", "0", "3.5", "12", "5"]
    assert normalize("x + 1") == "x+1"  # not a number: compared as text without spaces


def test_reward_is_correctness_plus_a_format_bonus_for_boxed_answers() -> None:
    assert score("3 + 2 = 5. \\boxed{5}", "5", 0.1) == (pytest.approx(1.1), True)
    assert score("3 + 2 = 5.", "5", 0.1) == (1.0, True)
    assert score("\\boxed{4}", "5", 0.1) == (pytest.approx(0.1), False)
    assert score("four", "5", 0.1) == (0.0, False)


# ------------------------------------------------------------------------------------------------
# The generator


def solve(question: str) -> tuple[int, int, bool]:
    """An independent reading of a generated question: (answer, operations, has a
    multiplication). Checks every intermediate count stays positive."""
    sentences = re.split(r"(?<=[.?])\s+", question)
    boxes = re.match(r"\w+ has (\d+) boxes with (\d+) \w+ in each box\.", sentences[0])
    if boxes:
        count, operations = int(boxes[1]) * int(boxes[2]), 1
    else:
        start = re.match(r"\w+ has (\d+) \w+\.", sentences[0])
        assert start, sentences[0]
        count, operations = int(start[1]), 0
    for sentence in sentences[1:-1]:
        number = re.search(r"\d+", sentence)
        assert number, sentence
        n = int(number[0])
        gains = re.search(r"(buys|finds) \d+ more|gives \w+ \d+ more", sentence)
        losses = re.search(r"gives \d+ to|loses \d+|sells \d+", sentence)
        assert bool(gains) != bool(losses), sentence
        count += n if gains else -n
        assert count > 0, question
        operations += 1
    assert sentences[-1].startswith("How many")
    return count, operations, bool(boxes)


@pytest.mark.parametrize(("level", "operations", "multiplies"),
                         [(1, 1, False), (2, 2, False), (3, 3, True)])
def test_each_level_has_its_number_of_operations_and_the_right_answer(
        level: int, operations: int, multiplies: bool) -> None:
    for i in range(200):
        p = problem_at(7, "train", i, (level,))
        assert p.level == level
        assert solve(p.question) == (int(p.answer), operations, multiplies), p


def test_problems_are_a_function_of_seed_stream_and_index() -> None:
    first = [problem_at(0, "train", i, (1, 2, 3)) for i in range(30)]
    assert first == [problem_at(0, "train", i, (1, 2, 3)) for i in range(30)]
    assert first != [problem_at(1, "train", i, (1, 2, 3)) for i in range(30)]
    assert first != [problem_at(0, "eval", i, (1, 2, 3)) for i in range(30)]
    assert [p.level for p in first[:6]] == [1, 2, 3, 1, 2, 3]  # each level an equal share


def test_bad_levels_are_rejected_naming_the_field() -> None:
    assert parse_levels("3, 1,1") == (1, 3)
    for bad in ("", "4", "1,x", "0"):
        with pytest.raises(InvalidInputError, match="levels") as e:
            parse_levels(bad)
        assert e.value.field == "levels"
    with pytest.raises(InvalidInputError, match="levels"):
        Config(levels="1,5")
    with pytest.raises(InvalidInputError, match="format_bonus"):
        Config(format_bonus=1.5)
    import random
    with pytest.raises(InvalidInputError, match="level"):
        generate(random.Random(0), 4)


def test_training_never_draws_a_held_out_problem_and_batches_repeat() -> None:
    cfg = Config(levels="1,2,3", eval_problems=300, groups_per_batch=16, steps=50)
    problems = load_problems(cfg)
    assert problems.held_out == held_out(cfg.seed, 300, (1, 2, 3))
    assert len({p.question for p in problems.held_out}) == 300
    dataset = MathDataset(problems, None, cfg)
    drawn = [g.problem for i in range(len(dataset)) for g in dataset.get_batch(i)]
    assert not {p.question for p in drawn} & {p.question for p in problems.held_out}
    assert {p.level for p in drawn} == {1, 2, 3}
    assert [g.problem for g in dataset.get_batch(3)] == [g.problem for g in
                                                        MathDataset(problems, None,
                                                                    cfg).get_batch(3)]


# ------------------------------------------------------------------------------------------------
# GSM8K from local files in the hub's format

GSM8K_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
               "<<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A shop sells 1,000 pens a day for 2 days. How many pens?",
     "answer": "1000 * 2 = <<1000*2=2000>>2000\n#### 2,000"},
]
GSM8K_TEST = [
    {"question": "It is 5 degrees and drops by 8. What is the temperature?",
     "answer": "5 - 8 = <<5-8=-3>>-3\n#### -3"},
]


def write_gsm8k(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", GSM8K_TRAIN), ("test", GSM8K_TEST)):
        path = folder / f"{split}{suffix}"
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.Table.from_pylist(rows), path)
    return folder


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_gsm8k_loads_from_local_files_with_the_answer_after_the_hashes(
        tmp_path: Path, suffix: str) -> None:
    train_set, test_set = load_gsm8k(write_gsm8k(tmp_path / "gsm8k", suffix))
    assert [p.question for p in train_set] == [r["question"] for r in GSM8K_TRAIN]
    assert [p.answer for p in train_set] == ["72", "2,000"]
    assert [p.answer for p in test_set] == ["-3"]
    assert grade("\\boxed{2000}", train_set[1].answer)
    assert grade("It drops to -3.", test_set[0].answer)


def test_the_gsm8k_option_trains_on_train_and_holds_out_test(tmp_path: Path) -> None:
    cfg = Config(dataset="gsm8k", gsm8k_path=str(write_gsm8k(tmp_path / "g", ".jsonl")),
                 eval_problems=5, groups_per_batch=4)
    problems = load_problems(cfg)
    assert [p.answer for p in problems.held_out] == ["-3"]
    drawn = {g.problem.question for i in range(5) for g in
             MathDataset(problems, None, cfg).get_batch(i)}
    assert drawn <= {r["question"] for r in GSM8K_TRAIN}


def test_bad_gsm8k_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="gsm8k_path"):
        load_gsm8k(tmp_path / "missing")
    folder = write_gsm8k(tmp_path / "g", ".jsonl")
    (folder / "test.jsonl").unlink()
    with pytest.raises(InvalidInputError, match="no test.jsonl"):
        load_gsm8k(folder)
    with pytest.raises(InvalidInputError, match="answer"):
        final_answer("no final answer here")


# ------------------------------------------------------------------------------------------------
# The run, on the real stack


@pytest.mark.slow
def test_math_runs_from_the_command_line_and_evaluates_its_checkpoint(
        sampler_engine, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = main(["run", "math", "--log-dir", str(run), "--steps", "2", "--levels", "1,2",
                 "--groups-per-batch", "2", "--group-size", "3", "--max-tokens", "10",
                 "--eval-every", "0", "--eval-problems", "4", "--eval-samples", "1",
                 "--save-every", "2"])
    assert code == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert all(0.0 <= r["reward/mean"] <= 1.1 for r in rows)
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["tag"] for s in samples} <= {"level1", "level2"}
    for s in samples:  # the reward logged is the grader's, for the problem in the prompt
        problem = s["prompt"].split("user\n")[-1].split("\nGive the final answer")[0]
        answer = str(solve(problem)[0])
        assert s["reward"] == pytest.approx(score(s["completion"], answer, 0.1)[0])
    assert json.loads((run / "config.json").read_text())["levels"] == "1,2"
    assert (run / "curves.png").exists()

    # The held-out evaluation, through the recipe's evaluate_checkpoint, on step 2's adapter.
    assert main(["eval", str(run)]) == 0
    (record,) = [json.loads(p.read_text()) for p in (run / "checkpoints").glob("eval-*.json")]
    assert record["recipe"] == "math" and record["step"] == 2
    metrics = record["metrics"]
    assert set(metrics) == {"eval/accuracy", "eval/accuracy/level1", "eval/accuracy/level2"}
    # 4 held-out problems, levels alternating, 1 sample each: every accuracy is a count / n.
    assert metrics["eval/accuracy"] * 4 == round(metrics["eval/accuracy"] * 4)
    assert metrics["eval/accuracy"] == pytest.approx(
        (metrics["eval/accuracy/level1"] + metrics["eval/accuracy/level2"]) / 2)

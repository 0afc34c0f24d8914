"""GSM8K (grade-school math word problems) as `Problem`s, from the hub or from local files.

    train, test = load_gsm8k()                # datasets.load_dataset("openai/gsm8k", "main")
    train, test = load_gsm8k("data/gsm8k")    # train.jsonl / test.jsonl (or .parquet) there

Each row has a `question` and an `answer` whose worked solution ends in "#### N"; the problem's
answer is N (normalised by the grader when compared). Read through `hub_data.load_rows`, which
imports the `datasets` package only when this option is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mint_rl.errors import InvalidInputError
from mint_rl.recipes.hub_data import is_local_file, load_rows
from mint_rl.recipes.math_problems import Problem

HUB_ID = "openai/gsm8k"
SPLITS = ("train", "test")


def load_gsm8k(source: str | Path | None = None) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems from the hub (`source` None) or a folder holding one file per
    split, named `train.*` and `test.*` (jsonl or parquet, GSM8K's columns)."""
    if source is None:
        rows = {s: load_rows(HUB_ID, s, name="main", field="dataset") for s in SPLITS}
    else:
        rows = {s: load_rows(str(_split_file(Path(source), s)), field="gsm8k_path")
                for s in SPLITS}
    return _problems(rows["train"], "train"), _problems(rows["test"], "test")


def final_answer(solution: str) -> str:
    """The text after the last "####" of a GSM8K solution."""
    head, sep, tail = solution.rpartition("####")
    if not sep or not tail.strip():
        raise InvalidInputError("answer", f"no '#### N' final answer in {solution[-80:]!r}")
    return tail.strip()


def _split_file(folder: Path, split: str) -> Path:
    """The local file of one split of a copy of GSM8K."""
    if not folder.is_dir():
        raise InvalidInputError("gsm8k_path", f"{folder} is not a folder")
    found = [p for p in sorted(folder.glob(f"{split}.*")) if is_local_file(str(p))]
    if not found:
        raise InvalidInputError("gsm8k_path", f"no {split}.jsonl or {split}.parquet in {folder}")
    return found[0]


def _problems(rows: list[dict[str, Any]], split: str) -> list[Problem]:
    missing = {"question", "answer"} - set(rows[0] if rows else ())
    if missing:
        raise InvalidInputError(f"gsm8k {split}", f"missing columns {sorted(missing)}")
    return [Problem(row["question"], final_answer(row["answer"])) for row in rows]

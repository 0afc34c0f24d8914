"""GSM8K (grade-school math word problems) as `Problem`s, from the hub or from local files.

    train, test = load_gsm8k()                # datasets.load_dataset("openai/gsm8k", "main")
    train, test = load_gsm8k("data/gsm8k")    # train.jsonl / test.jsonl (or .parquet) there

Each row has a `question` and an `answer` whose worked solution ends in "#### N"; the problem's
answer is N (normalised by the grader when compared). Needs the `datasets` package, which only
this option uses: it is imported here, not when the recipe loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mint_rl.errors import InvalidInputError
from mint_rl.recipes.math_problems import Problem

HUB_ID = "openai/gsm8k"
SPLITS = ("train", "test")
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_gsm8k(source: str | Path | None = None) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems from the hub (`source` None) or a folder holding one file per
    split, named `train.*` and `test.*` (jsonl or parquet, GSM8K's columns)."""
    try:
        import datasets
    except ImportError as e:
        raise InvalidInputError("dataset", "gsm8k needs the `datasets` package "
                                "(pip install datasets)") from e
    if source is None:
        loaded = datasets.load_dataset(HUB_ID, "main")
    else:
        builder, files = _local_files(Path(source))
        loaded = datasets.load_dataset(builder, data_files=files)
    return (_problems(loaded["train"], "train"), _problems(loaded["test"], "test"))


def final_answer(solution: str) -> str:
    """The text after the last "####" of a GSM8K solution."""
    head, sep, tail = solution.rpartition("####")
    if not sep or not tail.strip():
        raise InvalidInputError("answer", f"no '#### N' final answer in {solution[-80:]!r}")
    return tail.strip()


def _local_files(folder: Path) -> tuple[str, dict[str, str]]:
    """The `datasets` builder name and split -> file for a local copy of GSM8K."""
    if not folder.is_dir():
        raise InvalidInputError("gsm8k_path", f"{folder} is not a folder")
    files: dict[str, str] = {}
    builders: set[str] = set()
    for split in SPLITS:
        found = [p for p in sorted(folder.glob(f"{split}.*")) if p.suffix in FORMATS]
        if not found:
            raise InvalidInputError("gsm8k_path", f"no {split}.jsonl or {split}.parquet in "
                                                  f"{folder}")
        files[split] = str(found[0])
        builders.add(FORMATS[found[0].suffix])
    if len(builders) != 1:
        raise InvalidInputError("gsm8k_path", "train and test must have the same format")
    return builders.pop(), files


def _problems(rows: Any, split: str) -> list[Problem]:
    missing = {"question", "answer"} - set(rows.column_names)
    if missing:
        raise InvalidInputError(f"gsm8k {split}", f"missing columns {sorted(missing)}")
    return [Problem(row["question"], final_answer(row["answer"])) for row in rows]

"""Rows of a public dataset, from the Hugging Face hub or from a local file of the same format.

    load_rows("HuggingFaceH4/no_robots")        # the hub (needs the network)
    load_rows("my_copy.jsonl")                  # a local .jsonl / .json / .parquet file

Both go through `datasets.load_dataset`, so a local file is read exactly as the hub's copy is.
Nothing is downloaded unless a recipe's options name a hub dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mint_rl.errors import InvalidInputError

_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def is_local_file(source: str) -> bool:
    return Path(source).suffix in _LOCAL_FORMATS


def load_rows(source: str, split: str = "train", *, name: str | None = None,
              field: str = "data") -> list[dict[str, Any]]:
    """All rows of a hub dataset's `split` (of its config `name`), or of a local file (which has
    one split). `field` is the option errors name."""
    try:
        import datasets
    except ImportError:
        raise InvalidInputError(field, f"reading {source!r} needs the `datasets` package "
                                       "(pip install datasets)") from None
    if is_local_file(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise InvalidInputError(field, f"no such file: {path}")
        table = datasets.load_dataset(_LOCAL_FORMATS[path.suffix], data_files=str(path),
                                      split="train")
    else:
        table = datasets.load_dataset(source, name, split=split)
    return [dict(row) for row in table]

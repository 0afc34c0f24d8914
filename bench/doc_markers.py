"""Writes a bench's table into a doc between `<!-- NAME:start -->` and `<!-- NAME:end -->`,
so that re-running a bench updates its figures in place (appended when the markers are absent).
Imported by the bench scripts, which run as `python bench/<script>.py` (bench/ is on sys.path).
"""

from __future__ import annotations

from pathlib import Path


def replace_between_markers(path: Path, block: str, name: str = "bench") -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    if start not in text or end not in text:  # a new file, or one without the markers yet
        path.write_text(f"{text}{start}\n{block}\n{end}\n")
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")

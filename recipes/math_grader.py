"""Grading a math reply: extract the final answer, normalise it, compare it exactly.

    grade("... so she has \\boxed{1,200}.", "1200")   # True
    grade("#### 7", "7")                              # True
    grade("I think 3 + 4 = 8", "7")                   # False: the last number is 8

Where the answer is looked for, in order:

1. the last `\\boxed{...}` (braces may nest: `\\boxed{\\frac{1}{2}}` is `\\frac{1}{2}`);
2. the last "#### N" (GSM8K's format);
3. the last number in the reply. This fallback lets a model that answers "The answer is 8."
   be scored on its arithmetic while it has not learnt the format yet; a reply that shows its
   working and ends on some other number gets it wrong, as a person reading it would.

Normalising removes spaces, thousands separators, a leading "+", a trailing "." and "$", and
writes numbers canonically (`5.0` -> `5`, `-0` -> `0`, `007` -> `7`); anything that is not a
number is compared as the normalised text. The check is exact: `7.5` is not `7`.

Kept beside the recipe rather than in the library: which formats count as an answer is a choice
of the task (the prompt asks for one), not of the RL machinery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

AnswerFormat = Literal["boxed", "hashes", "last_number"]

_HASHES = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


@dataclass(frozen=True)
class Extracted:
    """The answer text found in a reply, and where it was found."""

    text: str
    source: AnswerFormat


def extract_answer(reply: str) -> Extracted | None:
    """The reply's final answer (see the module docstring for the order), or None."""
    boxed = last_boxed(reply)
    if boxed is not None:
        return Extracted(boxed, "boxed")
    hashes = [m.group(1).strip() for m in _HASHES.finditer(reply)]
    hashes = [h for h in hashes if h]
    if hashes:
        return Extracted(_leading_number(hashes[-1]), "hashes")
    numbers = _NUMBER.findall(reply)
    if numbers:
        return Extracted(numbers[-1], "last_number")
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, braces balanced; None if there is none (or it
    is never closed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    body = start + len("\\boxed{")
    for i in range(body, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[body:i].strip()
            depth -= 1
    return None


def normalize(answer: str) -> str:
    """Canonical text of an answer: numbers as plain integers or decimals, other text with
    spaces removed."""
    text = answer.strip().replace(" ", "").replace("$", "").rstrip(".")
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    try:
        value = Decimal(text.removeprefix("+"))
    except InvalidOperation:
        return text
    if not value.is_finite():
        return text
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def grade(reply: str, answer: str) -> bool:
    """Whether the reply's final answer equals `answer`, after normalising both."""
    found = extract_answer(reply)
    return found is not None and normalize(found.text) == normalize(answer)


def _leading_number(text: str) -> str:
    """"#### 18 apples" -> "18": GSM8K answers are numbers, trailing words are not part of it."""
    match = _NUMBER.match(text.replace(" ", "").replace("$", ""))
    return match.group() if match else text

"""Word problems with whole-number answers, generated from a seed, at three levels.

    level 1: one operation          "Maya has 7 shells. She finds 5 more. How many shells does
                                     Maya have now?"                                  -> 12
    level 2: two operations         "... She finds 5 more. Then she gives 3 to Leo. ..." -> 9
    level 3: three, one of them a   "Maya has 3 boxes with 4 shells in each box. She finds 5
             multiplication          more. Then she gives 2 to Leo. ..."               -> 15

Every intermediate count stays positive, so answers are whole numbers >= 0. A problem is a
deterministic function of the random generator it is drawn from: `problem_at(seed, stream, i)`
is the same problem on every machine and in every process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mint_rl.errors import InvalidInputError

LEVELS = (1, 2, 3)

# (name, pronoun): the subject of a problem; any other name may be the friend.
PEOPLE = [("Tom", "He"), ("Ann", "She"), ("Sara", "She"), ("Ben", "He"), ("Maya", "She"),
          ("Leo", "He"), ("Nina", "She"), ("Omar", "He")]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "coins", "shells"]
GAINS = ["{p} buys {n} more.", "{p} finds {n} more.", "{f} gives {o} {n} more."]
LOSSES = ["{p} gives {n} to {f}.", "{p} loses {n}.", "{p} sells {n}."]


@dataclass(frozen=True)
class Problem:
    """A question, its answer as text (GSM8K answers are text too) and its level (0: not
    generated, e.g. a GSM8K problem)."""

    question: str
    answer: str
    level: int = 0


def generate(rng: random.Random, level: int) -> Problem:
    """One problem of `level` (1, 2 or 3) drawn from `rng`."""
    if level not in LEVELS:
        raise InvalidInputError("level", f"must be one of {LEVELS}, got {level!r}")
    (name, pronoun), (friend, _) = rng.sample(PEOPLE, 2)
    items = rng.choice(ITEMS)
    if level == 3:
        boxes, per_box = rng.randint(2, 4), rng.randint(2, 5)
        count = boxes * per_box
        sentences = [f"{name} has {boxes} boxes with {per_box} {items} in each box."]
        events = 2
    else:
        count = rng.randint(2, 12)
        sentences = [f"{name} has {count} {items}."]
        events = level
    for i in range(events):
        subject = pronoun.lower() if i else pronoun
        count, sentence = _event(rng, count, subject, friend, name)
        sentences.append(f"Then {sentence}" if i else sentence)
    sentences.append(f"How many {items} does {name} have now?")
    return Problem(" ".join(sentences), str(count), level)


def _event(rng: random.Random, count: int, subject: str, friend: str,
           name: str) -> tuple[int, str]:
    """A gain or a loss applied to `count`: the new count and the sentence telling it. A loss
    always leaves at least one item, so the next event has something to act on."""
    if count > 1 and rng.random() < 0.5:
        n = rng.randint(1, min(count - 1, 8))
        template, count = rng.choice(LOSSES), count - n
    else:
        n = rng.randint(1, 8)
        template, count = rng.choice(GAINS), count + n
    # A friend who gives to the subject speaks of them by name, not by pronoun.
    return count, template.format(p=subject, n=n, f=friend, o=name)


def problem_at(seed: int, stream: str, index: int, levels: tuple[int, ...]) -> Problem:
    """The `index`-th problem of a named stream ("train", "eval"): its level cycles through
    `levels`, so each level gets an equal share."""
    rng = random.Random(f"{seed}-{stream}-{index}")
    return generate(rng, levels[index % len(levels)])


def held_out(seed: int, count: int, levels: tuple[int, ...]) -> list[Problem]:
    """`count` distinct problems never used for training (the eval stream)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    index = 0
    while len(problems) < count:
        p = problem_at(seed, "eval", index, levels)
        index += 1
        if p.question not in seen:
            seen.add(p.question)
            problems.append(p)
        if index > 100 * count:  # the level-1 space is large; this only guards a tiny one
            break
    return problems


def parse_levels(text: str) -> tuple[int, ...]:
    """"1,2" -> (1, 2); the `levels` option's value."""
    try:
        levels = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        levels = ()
    if not levels or any(level not in LEVELS for level in levels):
        raise InvalidInputError("levels", f"comma-separated levels out of {LEVELS}, got {text!r}")
    return levels

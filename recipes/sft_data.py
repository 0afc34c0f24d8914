"""Chat data for the sft recipe: conversations generated here, or HuggingFaceH4/no_robots.

The generated set ships with the project as code: conversations are a function of the seed, so
every run (and a resumed one) sees the same data with nothing to download. Four small tasks,
each answered in one fixed format the model does not use on its own, so learning shows in the
held-out loss within a few dozen steps and in the model's greedy replies:

    user: Convert 7 hours to minutes.                       assistant: 7 hours = 420 minutes.
    user: Reverse the order of these words: lamp river gold  assistant: gold river lamp
    user: Write these words in capital letters: quiet stone assistant: QUIET STONE
    user: Velor is a town in Karadun. ... Where is Velor?     assistant: Velor is in Karadun.

About a third of the conversations ask two things in two turns (so `train_on` matters).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mint_rl.errors import InvalidInputError
from mint_rl.recipes.hub_data import is_local_file, load_rows
from mint_rl.supervised import Message

Conversation = list[Message]
NO_ROBOTS = "HuggingFaceH4/no_robots"

WORDS = ("apple river stone cloud lamp garden window silver forest candle ocean paper "
         "mountain violet quiet gold bridge winter summer rabbit tiger yellow green orange "
         "castle pencil honey storm island mirror velvet copper meadow harbor lantern feather "
         "valley thunder marble cotton desert planet rocket shadow spring anchor").split()
UNITS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100),
         ("kilograms", "grams", 1000), ("hours", "minutes", 60), ("minutes", "seconds", 60),
         ("days", "hours", 24), ("weeks", "days", 7), ("liters", "milliliters", 1000)]
SYLLABLES = ("ka ra vel or dun mi zo ta len bri sa nor the qua fen lo ru dam ish ven").split()
KINDS = ("town", "city", "village", "port")


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _convert(rng: random.Random) -> tuple[str, str]:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 12)
    return f"Convert {n} {big} to {small}.", f"{n} {big} = {n * factor} {small}."


def _reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(3, 5))
    return (f"Reverse the order of these words: {' '.join(words)}",
            " ".join(reversed(words)))


def _capitals(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(2, 4))
    return (f"Write these words in capital letters: {' '.join(words)}",
            " ".join(words).upper())


def _entity(rng: random.Random) -> tuple[str, str]:
    place, region, year = _name(rng), _name(rng), rng.randint(1200, 1990)
    facts = f"{place} is a {rng.choice(KINDS)} in {region}. It was founded in {year}."
    if rng.random() < 0.5:
        return f"{facts} Where is {place}?", f"{place} is in {region}."
    return f"{facts} When was {place} founded?", f"{place} was founded in {year}."


TASKS: tuple[Callable[[random.Random], tuple[str, str]], ...] = (
    _convert, _reverse, _capitals, _entity)


def generated_conversations(n: int, seed: int) -> list[Conversation]:
    """`n` different conversations, a function of (n, seed) alone (no two alike, so a held-out
    one is never also a training one)."""
    rng = random.Random(f"sft-data-{seed}")
    conversations: list[Conversation] = []
    seen: set[tuple[str, ...]] = set()
    while len(conversations) < n:
        conversation: Conversation = []
        for _ in range(2 if rng.random() < 1 / 3 else 1):
            question, answer = rng.choice(TASKS)(rng)
            conversation += [{"role": "user", "content": question},
                             {"role": "assistant", "content": answer}]
        key = tuple(m["content"] for m in conversation)
        if key not in seen:
            seen.add(key)
            conversations.append(conversation)
    return conversations


def load_conversations(data: str, n: int, seed: int) -> list[Conversation]:
    """The conversations `--data` names: 'generated' (n of them), 'no_robots' (the hub's
    train split) or a local .jsonl/.json/.parquet file with a `messages` column (no_robots'
    format: a list of {"role", "content"} per row)."""
    if data == "generated":
        return generated_conversations(n, seed)
    if data == "no_robots":
        rows = load_rows(NO_ROBOTS, split="train")
    elif is_local_file(data):
        rows = load_rows(data)
    else:
        raise InvalidInputError("data", f"must be 'generated', 'no_robots' or a .jsonl/.json/"
                                        f".parquet file, got {data!r}")
    return [_messages(i, row) for i, row in enumerate(rows)]


def _messages(i: int, row: dict) -> Conversation:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInputError(f"data row {i}['messages']",
                                f"must be a non-empty list of messages, got {messages!r}")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]

"""Preference pairs for the preference recipe: generated here, or Anthropic/hh-rlhf.

A pair is a prompt (chat messages) and two replies, the preferred one (`chosen`) and the other
(`rejected`). The generated set ships with the project as code, a function of the seed. Four
kinds of prompt, where the chosen reply is the correct, helpful or requested one:

    arithmetic  What is 7 + 12?                chosen "7 + 12 = 19."   rejected "7 + 12 = 21."
    fact        Mira lives in Tolvan. Where does Mira live?
                                               chosen "Mira lives in Tolvan."
                                               rejected "Mira lives in Dorsk."  (another place)
    one_word    Answer with one word: what is the opposite of hot?
                                               chosen "Cold."  rejected a wrong word or a
                                               rambling sentence
    helpful     Can you help me boil an egg?   chosen a short instruction
                                               rejected a refusal

`--data hh-rlhf` reads Anthropic/hh-rlhf from the hub, `--data FILE.jsonl|.parquet` a local file
in its format: `chosen` and `rejected` are whole transcripts ("\\n\\nHuman: ...\\n\\nAssistant:
..."), the same conversation up to a different last assistant reply.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from mint_rl.errors import InvalidInputError
from mint_rl.recipes.hub_data import is_local_file, load_rows
from mint_rl.supervised import Message

HH_RLHF = "Anthropic/hh-rlhf"


@dataclass(frozen=True)
class Pair:
    prompt: list[Message]
    chosen: str
    rejected: str
    kind: str


SYLLABLES = "ka ra vel or dun mi zo ta len bri sa nor the qua fen lo ru dam ish ven".split()
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"),
             ("happy", "sad"), ("light", "dark"), ("open", "closed"), ("early", "late"),
             ("full", "empty"), ("hard", "soft"), ("wet", "dry"), ("old", "new"),
             ("rich", "poor"), ("strong", "weak"), ("loud", "quiet"), ("high", "low"),
             ("long", "short"), ("thick", "thin"), ("near", "far"), ("first", "last")]
TASKS = [("boil an egg", "put it in boiling water for about nine minutes"),
         ("water a plant", "pour water at its base until the soil is moist"),
         ("make tea", "pour hot water over a tea bag and wait three minutes"),
         ("tie a knot", "cross the ends, loop one under the other and pull tight"),
         ("clean a window", "spray it with glass cleaner and wipe it with a dry cloth"),
         ("sharpen a pencil", "turn it slowly inside a sharpener"),
         ("fold a shirt", "fold the sleeves back, then fold it in half"),
         ("plant a seed", "press it into moist soil about one centimeter deep"),
         ("save money", "put aside a fixed part of every payment"),
         ("fall asleep faster", "go to bed at the same time every night"),
         ("learn new words", "read every day and review the words you meet"),
         ("cool soup", "stir it and let it rest for a few minutes")]
REFUSALS = ["No. Figure it out yourself.", "I don't want to help with that.",
            "That is not my problem.", "Ask someone else."]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    wrong = a + b + rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if a + b + d >= 0])
    return f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", f"{a} + {b} = {wrong}."


def _fact(rng: random.Random) -> tuple[str, str, str]:
    person, place, other = _name(rng), _name(rng), _name(rng)
    while other == place:
        other = _name(rng)
    return (f"{person} lives in {place}. Where does {person} live?",
            f"{person} lives in {place}.", f"{person} lives in {other}.")


def _one_word(rng: random.Random) -> tuple[str, str, str]:
    word, opposite = rng.choice(OPPOSITES)
    if rng.random() < 0.5:
        word, opposite = opposite, word
    wrong = (f"{word.capitalize()}." if rng.random() < 0.5 else
             f"Well, that depends on what you mean, but most people would say {opposite}.")
    return (f"Answer with one word: what is the opposite of {word}?", f"{opposite.capitalize()}.",
            wrong)


def _helpful(rng: random.Random) -> tuple[str, str, str]:
    task, how = rng.choice(TASKS)
    return (f"Can you help me {task}?", f"Of course. To {task}, {how}.", rng.choice(REFUSALS))


KINDS: dict[str, Callable[[random.Random], tuple[str, str, str]]] = {
    "arithmetic": _arithmetic, "fact": _fact, "one_word": _one_word, "helpful": _helpful}


def generated_pairs(n: int, seed: int) -> list[Pair]:
    """`n` pairs, a function of (n, seed) alone; the kinds take turns."""
    rng = random.Random(f"preference-data-{seed}")
    kinds = list(KINDS)
    pairs = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        question, chosen, rejected = KINDS[kind](rng)
        pairs.append(Pair([{"role": "user", "content": question}], chosen, rejected, kind))
    return pairs


def load_pairs(data: str, n: int, seed: int) -> list[Pair]:
    """The pairs `--data` names: 'generated' (n of them), 'hh-rlhf' (the hub's train split) or
    a local .jsonl/.json/.parquet file in its format. Rows whose two transcripts do not share
    the conversation before the last reply are skipped."""
    if data == "generated":
        return generated_pairs(n, seed)
    if data == "hh-rlhf":
        rows = load_rows(HH_RLHF, split="train")
    elif is_local_file(data):
        rows = load_rows(data)
    else:
        raise InvalidInputError("data", f"must be 'generated', 'hh-rlhf' or a .jsonl/.json/"
                                        f".parquet file, got {data!r}")
    pairs = [p for i, row in enumerate(rows) if (p := hh_pair(i, row)) is not None]
    if not pairs:
        raise InvalidInputError("data", f"{data!r} holds no usable pair")
    return pairs


def hh_pair(i: int, row: dict) -> Pair | None:
    """A pair from an HH-RLHF row; None when chosen and rejected differ before the last reply."""
    for key in ("chosen", "rejected"):
        if not isinstance(row.get(key), str):
            raise InvalidInputError(f"data row {i}[{key!r}]",
                                    f"must be a transcript string, got {row.get(key)!r}")
    chosen, rejected = parse_transcript(row["chosen"]), parse_transcript(row["rejected"])
    if (min(len(chosen), len(rejected)) < 2 or chosen[-1]["role"] != "assistant"
            or rejected[-1]["role"] != "assistant" or chosen[:-1] != rejected[:-1]):
        return None
    return Pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], "hh-rlhf")


_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def parse_transcript(text: str) -> list[Message]:
    """"\\n\\nHuman: hi\\n\\nAssistant: hello" -> [{"role": "user", ...}, {"role": "assistant",
    ...}]; text before the first turn marker is dropped."""
    parts = _TURN.split(text)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[speaker], "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2], strict=True)]

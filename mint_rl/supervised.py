"""Chat conversations as supervised Datums: prompt tokens weighted 0, assistant tokens 1.

    datum = build_supervised_example(tokenizer, messages, train_on="all_assistant")
    client.forward_backward([datum], "cross_entropy")

The tokens are exactly what the tokenizer's chat template renders for the whole conversation.
Where each assistant reply sits in them is found by rendering prefixes of the conversation: the
messages before the reply with the generation prompt (where the reply starts) and the messages
through the reply (where it ends). Each prefix must be a token prefix of the whole rendering; a
template that renders earlier turns differently once later ones follow (some drop past
reasoning, for instance) breaks that, and is refused with an error rather than trained on
misplaced weights.

A reply is trained up to and including the end-of-turn token (the tokenizer's eos token), which
is what teaches the model to stop; what the template adds after it (a newline) is never sampled
and gets weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mint_rl.errors import InvalidInputError
from mint_rl.sampler.chat import chat_prompt
from mint_rl.types import Datum, ModelInput

TrainOn = Literal["last_assistant", "all_assistant"]
Message = dict[str, str]


def build_supervised_example(
    tokenizer: Any,
    messages: Sequence[Message],
    train_on: TrainOn = "last_assistant",
    max_length: int | None = None,
) -> Datum:
    """A cross_entropy Datum of the rendered conversation.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: [{"role": ..., "content": ...}, ...] with at least one assistant message.
        train_on: weight 1 on the last assistant reply only, or on every assistant reply.
        max_length: keep at most this many tokens (the Datum is one shorter: inputs and
            targets are the tokens shifted by one). A reply cut off by it is trained on the
            part that is kept; a conversation whose trained replies are all cut off gives a
            Datum with every weight 0 (callers building datasets drop those).

    Raises:
        InvalidInputError: malformed messages, no assistant message, an unknown `train_on`, a
            `max_length` below 2, or a chat template whose prefixes do not render as token
            prefixes of the whole conversation.
    """
    if train_on not in ("last_assistant", "all_assistant"):
        raise InvalidInputError("train_on", f"must be 'last_assistant' or 'all_assistant', "
                                            f"got {train_on!r}")
    if max_length is not None and max_length < 2:
        raise InvalidInputError("max_length", f"must be >= 2 (or None), got {max_length}")
    tokens, spans = render_with_assistant_spans(tokenizer, messages)
    if train_on == "last_assistant":
        spans = spans[-1:]
    weights = [0.0] * len(tokens)
    for start, end in spans:
        weights[start:end] = [1.0] * (end - start)
    if max_length is not None:
        tokens, weights = tokens[:max_length], weights[:max_length]
    return Datum(model_input=ModelInput.from_ints(tokens[:-1]),
                 loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights[1:]})


def render_with_assistant_spans(
    tokenizer: Any, messages: Sequence[Message]
) -> tuple[list[int], list[tuple[int, int]]]:
    """The whole conversation's tokens and, per assistant message, its [start, end) in them."""
    _check_messages(messages)
    full = render(tokenizer, messages)
    eos = getattr(tokenizer, "eos_token_id", None)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise InvalidInputError("messages[0]", "an assistant reply needs a message before "
                                                   "it (a prompt)")
        start = len(_prefix_of(full, render(tokenizer, messages[:i], generation_prompt=True),
                               f"messages[:{i}] with the generation prompt"))
        end = len(_prefix_of(full, render(tokenizer, messages[: i + 1]), f"messages[:{i + 1}]"))
        if eos is not None and eos in full[start:end]:
            end = full.index(eos, start) + 1  # the template's text after end-of-turn: weight 0
        spans.append((start, end))
    return full, spans


def render(tokenizer: Any, messages: Sequence[Message], *,
           generation_prompt: bool = False) -> list[int]:
    """The chat template's tokens for `messages` (with the assistant's header after them when
    `generation_prompt`)."""
    return chat_prompt(tokenizer, messages, add_generation_prompt=generation_prompt).to_ints()


def _prefix_of(full: list[int], prefix: list[int], what: str) -> list[int]:
    if full[: len(prefix)] != prefix:
        at = next((j for j, (a, b) in enumerate(zip(full, prefix, strict=False)) if a != b),
                  min(len(full), len(prefix)))
        raise InvalidInputError(
            "messages", f"the chat template renders {what} differently from the start of the "
                        f"whole conversation (first difference at token {at}), so the "
                        "assistant's tokens cannot be located; this template is not supported")
    return prefix


def _check_messages(messages: Sequence[Message]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidInputError("messages", "must be a non-empty list of {'role', 'content'} "
                                            "dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidInputError(f"messages[{i}]", f"must be a dict, got {type(m).__name__}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                raise InvalidInputError(f"messages[{i}][{key!r}]",
                                        f"must be a string, got {m.get(key)!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise InvalidInputError("messages", "has no assistant message to train on")

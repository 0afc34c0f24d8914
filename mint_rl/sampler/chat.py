"""Chat-template prompts: messages -> ModelInput, through the model's own tokenizer template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mint_rl.errors import InvalidInputError
from mint_rl.types import ModelInput


def chat_prompt(
    tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
) -> ModelInput:
    """Renders `messages` ([{"role": ..., "content": ...}]) with the tokenizer's chat template."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InvalidInputError(f"messages[{i}]", "must be a dict with 'role' and 'content'")
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInputError("tokenizer", "has no chat template")
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True,
        return_dict=False,
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return ModelInput.from_ints([int(t) for t in ids])

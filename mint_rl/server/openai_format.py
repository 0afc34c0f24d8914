"""OpenAI request fields in, OpenAI replies out, for the /v1 routes (openai.py): no I/O here.

A field the engine cannot honour is refused by name (400). Fields that ask for nothing (e.g.
`stream: false`, `presence_penalty: 0`) are accepted, and a few bookkeeping ones (`user`,
`metadata`, ...) are ignored.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any

from mint_rl.server.sampling import MAX_SAMPLES
from mint_rl.types import SamplingParams

COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the context end
MAX_TOP_LOGPROBS = 20  # OpenAI's limit, and the engine's default max_logprobs

_COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs"}
CHAT_FIELDS = frozenset(_COMMON | {"messages", "max_completion_tokens", "top_logprobs"})
COMPLETION_FIELDS = frozenset(_COMMON | {"prompt"})

# Accepted only with a value that asks for nothing (or null); anything else is refused by name.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "stream": (False,), "stream_options": (), "tools": ([],), "tool_choice": ("none",),
    "functions": ([],), "function_call": ("none",), "response_format": ({"type": "text"},),
    "logit_bias": ({},), "presence_penalty": (0,), "frequency_penalty": (0,), "echo": (False,),
    "best_of": (1,), "suffix": ("",), "audio": (), "modalities": (["text"],), "prediction": (),
    "reasoning_effort": (), "web_search_options": (),
}
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class OpenAIError(Exception):
    """A request answered with an OpenAI error body; `param` names the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type_ = (
            status, message, param, code, type_)


def _bad(field: str, problem: str, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, f"{field}: {problem}", field, code)


@dataclass
class Sample:
    tokens: list[int]
    logprobs: list[float]
    stop_reason: str  # "stop" or "length", as the sampler reports it
    alternatives: list[list[tuple[int, float]]] | None = None  # top-k (token, logprob) per token


# ------------------------------------------------------------------------------------ requests


def refuse_unsupported(body: dict[str, Any], fields: frozenset[str]) -> None:
    for name, value in body.items():
        if name in fields or name in _IGNORED or value is None:
            continue
        if name == "stream" and value not in _NEUTRAL[name]:
            raise _bad(name, "streaming is not supported by this server; send stream: false",
                       "unsupported_parameter")
        if name in _NEUTRAL:
            if value not in _NEUTRAL[name]:
                shown = f" (got {value!r})" if isinstance(value, int | float | str) else ""
                raise _bad(name, f"is not supported by this server{shown}",
                           "unsupported_parameter")
            continue
        raise _bad(name, "unrecognized request argument", "unsupported_parameter")


def messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages as {role, content} with text content, ready for the chat template."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "must be a non-empty list of {role, content} objects")
    return [_message(f"messages[{i}]", m) for i, m in enumerate(raw)]


def _message(field: str, m: Any) -> dict[str, str]:
    if not isinstance(m, dict):
        raise _bad(field, "must be an object with role and content")
    extra = sorted(set(m) - {"role", "content", "name"})
    if extra:
        raise _bad(f"{field}.{extra[0]}", "is not supported (text messages only)")
    role = m.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _bad(f"{field}.role", f"must be one of {sorted(_ROLES)}, got {role!r}")
    return {"role": _ROLES[role], "content": _content(f"{field}.content", m.get("content"))}


def _content(field: str, content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(field, "must be a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        if (not isinstance(part, dict) or part.get("type") != "text"
                or not isinstance(part.get("text"), str)):
            raise _bad(f"{field}[{j}]", "only text parts {type: text, text} are supported")
        texts.append(part["text"])
    return "".join(texts)


def completion_prompts(body: dict[str, Any], tokenizer: Any) -> list[list[int]]:
    """`prompt` as token lists: a string, a list of token ids, or a list of either."""
    raw = body.get("prompt")
    if isinstance(raw, list) and raw and all(_is_int(t) for t in raw):
        raw = [raw]  # one prompt of token ids
    elif not isinstance(raw, list):
        raw = [raw]
    if not raw:
        raise _bad("prompt", "must not be empty")
    prompts = []
    for i, item in enumerate(raw):
        field = "prompt" if len(raw) == 1 else f"prompt[{i}]"
        if isinstance(item, str):
            tokens = list(tokenizer.encode(item))
        elif isinstance(item, list) and all(_is_int(t) for t in item):
            tokens = item
            if any(not 0 <= t < len(tokenizer) for t in tokens):
                raise _bad(field, f"token ids must be in [0, {len(tokenizer)})")
        else:
            raise _bad(field, "must be a string or a list of token ids")
        if not tokens:
            raise _bad(field, "is empty")
        prompts.append(tokens)
    return prompts


def sampling_params(body: dict[str, Any], default_max_tokens: int | None) -> SamplingParams:
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    return SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else default_max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),  # 0 is refused by SamplingParams
        seed=_integer(body, "seed"), stop=_stop(body.get("stop")))


def choice_count(body: dict[str, Any], prompts: int) -> int:
    n = _integer(body, "n", 1, MAX_SAMPLES)
    n = 1 if n is None else n
    if n * prompts > MAX_SAMPLES:
        raise _bad("n", f"{n} choices for each of {prompts} prompts: at most {MAX_SAMPLES} in all")
    return n


def chat_top_logprobs(body: dict[str, Any]) -> int | None:
    """None: no logprobs; else how many alternatives per token (`logprobs` + `top_logprobs`)."""
    want = body.get("logprobs")
    if want is not None and not isinstance(want, bool):
        raise _bad("logprobs", f"must be true or false, got {want!r}")
    k = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if k is not None and not want:
        raise _bad("top_logprobs", "needs logprobs: true")
    return (k or 0) if want else None


def completion_top_logprobs(body: dict[str, Any]) -> int | None:
    """None: no logprobs; else how many alternatives per token (`logprobs: k`)."""
    return _integer(body, "logprobs", 0, MAX_TOP_LOGPROBS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(body: dict[str, Any], name: str, lo: int | None = None,
             hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" in [{lo}, {hi if hi is not None else '...'}]" if lo is not None else ""
        raise _bad(name, f"must be an integer{bounds}, got {value!r}")
    return value


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _bad(name, f"must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _stop(stop: Any) -> list[str] | None:
    if stop is None or stop == []:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _bad("stop", "must be a non-empty string or a list of them")
    return stops


# ------------------------------------------------------------------------------------ replies


def chat_reply(model: str, tokenizer: Any, samples: list[Sample], prompt_tokens: int,
               params: SamplingParams, *, with_logprobs: bool) -> dict[str, Any]:
    choices = [{
        "index": i,
        "message": {"role": "assistant", "content": _text(tokenizer, s.tokens, params)},
        "logprobs": _chat_logprobs(tokenizer, s) if with_logprobs else None,
        "finish_reason": _finish_reason(s),
    } for i, s in enumerate(samples)]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": _usage(prompt_tokens, samples), "system_fingerprint": None}


def completion_reply(model: str, tokenizer: Any, per_prompt: list[list[Sample]],
                     prompt_tokens: int, params: SamplingParams, *,
                     with_logprobs: bool) -> dict[str, Any]:
    samples = [s for group in per_prompt for s in group]  # prompt-major, as OpenAI orders them
    choices = [{
        "index": i, "text": _text(tokenizer, s.tokens, params),
        "logprobs": _completion_logprobs(tokenizer, s) if with_logprobs else None,
        "finish_reason": _finish_reason(s),
    } for i, s in enumerate(samples)]
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": _usage(prompt_tokens, samples)}


def model_card(model_id: str, *, created: int, parent: str | None) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "mint-rl",
            "root": parent or model_id, "parent": parent}


def _text(tokenizer: Any, tokens: list[int], params: SamplingParams) -> str:
    """The reply text: special tokens (EOS) left out, cut before a stop string, as OpenAI
    does (the tokens, their logprobs and the usage still count everything sampled)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    ends = [i for s in params.stop_strings() if (i := text.find(s)) >= 0]
    return text[:min(ends)] if ends else text


def _finish_reason(sample: Sample) -> str:
    return "length" if sample.stop_reason == "length" else "stop"


def _usage(prompt_tokens: int, samples: list[Sample]) -> dict[str, int]:
    completion = sum(len(s.tokens) for s in samples)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _piece(tokenizer: Any, token: int) -> str:
    return tokenizer.decode([token])


def _chat_entry(piece: str, logprob: float) -> dict[str, Any]:
    return {"token": piece, "logprob": logprob, "bytes": list(piece.encode())}


def _chat_logprobs(tokenizer: Any, sample: Sample) -> dict[str, Any]:
    content = []
    for j, (token, logprob) in enumerate(zip(sample.tokens, sample.logprobs, strict=True)):
        top = sample.alternatives[j] if sample.alternatives else []
        content.append({**_chat_entry(_piece(tokenizer, token), logprob),
                        "top_logprobs": [_chat_entry(_piece(tokenizer, t), lp) for t, lp in top]})
    return {"content": content, "refusal": None}


def _completion_logprobs(tokenizer: Any, sample: Sample) -> dict[str, Any]:
    pieces = [_piece(tokenizer, t) for t in sample.tokens]
    top = None
    if sample.alternatives is not None:
        top = [{_piece(tokenizer, t): lp for t, lp in row} for row in sample.alternatives]
    return {"tokens": pieces, "token_logprobs": sample.logprobs, "top_logprobs": top,
            "text_offset": list(itertools.accumulate(map(len, pieces), initial=0))[:len(pieces)]}

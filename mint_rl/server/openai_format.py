"""OpenAI request fields in, OpenAI replies out, for the /v1 routes (openai.py): no I/O here.

A field the engine cannot honour is refused by name (400). Fields that ask for nothing (e.g.
`presence_penalty: 0`) are accepted, and a few bookkeeping ones (`user`, `metadata`, ...) are
ignored.

Streamed replies are the same answers cut into OpenAI's chunks (`chat.completion.chunk`, or
`text_completion` pieces), sent as server-sent events `data: {...}` ending with `data: [DONE]`.

Tools go through the model's chat template (`apply_chat_template(tools=...)`). Tool calls are read
back out of the reply in the Hermes format (`<tool_call>{"name", "arguments"}</tool_call>`, the
one of Qwen 2.5/3 and Hermes models); a template that renders no tools, or tool calls in another
format, is refused with a 400 on `tools` rather than answered with calls nobody parses.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from mint_rl.sampler import chat_prompt
from mint_rl.server.sampling import MAX_SAMPLES
from mint_rl.types import SamplingParams

COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the context end
MAX_TOP_LOGPROBS = 20  # OpenAI's limit, and the engine's default max_logprobs

_COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs",
           "stream", "stream_options"}
CHAT_FIELDS = frozenset(_COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools",
                                   "tool_choice"})
COMPLETION_FIELDS = frozenset(_COMMON | {"prompt"})

# Accepted only with a value that asks for nothing (or null); anything else is refused by name.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "tools": ([],), "tool_choice": ("none",),
    "functions": ([],), "function_call": ("none",), "response_format": ({"type": "text"},),
    "logit_bias": ({},), "presence_penalty": (0,), "frequency_penalty": (0,), "echo": (False,),
    "best_of": (1,), "suffix": ("",), "audio": (), "modalities": (["text"],), "prediction": (),
    "reasoning_effort": (), "web_search_options": (),
}
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}
_STREAM_OPTIONS = ("include_usage", "include_obfuscation")  # the second asks for padding only

# A tool the template is asked to render, to learn whether it renders tools at all.
_PROBE_TOOL = {"type": "function", "function": {
    "name": "mint_rl_probe_tool", "description": "probe",
    "parameters": {"type": "object", "properties": {}}}}
HERMES = "hermes"
_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


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
        if name in _NEUTRAL:
            if value not in _NEUTRAL[name]:
                shown = f" (got {value!r})" if isinstance(value, int | float | str) else ""
                raise _bad(name, f"is not supported by this server{shown}",
                           "unsupported_parameter")
            continue
        raise _bad(name, "unrecognized request argument", "unsupported_parameter")


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages as the chat template takes them: {role, content} with text content;
    an assistant's tool calls with their arguments as objects, a tool's answer with its id."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "must be a non-empty list of {role, content} objects")
    return [_message(f"messages[{i}]", m) for i, m in enumerate(raw)]


def _message(field: str, m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise _bad(field, "must be an object with role and content")
    role = m.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _bad(f"{field}.role", f"must be one of {sorted(_ROLES)}, got {role!r}")
    known = {"role", "content", "name"} | {"assistant": {"tool_calls"},
                                           "tool": {"tool_call_id"}}.get(role, set())
    # null fields are what a client's own copy of an earlier reply carries (refusal, audio, ...)
    extra = sorted(k for k in set(m) - known if m[k] is not None)
    if extra:
        raise _bad(f"{field}.{extra[0]}", "is not supported (text messages and tool calls only)")
    out: dict[str, Any] = {"role": _ROLES[role]}
    if role == "assistant" and m.get("tool_calls"):
        out["tool_calls"] = _tool_calls(f"{field}.tool_calls", m["tool_calls"])
        out["content"] = "" if m.get("content") is None else _content(f"{field}.content",
                                                                         m["content"])
        return out
    out["content"] = _content(f"{field}.content", m.get("content"))
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _bad(f"{field}.tool_call_id", "a tool message needs the id of the call it "
                                                "answers")
        out["tool_call_id"] = call_id
    return out


def _tool_calls(field: str, calls: Any) -> list[dict[str, Any]]:
    """An assistant's earlier tool calls, arguments parsed: chat templates write them out as
    JSON objects (a string would come out quoted twice)."""
    if not isinstance(calls, list):
        raise _bad(field, "must be a list of {id, type: function, function: {name, arguments}}")
    out = []
    for j, call in enumerate(calls):
        here = f"{field}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(call, dict) or call.get("type", "function") != "function"
                or not isinstance(function, dict)):
            raise _bad(here, "must be {id, type: function, function: {name, arguments}}")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not name:
            raise _bad(f"{here}.function.name", "must be a non-empty string")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad(f"{here}.function.arguments", "must be a JSON object, as a string")
        out.append({"id": str(call.get("id") or ""), "type": "function",
                    "function": {"name": name, "arguments": parsed}})
    return out


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


def streaming(body: dict[str, Any]) -> bool | None:
    """None: one JSON reply. Else the reply is streamed, and True asks for a last chunk with the
    usage (`stream_options.include_usage`)."""
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", f"must be true or false, got {stream!r}")
    if not stream:
        if options is not None:
            raise _bad("stream_options", "is only allowed with stream: true")
        return None
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _bad("stream_options", "must be an object such as {include_usage: true}")
    for key, value in options.items():
        if key not in _STREAM_OPTIONS:
            raise _bad(f"stream_options.{key}", "unrecognized stream option",
                       "unsupported_parameter")
        if value is not None and not isinstance(value, bool):
            raise _bad(f"stream_options.{key}", f"must be true or false, got {value!r}")
    return bool(options.get("include_usage"))


def tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The function tools the model may call, as the chat template takes them; None where it
    may call none (no tools, or `tool_choice: none`). The engine cannot force a call (no
    constrained decoding), so `tool_choice` `required` or a named function is refused."""
    raw, choice = body.get("tools"), body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none"):
        raise _bad("tool_choice", "only auto and none are supported (this server cannot force "
                                  "a tool call)", "unsupported_parameter")
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise _bad("tools", "must be a list of {type: function, function: {name, ...}}")
    checked = [_tool(f"tools[{i}]", t) for i, t in enumerate(raw)]
    return None if choice == "none" else checked


def _tool(field: str, tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise _bad(f"{field}.type", "only function tools are supported")
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not (
            function["name"]):
        raise _bad(f"{field}.function.name", "must be a non-empty string")
    if not isinstance(function.get("parameters", {}), dict):
        raise _bad(f"{field}.function.parameters", "must be a JSON schema object")
    return {"type": "function", "function": function}


def _uses_tools(message: dict[str, Any]) -> bool:
    return message["role"] == "tool" or "tool_calls" in message


def tool_format(tokenizer: Any) -> str | None:
    """How the chat template writes tool calls: HERMES, another format (its name unknown: "other"),
    or None where the template renders no tools at all (it ignores `tools`, as SmolLM2's does)."""
    try:
        text = _render(tokenizer, [{"role": "user", "content": "x"}], [_PROBE_TOOL],
                       tokenize=False)
    except OpenAIError:
        return None
    if _PROBE_TOOL["function"]["name"] not in text:
        return None
    return HERMES if "<tool_call>" in text or "<tool_call>" in str(tokenizer.chat_template) \
        else "other"


def check_tools(tokenizer: Any, tools: list[dict[str, Any]] | None,
                messages: list[dict[str, Any]]) -> None:
    """Refuses tools, and tool turns in the messages, that the chat template would drop, and
    tools whose calls the server could not read back out of the reply."""
    field = "tools" if tools else next(
        (f"messages[{i}].role" for i, m in enumerate(messages) if _uses_tools(m)), None)
    if field is None:
        return
    found = tool_format(tokenizer)
    if found is None:
        raise _bad(field, "this model's chat template has no tool format (it renders no tools), "
                          "so the model cannot be given tools; describe them in a message "
                          "instead, or serve a model whose template formats tools",
                   "unsupported_parameter")
    if tools and found != HERMES:
        raise _bad("tools", "this model's chat template writes tool calls in a format the server "
                            "cannot read back (it reads Hermes <tool_call> JSON only)",
                   "unsupported_parameter")


def chat_tokens(tokenizer: Any, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None) -> list[int]:
    """The prompt: `messages` (and `tools`) through the model's chat template."""
    if tools is None and not any(_uses_tools(m) for m in messages):
        return chat_prompt(tokenizer, messages).to_ints()
    return _render(tokenizer, messages, tools, tokenize=True)


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
            *, tokenize: bool) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        raise _bad("messages", "this model has no chat template; use /v1/completions")
    try:
        out = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                            tokenize=tokenize, return_dict=False)
    except TemplateError as e:  # the template's own checks (roles must alternate, ...)
        raise _bad("messages", f"the model's chat template refused them: {e}") from None
    if not tokenize:
        return out
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return [int(t) for t in out]


def hermes_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool calls) of a reply in the Hermes format. A reply whose `<tool_call>` blocks
    are not all {"name", "arguments"} JSON stays plain text, as written: half a call is no call."""
    calls = []
    for block in _HERMES_CALL.finditer(text):
        try:
            call = json.loads(block.group(1))
        except ValueError:
            return text, []
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return text, []
        arguments = call.get("arguments", call.get("parameters", {}))
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": call["name"], "arguments": arguments
                                   if isinstance(arguments, str) else json.dumps(arguments)}})
    if not calls:
        return text, []
    return _HERMES_CALL.sub("", text).strip() or None, calls


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
               params: SamplingParams, *, with_logprobs: bool, tools: bool) -> dict[str, Any]:
    """The chat.completion body; `tools`: tool calls are read out of the replies."""
    choices = []
    for i, s in enumerate(samples):
        answer = _chat_answer(tokenizer, s, params, with_logprobs, tools)
        message: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.tool_calls:
            message["tool_calls"] = answer.tool_calls
        choices.append({"index": i, "message": message, "logprobs": answer.logprobs,
                        "finish_reason": answer.finish_reason})
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": _usage(prompt_tokens, samples), "system_fingerprint": None}


def chat_chunks(model: str, tokenizer: Any, samples: list[Sample], prompt_tokens: int,
                params: SamplingParams, *, with_logprobs: bool, tools: bool,
                include_usage: bool) -> list[dict[str, Any]]:
    """The same answers as `chat_reply`, as the chunks of a stream: per choice its role, its
    text with the logprobs, its tool calls, its finish_reason; then the usage if asked for."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": None,
            **({"usage": None} if include_usage else {})}

    def chunk(index: int, delta: dict[str, Any], logprobs: Any = None,
              finish_reason: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                     "finish_reason": finish_reason}]}

    chunks = []
    for i, s in enumerate(samples):
        answer = _chat_answer(tokenizer, s, params, with_logprobs, tools)
        chunks.append(chunk(i, {"role": "assistant", "content": ""}))
        if answer.content or answer.logprobs:
            chunks.append(chunk(i, {"content": answer.content or ""}, answer.logprobs))
        if answer.tool_calls:
            chunks.append(chunk(i, {"tool_calls": [
                {"index": j, **call} for j, call in enumerate(answer.tool_calls)]}))
        chunks.append(chunk(i, {}, finish_reason=answer.finish_reason))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": _usage(prompt_tokens, samples)})
    return chunks


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


def completion_chunks(model: str, tokenizer: Any, per_prompt: list[list[Sample]],
                      prompt_tokens: int, params: SamplingParams, *, with_logprobs: bool,
                      include_usage: bool) -> list[dict[str, Any]]:
    """The same answers as `completion_reply`, as the chunks of a stream: per choice its text
    with the logprobs, then its finish_reason; then the usage if asked for."""
    reply = completion_reply(model, tokenizer, per_prompt, prompt_tokens, params,
                             with_logprobs=with_logprobs)
    head = {k: reply[k] for k in ("id", "object", "created", "model")}
    head.update({"usage": None} if include_usage else {})
    chunks = []
    for choice in reply["choices"]:
        piece = {"index": choice["index"], "text": choice["text"], "logprobs": choice["logprobs"],
                 "finish_reason": None}
        if piece["text"] or piece["logprobs"]:
            chunks.append({**head, "choices": [piece]})
        chunks.append({**head, "choices": [{**piece, "text": "", "logprobs": None,
                                            "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": reply["usage"]})
    return chunks


def server_sent_events(chunks: list[dict[str, Any]]) -> list[str]:
    """The chunks as OpenAI streams them: one `data:` event each, then `data: [DONE]`."""
    return [f"data: {json.dumps(c, ensure_ascii=False, allow_nan=False)}\n\n"
            for c in chunks] + ["data: [DONE]\n\n"]


def model_card(model_id: str, *, created: int, parent: str | None) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "mint-rl",
            "root": parent or model_id, "parent": parent}


def _text(tokenizer: Any, tokens: list[int], params: SamplingParams) -> str:
    """The reply text: special tokens (EOS) left out, cut before a stop string, as OpenAI
    does (the tokens, their logprobs and the usage still count everything sampled)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    ends = [i for s in params.stop_strings() if (i := text.find(s)) >= 0]
    return text[:min(ends)] if ends else text


@dataclass
class _ChatAnswer:
    content: str | None
    tool_calls: list[dict[str, Any]]
    logprobs: dict[str, Any] | None
    finish_reason: str


def _chat_answer(tokenizer: Any, sample: Sample, params: SamplingParams, with_logprobs: bool,
                 tools: bool) -> _ChatAnswer:
    text = _text(tokenizer, sample.tokens, params)
    content, calls = hermes_tool_calls(text) if tools else (text, [])
    finish = "tool_calls" if calls else _finish_reason(sample)
    return _ChatAnswer(content, calls, _chat_logprobs(tokenizer, sample) if with_logprobs
                       else None, finish)


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

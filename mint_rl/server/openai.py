"""An OpenAI-compatible endpoint: `/v1/chat/completions`, `/v1/completions` and `/v1/models`.

Any OpenAI client can sample the checkpoints the server holds. The `model` is a sampler
checkpoint's `tinker://<run>/sampler_weights/<name>` path (mapped into the storage like every
other tinker path) or a base model's name as /v1/models lists it. Sampling runs on mint_rl's
SamplingClient, on the same vLLM engine as the Tinker routes. Chat prompts go through the model
tokenizer's chat template, with the request's tools where the template has a tool format.

Model names never show where the server keeps its files: a base model given as a local folder is
listed by what it holds (the default model's id, a hub cache's repo id) or its folder's name.

Streaming (`stream: true`) sends the finished answer as server-sent events: the SamplingClient
returns whole samples (its vLLM requests report only their final output, and go through the
weight-sync and version-stamping layers as one call), so token-by-token streaming would mean a
second, incremental path through the sampler. Generating first also means every error, the
engine's included, is still an OpenAI error body with its status, never a broken stream.

What the engine cannot do (penalties, forced tool calls, ...) is refused with an OpenAI error body
`{"error": {"message", "type", "param", "code"}}` naming the field, never silently ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from mint_rl.errors import InvalidInputError, ModelNotAvailableError, NotFoundError
from mint_rl.models import DEFAULT_MODEL, mint_home
from mint_rl.sampler import SamplingClient
from mint_rl.server import openai_format as fmt
from mint_rl.server import paths
from mint_rl.server.errors import USER_ERRORS, message, openai_error_body
from mint_rl.server.openai_format import OpenAIError
from mint_rl.server.state import ServerState
from mint_rl.types import ModelInput, SamplingParams

log = logging.getLogger(__name__)

PREFIX = "/v1"
SAMPLER_KIND = "sampler_weights"  # the only checkpoints the endpoint serves
# A name that is no path: a hub id (`org/name`), or a bare name a client gave.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_HUB_CACHE = re.compile(r"models--(.+?)--(.+)")  # huggingface_hub's cache folder of a repo


def router(state: ServerState) -> APIRouter:
    api = APIRouter()
    models = ModelResolver(state)

    @api.get("/models")
    async def list_models() -> Response:  # reads the storage: off the event loop
        return await _answer(
            lambda: asyncio.get_running_loop().run_in_executor(state.pool, models.listing))

    @api.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _answer(lambda: _chat(models, request))

    @api.post("/completions")
    async def completions(request: Request) -> Response:
        return await _answer(lambda: _completion(models, request))

    return api


async def _answer(produce: Callable[[], Awaitable[dict[str, Any] | Response]]) -> Response:
    """The reply (a JSON body, or a stream), or the OpenAI error body for whatever went wrong
    (tracebacks stay here)."""
    try:
        reply = await produce()
        return reply if isinstance(reply, Response) else JSONResponse(reply)
    except OpenAIError as e:
        error = e
    except InvalidInputError as e:  # mint_rl's checks name the field
        error = OpenAIError(400, str(e), e.field)
    except (NotFoundError, ModelNotAvailableError) as e:
        error = OpenAIError(404, message(e), "model", "model_not_found")
    except HTTPException as e:  # a body over the size limit, counted as it arrived
        error = OpenAIError(e.status_code, str(e.detail))
    except USER_ERRORS as e:
        error = OpenAIError(400, message(e))
    except Exception as e:  # noqa: BLE001 — answered as a server error, logged in full
        log.error("OpenAI endpoint request failed", exc_info=e)
        error = OpenAIError(500, f"internal error ({type(e).__name__})", type_="server_error")
    return JSONResponse(openai_error_body(error.message, param=error.param, code=error.code,
                                          type_=error.type_), status_code=error.status)


# ------------------------------------------------------------------------------------ models


class ModelResolver:
    """`model` names -> what to sample: a sampler checkpoint in the storage, or a base model."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def base_models(self) -> dict[str, str]:
        """Base model -> its public name: the default model, every base model a client trained
        or sampled here, and the base of every sampler checkpoint in the storage."""
        known = {DEFAULT_MODEL}
        known.update(m.base_model for m in list(self.state.registry.models.values()))
        known.update(s.base_model for s in list(self.state.registry.samplers.values()))
        for run in _runs():
            known.update(_run_bases(run))
        return _public_names(known)

    def resolve(self, model: Any) -> tuple[str, Path | None]:
        """(base model, adapter folder or None) for a request's `model`."""
        if not isinstance(model, str) or not model:
            raise OpenAIError(400, "model: must be a non-empty string", "model")
        if not model.startswith(paths.SCHEME):
            return _base_named(model, self.base_models()), None
        try:
            run, kind, name = paths.parse(model)
            folder = paths.folder(run, kind, name)
        except InvalidInputError as e:  # not a plain tinker path, or outside the storage
            problem = str(e).removeprefix(f"{e.field}: ")
            raise OpenAIError(400, f"model: {problem}", "model") from None
        if kind != SAMPLER_KIND or not (folder / "adapter_model.safetensors").is_file():
            raise _unknown(model)
        base = _checkpoint_base(run, folder)
        if base is None:
            raise OpenAIError(400, f"model: {model!r} does not say its base model", "model")
        return base, folder

    def listing(self) -> dict[str, Any]:
        """GET /v1/models: the base models by name, then every sampler checkpoint, oldest
        first, with its base model's name as parent."""
        names = self.base_models()
        data = [fmt.model_card(name, created=0, parent=None)
                for name in sorted(set(names.values()))]
        for run in _runs():
            data += _sampler_cards(run, names)
        return {"object": "list", "data": data}

    async def client(self, model: Any) -> SamplingClient:
        """A SamplingClient for `model`, made off the event loop: resolving reads the storage,
        and the first client of a base model starts its vLLM engine."""
        def make() -> SamplingClient:
            return SamplingClient(*self.resolve(model))

        return await asyncio.get_running_loop().run_in_executor(self.state.pool, make)


def _base_named(model: str, names: dict[str, str]) -> str:
    """The base model a client means: its listed name, or the base model as a client gave it
    when training or sampling here (what a Tinker client knows it by)."""
    if model in names:
        return model
    for base, name in sorted(names.items()):
        if name == model:
            return base
    raise _unknown(model)


def _public_names(bases: Iterable[str]) -> dict[str, str]:
    """Base model -> the name the endpoint lists it under, which shows nothing of the server's
    files. A hub id, or any bare name a client gave, is its own name. A local folder is named by
    what it holds where that is known (the bundled default model, a hub cache's repo), else by
    its folder name, with a short hash of its path where two folders share a name."""
    names = {b: b for b in bases if _is_name(b)}
    folders: dict[str, set[str]] = {}  # folder name -> real paths of the folders named so
    for base in set(bases) - set(names):
        name, real = _folder_name(base)
        if _is_name(name) and "/" in name:  # a model id: the same model as that id, if listed
            names[base] = name
        else:
            folders.setdefault(name, set()).add(real)
    taken = set(names.values())
    for base in set(bases) - set(names):
        name, real = _folder_name(base)
        shared = len(folders[name]) > 1 or name in taken
        names[base] = f"{name}-{hashlib.sha256(real.encode()).hexdigest()[:8]}" if shared else name
    return names


def _is_name(base: str) -> bool:
    return bool(_HUB_ID.fullmatch(base)) and ".." not in base.split("/")


def _folder_name(base: str) -> tuple[str, str]:
    """(public name, real path) of a base model given as a local folder."""
    real = os.path.realpath(os.path.expanduser(base))
    # where mint_rl.models unpacks the bundled default model
    bundled = os.path.realpath(mint_home() / "models" / DEFAULT_MODEL.rpartition("/")[2])
    if real == bundled:
        return DEFAULT_MODEL, real
    folder = Path(real)
    hub = _HUB_CACHE.fullmatch(folder.parent.parent.name)
    if folder.parent.name == "snapshots" and hub:
        return f"{hub[1]}/{hub[2]}", real
    return folder.name or "model", real


def _unknown(model: str) -> OpenAIError:
    return OpenAIError(404, f"model: {model!r} does not exist on this server (GET /v1/models "
                            "lists what it serves)", "model", "model_not_found")


def _runs() -> list[str]:
    """The run folders in the storage (plain names only; links and hidden folders skipped)."""
    root = paths.storage_root()
    if not root.is_dir():
        return []
    runs = []
    for entry in sorted(root.iterdir()):
        try:
            paths.check_part("run_id", entry.name)
        except InvalidInputError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            runs.append(entry.name)
    return runs


def _run_bases(run: str) -> set[str]:
    """The base models of a run: its record's, else its sampler checkpoints' own configs."""
    base = (paths.read_run_info(run) or {}).get("base_model")
    if isinstance(base, str) and base:
        return {base}
    bases = set()
    for ckpt in paths.list_checkpoints(run):
        kind, _, name = ckpt["checkpoint_id"].partition("/")
        if kind != SAMPLER_KIND:
            continue
        try:
            base = _checkpoint_base(run, paths.folder(run, kind, name))
        except InvalidInputError:  # a folder no client could name
            continue
        if base is not None:
            bases.add(base)
    return bases


def _sampler_cards(run: str, names: dict[str, str]) -> list[dict[str, Any]]:
    cards = []
    for ckpt in paths.list_checkpoints(run):
        kind, _, name = ckpt["checkpoint_id"].partition("/")
        try:
            weights = paths.folder(run, kind, name) / "adapter_model.safetensors"
        except InvalidInputError:  # a folder no client could name
            continue
        if kind == SAMPLER_KIND and weights.is_file():
            base = _checkpoint_base(run, weights.parent)
            cards.append(fmt.model_card(ckpt["tinker_path"], created=int(weights.stat().st_mtime),
                                        parent=None if base is None else names.get(base)))
    return cards


def _checkpoint_base(run: str, folder: Path) -> str | None:
    """The base model a checkpoint was trained on: the server's run record, else the adapter's
    own config (checkpoints written in-process have no run record)."""
    base = (paths.read_run_info(run) or {}).get("base_model")
    if not base:
        try:
            base = json.loads((folder / "adapter_config.json").read_text()).get(
                "base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            return None
    return base if isinstance(base, str) and base else None


# ------------------------------------------------------------------------------------ requests


async def _body(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise OpenAIError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    fmt.refuse_unsupported(body, fields)
    return body


async def _chat(models: ModelResolver, request: Request) -> dict[str, Any] | Response:
    body = await _body(request, fmt.CHAT_FIELDS)
    messages, tools = fmt.messages(body), fmt.tools(body)  # all checked before an engine starts
    params = fmt.sampling_params(body, default_max_tokens=None)
    top_k, n, stream = fmt.chat_top_logprobs(body), fmt.choice_count(body, 1), fmt.streaming(body)
    client = await models.client(body.get("model"))
    tokenizer = client.get_tokenizer()
    fmt.check_tools(tokenizer, tools, messages)
    prompt = fmt.chat_tokens(tokenizer, messages, tools)
    samples = await _generate(client, prompt, n, params, top_k)
    answer = dict(with_logprobs=top_k is not None, tools=tools is not None)
    if stream is None:
        return fmt.chat_reply(body["model"], tokenizer, samples, len(prompt), params, **answer)
    return _events(fmt.chat_chunks(body["model"], tokenizer, samples, len(prompt), params,
                                   include_usage=stream, **answer))


async def _completion(models: ModelResolver, request: Request) -> dict[str, Any] | Response:
    body = await _body(request, fmt.COMPLETION_FIELDS)
    params = fmt.sampling_params(body, default_max_tokens=fmt.COMPLETION_MAX_TOKENS)
    top_k, stream = fmt.completion_top_logprobs(body), fmt.streaming(body)
    client = await models.client(body.get("model"))
    tokenizer = client.get_tokenizer()
    prompts = fmt.completion_prompts(body, tokenizer)
    n = fmt.choice_count(body, len(prompts))
    per_prompt = await asyncio.gather(*(_generate(client, p, n, params, top_k) for p in prompts))
    prompt_tokens, with_logprobs = sum(len(p) for p in prompts), top_k is not None
    if stream is None:
        return fmt.completion_reply(body["model"], tokenizer, per_prompt, prompt_tokens, params,
                                    with_logprobs=with_logprobs)
    return _events(fmt.completion_chunks(body["model"], tokenizer, per_prompt, prompt_tokens,
                                         params, with_logprobs=with_logprobs,
                                         include_usage=stream))


def _events(chunks: list[dict[str, Any]]) -> StreamingResponse:
    """A finished answer as an event stream (see the module docstring for why finished)."""
    async def events() -> AsyncIterator[str]:
        for event in fmt.server_sent_events(chunks):
            yield event

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _generate(client: SamplingClient, prompt: list[int], n: int, params: SamplingParams,
                    top_k: int | None) -> list[fmt.Sample]:
    """n samples of `prompt`; with top_k > 0, also the k likeliest tokens at each position."""
    response = await client.sample_async(ModelInput.from_ints(prompt), n, params)
    sequences = response.sequences
    alternatives: list[Any] = [None] * len(sequences)
    if top_k:
        alternatives = await asyncio.gather(
            *(_alternatives(client, prompt, s.tokens, top_k) for s in sequences))
    return [fmt.Sample(s.tokens, list(s.logprobs or []), s.stop_reason, alt)
            for s, alt in zip(sequences, alternatives, strict=True)]


async def _alternatives(client: SamplingClient, prompt: list[int], tokens: list[int],
                        k: int) -> list[list[tuple[int, float]]]:
    """The top-k tokens at each sampled position, scored as a prompt on the same weights (the
    engine reports only the sampled token's logprob while generating)."""
    try:
        scored = await client.sample_async(
            ModelInput.from_ints(prompt + tokens), 1, SamplingParams(max_tokens=1),
            topk_prompt_logprobs=k)
    except InvalidInputError as e:
        if e.field != "prompt":
            raise
        raise OpenAIError(400, "top logprobs need one free position after the prompt and the "
                               "completion; lower max_tokens", "max_tokens") from None
    rows = scored.topk_prompt_logprobs or []
    return [list(row or []) for row in rows[len(prompt):]]

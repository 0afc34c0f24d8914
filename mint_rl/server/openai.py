"""An OpenAI-compatible endpoint: `/v1/chat/completions`, `/v1/completions` and `/v1/models`.

Any OpenAI client can sample the checkpoints the server holds. The `model` is a sampler
checkpoint's `tinker://<run>/sampler_weights/<name>` path (mapped into the storage like every
other tinker path) or a base model id. Sampling runs on mint_rl's SamplingClient, on the same
vLLM engine as the Tinker routes. Chat prompts go through the model tokenizer's chat template.

What the engine cannot do (streaming, tools, penalties, ...) is refused with an OpenAI error body
`{"error": {"message", "type", "param", "code"}}` naming the field, never silently ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mint_rl.errors import InvalidInputError, ModelNotAvailableError, NotFoundError
from mint_rl.models import DEFAULT_MODEL
from mint_rl.sampler import SamplingClient, chat_prompt
from mint_rl.server import openai_format as fmt
from mint_rl.server import paths
from mint_rl.server.errors import USER_ERRORS, message, openai_error_body
from mint_rl.server.openai_format import OpenAIError
from mint_rl.server.state import ServerState
from mint_rl.types import ModelInput, SamplingParams

log = logging.getLogger(__name__)

PREFIX = "/v1"
SAMPLER_KIND = "sampler_weights"  # the only checkpoints the endpoint serves


def router(state: ServerState) -> APIRouter:
    api = APIRouter()
    models = ModelResolver(state)

    @api.get("/models")
    async def list_models() -> JSONResponse:  # reads the storage: off the event loop
        return await _answer(
            lambda: asyncio.get_running_loop().run_in_executor(state.pool, models.listing))

    @api.post("/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        return await _answer(lambda: _chat(models, request))

    @api.post("/completions")
    async def completions(request: Request) -> JSONResponse:
        return await _answer(lambda: _completion(models, request))

    return api


async def _answer(produce: Callable[[], Awaitable[dict[str, Any]]]) -> JSONResponse:
    """The reply, or the OpenAI error body for whatever went wrong (tracebacks stay here)."""
    try:
        return JSONResponse(await produce())
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

    def base_models(self) -> list[str]:
        """The default model, and every base model a client trained or sampled here."""
        known = {DEFAULT_MODEL}
        known.update(m.base_model for m in list(self.state.registry.models.values()))
        known.update(s.base_model for s in list(self.state.registry.samplers.values()))
        for run in _runs():
            base = (paths.read_run_info(run) or {}).get("base_model")
            if isinstance(base, str) and base:
                known.add(base)
        return sorted(known)

    def resolve(self, model: Any) -> tuple[str, Path | None]:
        """(base model, adapter folder or None) for a request's `model`."""
        if not isinstance(model, str) or not model:
            raise OpenAIError(400, "model: must be a non-empty string", "model")
        if not model.startswith(paths.SCHEME):
            if model not in self.base_models():
                raise _unknown(model)
            return model, None
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
        """GET /v1/models: the base models, then every sampler checkpoint, oldest first."""
        data = [fmt.model_card(base, created=0, parent=None) for base in self.base_models()]
        for run in _runs():
            data += _sampler_cards(run)
        return {"object": "list", "data": data}

    async def client(self, model: Any) -> SamplingClient:
        """A SamplingClient for `model`, made off the event loop: resolving reads the storage,
        and the first client of a base model starts its vLLM engine."""
        def make() -> SamplingClient:
            return SamplingClient(*self.resolve(model))

        return await asyncio.get_running_loop().run_in_executor(self.state.pool, make)


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


def _sampler_cards(run: str) -> list[dict[str, Any]]:
    cards = []
    for ckpt in paths.list_checkpoints(run):
        kind, _, name = ckpt["checkpoint_id"].partition("/")
        try:
            weights = paths.folder(run, kind, name) / "adapter_model.safetensors"
        except InvalidInputError:  # a folder no client could name
            continue
        if kind == SAMPLER_KIND and weights.is_file():
            cards.append(fmt.model_card(ckpt["tinker_path"], created=int(weights.stat().st_mtime),
                                        parent=_checkpoint_base(run, weights.parent)))
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


async def _chat(models: ModelResolver, request: Request) -> dict[str, Any]:
    body = await _body(request, fmt.CHAT_FIELDS)
    messages = fmt.messages(body)  # everything checked before an engine may start
    params = fmt.sampling_params(body, default_max_tokens=None)
    top_k, n = fmt.chat_top_logprobs(body), fmt.choice_count(body, 1)
    client = await models.client(body.get("model"))
    tokenizer = client.get_tokenizer()
    prompt = chat_prompt(tokenizer, messages).to_ints()
    samples = await _generate(client, prompt, n, params, top_k)
    return fmt.chat_reply(body["model"], tokenizer, samples, len(prompt), params,
                          with_logprobs=top_k is not None)


async def _completion(models: ModelResolver, request: Request) -> dict[str, Any]:
    body = await _body(request, fmt.COMPLETION_FIELDS)
    params = fmt.sampling_params(body, default_max_tokens=fmt.COMPLETION_MAX_TOKENS)
    top_k = fmt.completion_top_logprobs(body)
    client = await models.client(body.get("model"))
    tokenizer = client.get_tokenizer()
    prompts = fmt.completion_prompts(body, tokenizer)
    n = fmt.choice_count(body, len(prompts))
    per_prompt = await asyncio.gather(*(_generate(client, p, n, params, top_k) for p in prompts))
    return fmt.completion_reply(body["model"], tokenizer, per_prompt,
                                sum(len(p) for p in prompts), params,
                                with_logprobs=top_k is not None)


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

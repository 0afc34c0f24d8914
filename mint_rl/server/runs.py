"""Training runs and their checkpoints: list, describe, delete, TTLs, weights info, and the
expiring download links of external weights."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from mint_rl.errors import InvalidInputError
from mint_rl.learner import checkpoint as ckpt
from mint_rl.server import paths, schemas
from mint_rl.server.downloads import PREFIX as DOWNLOADS
from mint_rl.server.errors import HTTPError
from mint_rl.server.state import ServerState


def page(items: list[Any], limit: int, offset: int) -> tuple[list[Any], dict[str, int]]:
    """Offset/limit paging, as the SDK asks for it; the cursor tells the total."""
    if limit < 0 or offset < 0:
        raise InvalidInputError("limit", f"limit and offset must be >= 0, got {limit}, {offset}")
    return items[offset:offset + limit], {"offset": offset, "limit": limit,
                                          "total_count": len(items)}


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.get("/training_runs")
    async def list_runs(limit: int = 20, offset: int = 0) -> dict[str, Any]:
        runs, cursor = page(paths.list_runs(), limit, offset)
        return {"training_runs": [describe_run(state, run) for run in runs], "cursor": cursor}

    @api.get("/checkpoints")
    async def list_user_checkpoints(limit: int = 100, offset: int = 0) -> dict[str, Any]:
        every = [c for run in paths.list_runs() for c in paths.list_checkpoints(run)]
        every.sort(key=lambda c: c["time"], reverse=True)  # newest first, as Tinker's
        checkpoints, cursor = page(every, limit, offset)
        return {"checkpoints": checkpoints, "cursor": cursor}

    @api.get("/training_runs/{run_id}/checkpoints")
    async def list_checkpoints(run_id: str) -> dict[str, Any]:
        return {"checkpoints": paths.list_checkpoints(run_id)}

    # The checkpoint id is `<kind>/<name>`: a path parameter, so it may hold its '/'.
    @api.get("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/external_weights_urls")
    async def external_weights_urls(run_id: str, checkpoint_id: str,
                                    request: Request) -> dict[str, Any]:
        kind, _, name = checkpoint_id.partition("/")
        if kind != "external_weights":
            raise InvalidInputError("tinker_path", "download links are made for external_weights "
                                                   "checkpoints (save_weights_external)")
        urls, expires = state.downloads.links(str(request.base_url), run_id, name)
        return {"urls": urls, "expires": expires.isoformat()}

    @api.put("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}/ttl")
    async def set_ttl(run_id: str, checkpoint_id: str, body: schemas.SetTTL) -> Response:
        paths.existing_checkpoint(run_id, checkpoint_id)
        paths.set_ttl(run_id, checkpoint_id, body.ttl_seconds)
        return Response(status_code=204)

    @api.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}")
    async def delete_checkpoint(run_id: str, checkpoint_id: str) -> Response:
        paths.delete_checkpoint(run_id, checkpoint_id)
        return Response(status_code=204)

    @api.get("/training_runs/{run_id}")
    async def training_run(run_id: str) -> dict[str, Any]:
        return describe_run(state, run_id)

    @api.post("/weights_info")
    async def weights_info(body: schemas.WeightsInfo) -> dict[str, Any]:
        return describe_weights(body.tinker_path)

    return api


def downloads_router(state: ServerState) -> APIRouter:
    """GET <DOWNLOADS>/<run>/<name>/<file>?expires=..&signature=..: a file of external weights."""
    api = APIRouter()

    @api.get(DOWNLOADS + "/{run_id}/{name}/{file}")
    async def download(run_id: str, name: str, file: str, expires: int = Query(...),
                       signature: str = Query(...)) -> FileResponse:
        target = state.downloads.file(run_id, name, file, expires, signature)
        return FileResponse(target, media_type="application/octet-stream", filename=file)

    return api


def describe_run(state: ServerState, run_id: str) -> dict[str, Any]:
    """What the SDK's TrainingRun holds, from the live model or what the run left on disk."""
    live = state.registry.models.get(run_id)
    info = paths.read_run_info(run_id)
    if info is None:
        raise HTTPError(404, f"run_id: unknown training run {run_id!r}")
    checkpoints = paths.list_checkpoints(run_id)
    last = {kind: [c for c in checkpoints if c["checkpoint_type"] == kind][-1:]
            for kind in ("training", "sampler")}
    seen = live.last_request_time if live is not None else None
    return {
        "training_run_id": run_id, "base_model": info.get("base_model", ""),
        "model_owner": "local", "is_lora": True, "corrupted": False,
        "lora_rank": info.get("lora_rank"),
        "last_request_time": datetime.fromtimestamp(seen, UTC).isoformat() if seen
        else (checkpoints[-1]["time"] if checkpoints else datetime.now(UTC).isoformat()),
        "last_checkpoint": (last["training"] or [None])[0],
        "last_sampler_checkpoint": (last["sampler"] or [None])[0],
        "user_metadata": info.get("user_metadata"),
    }


def describe_weights(tinker_path: str) -> dict[str, Any]:
    """The SDK's WeightsInfoResponse: what a checkpoint is a LoRA of."""
    run, kind, name = paths.parse(tinker_path)
    folder = paths.existing_checkpoint(run, f"{kind}/{name}")
    info = paths.read_run_info(run) or {}
    lora = info.get("lora") or {}
    if kind == "weights":  # a save_state checkpoint says it all itself
        meta = ckpt.read_meta(folder)
        info = {**info, "base_model": meta.get("base_model", info.get("base_model"))}
        lora = meta.get("lora") or lora
    if not info.get("base_model"):
        raise InvalidInputError("tinker_path", f"{tinker_path!r} was not written by this server")
    return {"base_model": info["base_model"], "is_lora": True,
            "lora_rank": lora.get("rank", info.get("lora_rank")),
            "train_unembed": lora.get("train_unembed"), "train_mlp": lora.get("train_mlp"),
            "train_attn": lora.get("train_attn"), "optimizer_config": {"type": "adamw"}}

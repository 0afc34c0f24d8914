"""Training runs and their checkpoints: list, delete, describe."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response

from mint_rl.server import paths
from mint_rl.server.errors import HTTPError
from mint_rl.server.state import ServerState


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.get("/training_runs/{run_id}/checkpoints")
    async def list_checkpoints(run_id: str) -> dict[str, Any]:
        return {"checkpoints": paths.list_checkpoints(run_id)}

    # The checkpoint id is `<kind>/<name>`: a path parameter, so it may hold its '/'.
    @api.delete("/training_runs/{run_id}/checkpoints/{checkpoint_id:path}")
    async def delete_checkpoint(run_id: str, checkpoint_id: str) -> Response:
        paths.delete_checkpoint(run_id, checkpoint_id)
        return Response(status_code=204)

    @api.get("/training_runs/{run_id}")
    async def training_run(run_id: str) -> dict[str, Any]:
        return describe_run(state, run_id)

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
        "user_metadata": None,
    }

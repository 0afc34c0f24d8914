"""Sampling endpoints: create_sampling_session, samplers/{id}, asample."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mint_rl.server import sampling, schemas
from mint_rl.server.state import ServerState


def router(state: ServerState) -> APIRouter:
    api = APIRouter()

    @api.post("/create_sampling_session")
    async def create_sampling_session(body: schemas.CreateSamplingSession) -> dict[str, Any]:
        return sampling.create_sampling_session(state, body)

    @api.get("/samplers/{sampler_id}")
    async def get_sampler(sampler_id: str) -> dict[str, Any]:
        return sampling.get_sampler(state, sampler_id)

    @api.post("/asample")
    async def asample(body: schemas.Sample) -> dict[str, Any]:
        return sampling.asample(state, body)

    return api

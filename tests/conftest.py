"""Shared fixtures: the tiny random model (fast) and the bundled default model (real)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mint_rl.models import DEFAULT_MODEL, make_tiny_model, mint_home, resolve_model

# vLLM reads this when it is first imported (by a test, after this file): its INFO lines would
# fill every captured test output.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(autouse=True, scope="session")
def _runs_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Checkpoints written by tests go to a temporary folder, not the user's runs."""
    os.environ["MINT_RL_RUNS"] = str(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return make_tiny_model(mint_home() / "models" / "tiny-test-llama")


@pytest.fixture(scope="session")
def default_model() -> Path:
    return resolve_model(DEFAULT_MODEL)

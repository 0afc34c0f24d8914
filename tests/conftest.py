"""Shared fixtures: the tiny random model (fast), the bundled default model and one vLLM engine
(real).

Starting a vLLM engine is the most expensive thing the suite does (~25 s on 2 cores), so the
real-stack tests share one: a module asks for `sampler_engine`, which starts the engine once per
session and forgets the previous module's policy versions. Tests of another engine kind (the
`adapter` strategy) run last, so the shared engine is started only once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_model import make_tiny_model

from mint_rl.models import DEFAULT_MODEL, mint_home, resolve_model

# vLLM reads this when it is first imported (by a test, after this file): its INFO lines would
# fill every captured test output.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


# A test that asks for one of these loads the default model: it belongs to the slow lane.
SLOW_FIXTURES = {"default_model", "sampler_engine"}


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `own_engine` replace the shared engine with another kind: run them last.
    A test that needs the default model is marked slow even where its author forgot."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("own_engine") is not None)


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


@pytest.fixture(scope="session")
def _session_engine(default_model: Path) -> Iterator[None]:
    from mint_rl.sampler import close_all

    yield
    close_all()  # before pytest closes its output streams


@pytest.fixture(scope="module")
def sampler_engine(_session_engine: None):  # noqa: ANN201 (SamplerEngine: imports vLLM)
    """The process's default vLLM engine for the default model, with no policy versions yet."""
    from mint_rl.sampler import get_engine

    engine = get_engine(DEFAULT_MODEL)  # started on first use, then shared
    engine.reset()
    return engine

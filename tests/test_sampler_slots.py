"""A `SamplerEngines` keys its engines by (base model, slot): several sampler actors of a run
(`--samplers N`) each get their own vLLM engine; every other user keeps slot 0. Two owners never
share an engine. A stand-in engine class keeps this fast (the real engines:
tests/test_several_samplers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mint_rl.errors import InvalidInputError
from mint_rl.sampler import engine as engine_module
from mint_rl.sampler.config import EngineConfig
from mint_rl.sampler.engine import SamplerEngines


class FakeEngine:
    started = 0

    def __init__(self, base_model: str, config: EngineConfig | None = None) -> None:
        self.base_model = base_model
        self.config = (config or EngineConfig()).resolve()
        self.closed = self.dead = False
        FakeEngine.started += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SamplerEngine", FakeEngine)


def test_each_slot_has_its_own_engine(fake_engines: None, tiny_model: Path) -> None:
    model = str(tiny_model)
    registry = SamplerEngines()
    default = registry.get(model)
    assert registry.get(model, EngineConfig()) is default  # slot 0: shared as before
    assert registry.running(model) is default
    assert registry.running(model, slot=1) is None
    second = registry.get(model, EngineConfig(slot=1))
    assert second is not default and second.config.slot == 1
    assert registry.get(model, EngineConfig(slot=1)) is second
    assert registry.running(model, slot=1) is second
    with pytest.raises(InvalidInputError, match="engine_config"):  # one config per slot
        registry.get(model, EngineConfig(slot=1, max_logprobs=3))
    # A dead engine is replaced, in its slot only.
    assert isinstance(second, FakeEngine)
    second.dead = True
    assert registry.running(model, slot=1) is None
    third = registry.get(model, EngineConfig(slot=1))
    assert third is not second and second.closed and not default.closed
    assert registry.get(model) is default
    registry.close()
    assert default.closed and third.closed


def test_slot_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="slot"):
        EngineConfig(slot=-1)


def test_owners_do_not_share_engines_and_another_process_gets_none(
        fake_engines: None, tiny_model: Path) -> None:
    import pickle

    model = str(tiny_model)
    run, other = SamplerEngines(), SamplerEngines()
    engine, started = run.acquire(model)
    assert started and run.acquire(model) == (engine, False)  # the restarted actor's takeover
    assert other.running(model) is None and other.get(model) is not engine
    sent = pickle.loads(pickle.dumps(run))  # a Ray actor's copy: its process starts its own
    assert sent.running(model) is None
    run.close()
    assert engine.closed and run.running(model) is None
    other.close()

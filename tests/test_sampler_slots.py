"""The process's engine registry keys engines by (base model, slot): several sampler actors of a
run (`--samplers N`) each get their own vLLM engine; every other user keeps slot 0. A stand-in
engine class keeps this fast (the real engines: tests/test_several_samplers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mint_rl.errors import InvalidInputError
from mint_rl.sampler import engine as registry
from mint_rl.sampler.config import EngineConfig


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
    monkeypatch.setattr(registry, "SamplerEngine", FakeEngine)
    monkeypatch.setattr(registry, "_ENGINES", {})


def test_each_slot_has_its_own_engine(fake_engines: None, tiny_model: Path) -> None:
    model = str(tiny_model)
    default = registry.get_engine(model)
    assert registry.get_engine(model, EngineConfig()) is default  # slot 0: shared as before
    assert registry.running_engine(model) is default
    assert registry.running_engine(model, slot=1) is None
    second = registry.get_engine(model, EngineConfig(slot=1))
    assert second is not default and second.config.slot == 1
    assert registry.get_engine(model, EngineConfig(slot=1)) is second
    assert registry.running_engine(model, slot=1) is second
    with pytest.raises(InvalidInputError, match="engine_config"):  # one config per slot
        registry.get_engine(model, EngineConfig(slot=1, max_logprobs=3))
    # A dead engine is replaced, in its slot only.
    assert isinstance(second, FakeEngine)
    second.dead = True
    assert registry.running_engine(model, slot=1) is None
    third = registry.get_engine(model, EngineConfig(slot=1))
    assert third is not second and second.closed and not default.closed
    assert registry.get_engine(model) is default
    registry.close_all()
    assert default.closed and third.closed


def test_slot_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="slot"):
        EngineConfig(slot=-1)

"""Whole-run checkpoint manifests: newest intact one wins; corrupt, half-written or missing
checkpoints are skipped, never loaded; only the newest `keep_last` stay on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mint_rl.run.checkpoints import RunCheckpoints


def _state(tmp_path: Path, name: str) -> str:
    """A stand-in learner state folder (what save_state writes: safetensors + JSON)."""
    folder = tmp_path / "states" / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(f"adapter of {name}".encode())
    (folder / "optimizer.safetensors").write_bytes(f"moments of {name}".encode())
    (folder / "mint_state.json").write_text(json.dumps({"step": name}))
    return str(folder)


def test_newest_intact_checkpoint_is_used_and_corrupt_ones_are_skipped(tmp_path: Path) -> None:
    run = RunCheckpoints(tmp_path / "run", keep_last=5)
    assert run.latest() is None  # a new run
    for step in (2, 4, 6):
        run.record(step, _state(tmp_path, f"s{step}"), step, pending_batches=[step])
    assert run.latest().step == 6
    # One flipped byte in the newest learner state: its checksum no longer matches.
    (tmp_path / "states" / "s6" / "optimizer.safetensors").write_bytes(b"moments of s7")
    latest = run.latest()
    assert latest is not None and latest.step == 4 and latest.pending_batches == [4]
    # A missing file, then a manifest cut short by a crash: each falls back one further.
    (tmp_path / "states" / "s4" / "adapter_model.safetensors").unlink()
    assert run.latest().step == 2
    (run.folder / "step-000002.json").write_text('{"step": 2, "state_pa')
    assert run.latest() is None


def test_a_manifest_is_written_only_after_the_state_and_old_ones_are_pruned(
        tmp_path: Path) -> None:
    run = RunCheckpoints(tmp_path / "run", keep_last=2)
    states = [_state(tmp_path, f"s{step}") for step in (1, 2, 3)]
    for step, state in zip((1, 2, 3), states, strict=True):
        run.record(step, state, step, pending_batches=[])
    assert [m.name for m in run.manifests()] == ["step-000003.json", "step-000002.json"]
    assert not Path(states[0]).exists()  # the pruned checkpoint's learner state is gone too
    assert all(Path(s).exists() for s in states[1:])
    assert not list(run.folder.glob(".*tmp"))  # no temporary file left behind
    record = json.loads((run.folder / "step-000003.json").read_text())
    assert set(record["files"]) == {"adapter_model.safetensors", "optimizer.safetensors",
                                    "mint_state.json"}


def test_keep_last_must_keep_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        RunCheckpoints(tmp_path, keep_last=0)

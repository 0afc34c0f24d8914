"""Optional wandb logging: rows reach every sink as written; a run asking for wandb without the
package installed is refused, naming the option, before anything starts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mint_rl.cli import main as cli_main
from mint_rl.errors import InvalidInputError
from mint_rl.run.config import RLConfig
from mint_rl.run.metrics import MetricsLogger, read_metrics
from mint_rl.run.wandb_sink import check_sinks, metric_sinks, wandb_run_id


class Recorder:
    """A sink keeping what it was given, and whether the logger closed it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.closed = False

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def close(self) -> None:
        self.closed = True


def test_every_sink_gets_the_rows_written_to_metrics_jsonl(tmp_path: Path) -> None:
    import torch

    recorder, plain = Recorder(), []
    logger = MetricsLogger(tmp_path, tensorboard=False, sinks=[recorder, plain.append])
    logger.log({"step": 0, "reward/mean": torch.tensor(0.25), "eval/accuracy": 0.5})
    logger.log({"step": 1, "reward/mean": 0.75})
    assert not recorder.closed
    logger.close()
    written = read_metrics(tmp_path / "metrics.jsonl")
    assert recorder.rows == written == plain
    assert written[0]["reward/mean"] == 0.25  # tensors arrive as plain numbers
    assert recorder.closed


@pytest.fixture
def no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as on a machine without wandb, whether or not it is installed here."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError


@pytest.mark.usefixtures("no_wandb")
def test_asking_for_wandb_without_it_names_the_option(tmp_path: Path) -> None:
    config = RLConfig(wandb="my-project")
    for make in (check_sinks, lambda c: metric_sinks(c, tmp_path)):
        with pytest.raises(InvalidInputError, match="pip install wandb") as error:
            make(config)
        assert error.value.field == "wandb"
        assert "my-project" in str(error.value)


@pytest.mark.usefixtures("no_wandb")
def test_without_the_option_wandb_is_never_imported(tmp_path: Path) -> None:
    check_sinks(RLConfig())
    assert metric_sinks(RLConfig(), tmp_path) == []
    assert metric_sinks(object(), tmp_path) == []  # a recipe config without the option


@pytest.mark.usefixtures("no_wandb")
def test_mint_rl_run_refuses_wandb_before_starting(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    log_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli_main(["run", "arithmetic", "--log-dir", str(log_dir), "--wandb", "proj"])
    assert exit_.value.code == 2
    assert "wandb: logging to the wandb project 'proj' needs the wandb package" in (
        capsys.readouterr().err.replace("\n", " "))
    assert not log_dir.exists()  # nothing written, nothing started


def test_a_run_folder_keeps_its_wandb_run(tmp_path: Path) -> None:
    assert wandb_run_id(tmp_path / "a") == wandb_run_id(tmp_path / "x" / ".." / "a")
    assert wandb_run_id(tmp_path / "a") != wandb_run_id(tmp_path / "b")
    assert wandb_run_id(tmp_path / "a").isalnum()

"""`mint-rl plot`: one PNG comparing runs, a panel per metric some run logged, a line per run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mint_rl.cli import main as cli_main
from mint_rl.run.metrics import plot_metrics, read_metrics
from mint_rl.run.plot import DPI, PANEL_IN, compare_runs, run_labels

# matplotlib's first two line colours (the default cycle): run 1 and run 2.
BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def write_run(folder: Path, rows: list[dict[str, float]]) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def rl_rows(steps: int, *, slope: float, eval_key: str = "eval/accuracy") -> list[dict]:
    rows = []
    for step in range(steps):
        row = {"step": step, "reward/mean": slope * step, "kl/sampler_learner": 1e-5,
               "staleness/max": step % 2, "time/step": 7.0 + step, "loss/sum": 0.1}
        if step % 2 == 0:
            row[eval_key] = 0.1 + slope * step
        rows.append(row)
    return rows


def colour_pixels(png: Path, colour: tuple[int, int, int]) -> int:
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    return int((pixels == np.array(colour, dtype=np.uint8)).all(axis=-1).sum())


def panels_in(png: Path) -> int:
    """Panels stack vertically, PANEL_IN inches each: the PNG's height counts them."""
    with Image.open(png) as image:
        image.verify()  # a whole, valid PNG
    with Image.open(png) as image:
        assert image.format == "PNG"
        return round(image.height / (PANEL_IN * DPI))


def test_plot_compares_runs_in_one_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    k0 = write_run(tmp_path / "k0", rl_rows(6, slope=0.1))
    k1 = write_run(tmp_path / "k1", rl_rows(4, slope=0.05, eval_key="eval/loss"))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["plot", str(k0), str(k1)]) == 0
    png = tmp_path / "comparison.png"
    assert str(png) in capsys.readouterr().out.replace("\n", "")  # says where it wrote
    # reward, eval/accuracy (k0), eval/loss (k1), KL, staleness, step time; not loss/sum.
    assert panels_in(png) == 6
    assert colour_pixels(png, BLUE) > 50 and colour_pixels(png, ORANGE) > 50  # both runs drawn

    plot = compare_runs({"k0": read_metrics(k0 / "metrics.jsonl"),
                         "k1": read_metrics(k1 / "metrics.jsonl")}, tmp_path / "again.png")
    assert plot.panels == ["reward/mean", "eval/accuracy", "eval/loss", "kl/sampler_learner",
                           "staleness/max", "time/step"]
    assert plot.labels == ["k0", "k1"]


def test_a_metric_no_run_logged_gets_no_panel(tmp_path: Path) -> None:
    rows = [{"step": s, "reward/mean": 0.1 * s, "time/step": 5.0} for s in range(3)]
    runs = {"a": rows, "b": rows[:2]}
    plot = compare_runs(runs, tmp_path / "out" / "c.png")
    assert plot.panels == ["reward/mean", "time/step"]
    assert panels_in(plot.path) == 2


def test_a_single_runs_curves_share_the_drawing(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", rl_rows(5, slope=0.2))
    out = plot_metrics(run / "metrics.jsonl", tmp_path / "curves.png",
                       ["eval/accuracy", "reward/mean", "queue/rollouts", "time/step"])
    assert panels_in(out) == 3  # queue/rollouts was never logged
    assert colour_pixels(out, BLUE) > 50


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path: Path) -> None:
    dirs = [tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c" / "other"]
    assert run_labels(dirs) == ["a/run", "b/run", "other"]


def test_plot_refuses_a_folder_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert exit_.value.code == 2
    assert not (tmp_path / "x.png").exists()

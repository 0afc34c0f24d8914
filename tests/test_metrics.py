"""Run metrics: a resumed run replaces, never repeats, the steps past its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from mint_rl.run.metrics import MetricsLogger


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_drops_rows_past_the_checkpoint(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(5):
        logger.log({"step": step, "reward/mean": 0.1 * step})
    logger.log({"step": 5, "eval/accuracy": 0.5})  # the final evaluation row
    logger.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "rew')  # a line cut short by a crash

    resumed = MetricsLogger(tmp_path, start_step=3, tensorboard=False)
    assert _steps(tmp_path / "metrics.jsonl") == [0, 1, 2]
    resumed.log({"step": 3, "reward/mean": 0.3})
    resumed.close()
    assert _steps(tmp_path / "metrics.jsonl") == [0, 1, 2, 3]

    MetricsLogger(tmp_path, tensorboard=False).close()  # from scratch: an empty history
    assert _steps(tmp_path / "metrics.jsonl") == []

"""The `mint-rl` command line: help shows the recipe's options, bad input is refused early."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from mint_rl.cli import main


def test_run_help_lists_common_and_recipe_options(capsys) -> None:
    assert main(["run", "arithmetic", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--log-dir",  # the command's own
                   "--max-steps-off-policy", "--loss", "--group-size", "--kl-coef",  # RLConfig
                   "--max-operand"):  # the recipe's own
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["run"], "recipe name or file is required"),
    (["run", "no-such-recipe"], "unknown recipe"),
    (["run", "arithmetic", "--steps", "0"], "steps: must be >= 1"),
    (["run", "arithmetic", "--max-steps-off-policy", "-1"], "max_steps_off_policy: must be >= 0"),
    (["run", "arithmetic", "--loss", "nope"], "--loss: invalid choice"),
    (["run", "arithmetic", "--no-such-option"], "unrecognized arguments"),
])
def test_bad_arguments_are_refused(capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


_USER_RECIPE = textwrap.dedent('''
    """A recipe written outside the repository: a few supervised steps on a local model."""
    import json
    from dataclasses import dataclass

    import mint_rl as mint
    from mint_rl import types


    @dataclass(frozen=True)
    class Config:
        model: str
        steps: int = 3


    def main(config, log_dir):
        client = mint.ServiceClient().create_lora_training_client(config.model, rank=4, seed=0)
        tokens = list(range(5, 25))
        datum = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                            loss_fn_inputs={"target_tokens": tokens[1:],
                                            "weights": [1.0] * (len(tokens) - 1)})
        losses = []
        for _ in range(config.steps):
            losses.append(client.forward_backward([datum], "cross_entropy").result().loss)
            client.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        (log_dir / "losses.json").write_text(json.dumps(losses))
        return 0
''')


def test_a_recipe_file_outside_the_repository_trains(tiny_model, tmp_path: Path) -> None:
    recipe = tmp_path / "my_recipe.py"
    recipe.write_text(_USER_RECIPE)
    run_dir = tmp_path / "run"
    code = main(["run", str(recipe), "--steps", "4", "--log-dir", str(run_dir),
                 "--model", str(tiny_model)])
    assert code == 0
    losses = json.loads((run_dir / "losses.json").read_text())
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (run_dir / "third_party.log").exists()  # run like any recipe
    assert json.loads((run_dir / "config.json").read_text()) == {"model": str(tiny_model),
                                                                 "steps": 4}


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("x = 1\n", "is not a recipe"),
    ("class Config:\n    pass\ndef main(config, log_dir):\n    pass\n", "is not a recipe"),
])
def test_bad_recipe_files_are_refused(capsys, tmp_path: Path, content, message) -> None:
    recipe = tmp_path / "not_a_recipe.py"
    if content is not None:
        recipe.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(recipe)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_show_prints_the_latest_samples_and_a_metrics_summary(capfd, tmp_path: Path) -> None:
    rows = [{"step": s, "reward/mean": r, "time/step": 2.0, "memory/learner_peak_rss_gib": m,
             "memory/engine_peak_rss_gib": 2.5, "memory/microbatch_tokens": 640.0,
             "memory/recompute": 0.0}
            for s, (r, m) in enumerate([(0.25, 3.25), (0.75, 3.75)])]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = [{"step": 1, "batch": 1, "tag": "t", "prompt": "What is 2 + 2?",
                "completion": "The answer is four", "reward": 1.0, "group_rewards": [1.0, 0.5],
                "policy_version": 1}]
    (tmp_path / "samples.jsonl").write_text(json.dumps(samples[0]) + "\n")
    assert main(["show", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "The answer is four" in out and "samples of step 1" in out
    assert "reward/mean" in out and "0.25" in out and "0.75" in out
    # The run's peaks: the largest of its steps.
    assert "learner process 3.75 GiB" in out and "vLLM engine process 2.50 GiB" in out
    assert "micro-batches of up to 640 tokens" in out and "recompute" not in out


def test_show_refuses_a_folder_without_a_run(capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["show", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "holds no run" in capsys.readouterr().err

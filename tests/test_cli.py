"""The `mint-rl` command line: help shows the recipe's options, bad input is refused early."""

from __future__ import annotations

import pytest

from mint_rl.cli import main


def test_run_help_lists_common_and_recipe_options(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "arithmetic", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--max-steps-off-policy", "--loss", "--log-dir",  # common
                   "--group-size", "--kl-coef", "--cpus"):  # the recipe's own
        assert option in out


@pytest.mark.parametrize("argv, message", [
    (["run"], "recipe name is required"),
    (["run", "no-such-recipe"], "unknown recipe"),
    (["run", "arithmetic", "--steps", "0"], "--steps"),
    (["run", "arithmetic", "--max-steps-off-policy", "-1"], "--max-steps-off-policy"),
])
def test_bad_arguments_are_refused(capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

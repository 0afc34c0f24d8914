"""`mint-rl eval`: which checkpoint it evaluates, with which recipe and config, where it writes
the metrics, and the errors it gives; then the arithmetic recipe's evaluation on the real stack."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from helpers import randomize_lora_b

import mint_rl as mint
from mint_rl.cli import main as cli_main
from mint_rl.errors import CorruptCheckpointError, InvalidInputError, NotFoundError
from mint_rl.learner.checkpoint import resolve_path
from mint_rl.run.checkpoints import RunCheckpoints
from mint_rl.run.config import write_config
from mint_rl.run.run_folder import find_checkpoint, write_run_info

# A recipe of the user's whose evaluation reads the adapter it is given (the sum of its LoRA B
# weights) and its config (`marker`), so a test sees both arrive.
RECIPE = '''
    from dataclasses import dataclass
    from pathlib import Path

    from safetensors.torch import load_file

    from mint_rl.run.config import option


    @dataclass(frozen=True)
    class Config:
        base_model: str = option("none", "model")
        marker: int = option(0, "a number the evaluation reports")


    def evaluate_checkpoint(config: Config, adapter_dir: Path) -> dict[str, float]:
        tensors = load_file(adapter_dir / "adapter_model.safetensors")
        return {"eval/b_sum": sum(float(t.sum()) for k, t in tensors.items() if "lora_B" in k),
                "eval/marker": config.marker}


    def main(config: Config, log_dir: Path) -> None:
        pass
'''


def b_sum(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    return sum(float(t.sum()) for k, t in tensors.items() if "lora_B" in k)


@pytest.fixture(scope="module")
def run_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the recipe above with checkpoints at steps 2 and 4 (different adapters)."""
    root = tmp_path_factory.mktemp("eval")
    (root / "my_recipe.py").write_text(textwrap.dedent(RECIPE))
    run = root / "run"
    client = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=0)
    for step in (2, 4):
        randomize_lora_b(client.engine.model, seed=step)
        state = client.save_state(f"eval-test-{step}").result().path
        RunCheckpoints(run).record(step, state, step, [])
    (run / "config.json").write_text(json.dumps({"base_model": str(tiny_model), "marker": 7,
                                                 "an_option_since_removed": 1}))
    write_run_info(run, str(root / "my_recipe.py"))
    return run


def adapter_of(run: Path, step: int) -> Path:
    manifest = json.loads((run / "checkpoints" / f"step-{step:06d}.json").read_text())
    return resolve_path(manifest["state_path"])


def test_eval_runs_the_recorded_recipe_on_the_newest_checkpoint(run_dir: Path) -> None:
    assert cli_main(["eval", str(run_dir)]) == 0
    record = json.loads((run_dir / "checkpoints" / "eval-step-000004.json").read_text())
    assert record["step"] == 4
    assert record["metrics"] == {"eval/b_sum": pytest.approx(b_sum(adapter_of(run_dir, 4))),
                                 "eval/marker": 7.0}  # the run's config, not the defaults
    assert b_sum(adapter_of(run_dir, 4)) != pytest.approx(b_sum(adapter_of(run_dir, 2)))


def test_eval_takes_a_step_a_manifest_or_an_adapter_folder(run_dir: Path, tmp_path: Path) -> None:
    assert cli_main(["eval", str(run_dir), "--step", "2"]) == 0
    by_step = json.loads((run_dir / "checkpoints" / "eval-step-000002.json").read_text())
    assert by_step["metrics"]["eval/b_sum"] == pytest.approx(b_sum(adapter_of(run_dir, 2)))
    manifest = run_dir / "checkpoints" / "step-000002.json"
    assert find_checkpoint(manifest) == find_checkpoint(run_dir, step=2)

    # A bare adapter folder records no recipe or config: --recipe, defaults.
    adapter = adapter_of(run_dir, 2)
    recipe = str(run_dir.parent / "my_recipe.py")
    assert cli_main(["eval", str(adapter)]) == 2  # which recipe? refused
    assert cli_main(["eval", str(adapter), "--recipe", recipe]) == 0
    record = json.loads((adapter.parent / f"eval-{adapter.name}.json").read_text())
    assert record["metrics"]["eval/marker"] == 0.0
    assert record["step"] == 0  # the learner state's own step counter (no optimizer step)


def test_eval_refuses_a_recipe_without_evaluate_checkpoint(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["eval", str(run_dir), "--recipe", "rl_loop"]) == 2
    assert "defines no evaluate_checkpoint" in capsys.readouterr().out.replace("\n", " ")


def test_checkpoint_errors_are_typed_and_name_the_problem(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="holds no checkpoint"):
        find_checkpoint(tmp_path)
    with pytest.raises(NotFoundError, match=r"no checkpoint of step 3 \(it has steps \[2, 4\]\)"):
        find_checkpoint(run_dir, step=3)
    with pytest.raises(NotFoundError, match="does not exist"):
        find_checkpoint(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="step"):
        find_checkpoint(adapter_of(run_dir, 2), step=2)

    # Damage the newest checkpoint (a copy of the run): the run falls back to the one before,
    # asking for it by name is refused.
    copy = tmp_path / "copy"
    client_state = adapter_of(run_dir, 4)
    damaged = tmp_path / "damaged-state"
    damaged.mkdir()
    for f in client_state.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    RunCheckpoints(copy).record(4, str(damaged), 4, [])
    RunCheckpoints(copy).record(2, str(adapter_of(run_dir, 2)), 2, [])
    (damaged / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    assert find_checkpoint(copy).step == 2
    with pytest.raises(CorruptCheckpointError, match="does not match its checksum"):
        find_checkpoint(copy, step=4)
    with pytest.raises(CorruptCheckpointError, match="adapter_model.safetensors"):
        find_checkpoint(damaged)  # no manifest: the file itself does not read
    assert cli_main(["eval", str(copy), "--step", "4", "--recipe", "arithmetic"]) == 2


@pytest.mark.slow
def test_arithmetic_eval_of_a_checkpoint_measures_the_held_out_accuracy(
        default_model: Path, sampler_engine, tmp_path: Path) -> None:
    """A fresh (zero) adapter is the base model: greedy held-out accuracy must equal the base
    model's, measured directly through the recipe's evaluator."""
    import anyio

    from mint_rl.recipes import arithmetic
    from mint_rl.run.train import load_tokenizer
    from mint_rl.sampler import SamplingClient

    config = arithmetic.Config(temperature=0.0, eval_samples=1, max_operand=4)  # 7 held out
    run = tmp_path / "run"
    client = mint.ServiceClient().create_lora_training_client(config.base_model,
                                                              rank=config.rank, seed=0)
    RunCheckpoints(run).record(0, client.save_state("arith-eval").result().path, 0, [])
    write_config(run, config)
    write_run_info(run, "arithmetic")

    assert cli_main(["eval", str(run)]) == 0
    record = json.loads((run / "checkpoints" / "eval-step-000000.json").read_text())
    assert record["recipe"] == "arithmetic" and record["step"] == 0

    _, held_out = arithmetic.split_problems(config.max_operand, config.seed)
    evaluate = arithmetic.make_evaluator(held_out, load_tokenizer(config.base_model), config)
    base = anyio.run(evaluate, SamplingClient(config.base_model), 0)
    assert record["metrics"] == pytest.approx(base, abs=1e-9)
    assert 0.0 <= base["eval/accuracy"] <= 1.0

"""Unmodified tinker-cookbook recipes train against `mint-rl serve`: the cookbook matrix.

One server (in this process, so its samplers share the session's vLLM engine); each recipe runs
by its own entry point, configured only by its own options and TINKER_BASE_URL / TINKER_API_KEY,
for a step or a few (`cookbook_runner.plan`). Nothing is downloaded: math_rl, guess_number,
text_arena and twenty_questions make their own problems, preference/shorter has a built-in
preference model, chat_sl and prompt_distillation read the cookbook's bundled conversations, DPO
reads local comparisons. twenty_questions' answerer is a hub name hard-coded in the recipe, served
by `--model-alias` (ServerConfig.model_aliases) from a local folder.

SmolLM2's chat template is ChatML, which the cookbook's `qwen3_instruct` renderer writes token
for token (without SmolLM2's default system prompt). rubric is not run here: its judge's answers
are capped at 2048 tokens (hard-coded), minutes per step on a CPU; `docs/cookbook.md` has its
command.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tinker_cookbook
from cookbook_runner import ANSWERER, answerer_stand_in, plan, write_comparisons
from helpers import served

from mint_rl.models import DEFAULT_MODEL, hub_cache_entry, resolve_model
from mint_rl.server import ServerConfig, create_app

# The recipes' own needs (installed by .ci/setup): a missing one fails here, not halfway.
for _module in ("tinker", "math_verify", "pylatexenc", "textarena"):
    importlib.import_module(_module)

KEY = "tml-cookbook"
RUNNER = Path(__file__).with_name("cookbook_runner.py")
FULL = os.environ.get("MINT_RL_COOKBOOK_FULL") == "1"  # + twenty_questions and rubric (slow)
RECIPES = [item["name"] for item in plan(DEFAULT_MODEL, Path("."), Path("."), full=FULL)]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return answerer_stand_in(resolve_model(DEFAULT_MODEL), tmp_path_factory.mktemp("answerer"))


@pytest.fixture(scope="module")
def server(sampler_engine, stand_in) -> Iterator[str]:
    config = ServerConfig(api_key=KEY, model_aliases=((ANSWERER, str(stand_in)),))
    with served(create_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def matrix(server, stand_in, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """Runs every recipe of the plan once; (status and seconds by recipe, their log folder)."""
    out = tmp_path_factory.mktemp("cookbook")
    hf_home = out / "hf"
    # The cookbook loads tokenizers by hub name, from the hub cache here (HF_HUB_OFFLINE=1).
    hub_cache_entry(DEFAULT_MODEL, resolve_model(DEFAULT_MODEL), hf_home=hf_home)
    hub_cache_entry(ANSWERER, stand_in, hf_home=hf_home)
    write_comparisons(out / "comparisons.jsonl")
    items = plan(DEFAULT_MODEL, Path(tinker_cookbook.__file__).parent, out, full=FULL)
    (out / "plan.json").write_text(json.dumps(items))
    env = {**os.environ, "TINKER_BASE_URL": server, "TINKER_API_KEY": KEY,
           "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(RUNNER), str(out / "plan.json"),
                           str(out / "results.json")],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads((out / "results.json").read_text()), out


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_through_the_server(matrix, name: str) -> None:
    results, out = matrix
    assert results[name]["status"] == "ok", results[name]["status"]
    rows = _rows(out / name)
    assert rows, "no metrics"
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                assert math.isfinite(value), (key, value)
        if "grad_norm:mean" in row:  # a step that trained (RL drops groups of equal rewards)
            assert row["step:max"] == row["step"] + 1  # one optim_step per recipe step
    # (an RL step whose rewards were all equal has a zero gradient: >= 0, not > 0)
    assert any("grad_norm:mean" in row or "dpo_loss" in row for row in rows), "no step trained"
    # every recipe ends with a checkpoint in the server's storage
    final = json.loads((out / name / "checkpoints.jsonl").read_text().splitlines()[-1])
    assert final["state_path"].startswith("tinker://")


@pytest.mark.slow
def test_math_rl_samples_on_the_weights_it_trains(matrix, server) -> None:
    results, out = matrix
    steps = [row for row in _rows(out / "math_rl") if "env/all/reward/total" in row]
    assert [row["step"] for row in steps] == [0, 1]  # one row per step
    for row in steps:
        # arithmetic rewards: 1 if right, minus 0.1 without the stop token
        assert -0.1 <= row["env/all/reward/total"] <= 1.0
        assert row["env/all/total_episodes"] == 2 * 4
        # the sampler's logprobs of its own tokens match the learner's: sampling ran on the
        # weights being trained (a stale or wrong adapter shows here first)
        assert abs(row["optim/kl_sample_train_v1"]) < 1e-2
        assert 0 <= row["optim/kl_sample_train_v2"] < 1e-3
        assert math.isfinite(row["optim/entropy"]) and row["optim/entropy"] > 0

    # the recipe's final checkpoint, listed on the OpenAI endpoint and sampled there
    final = json.loads((out / "math_rl" / "checkpoints.jsonl").read_text().splitlines()[-1])
    headers = {"Authorization": f"Bearer {KEY}"}
    listed = httpx.get(f"{server}/v1/models", headers=headers).json()["data"]
    assert final["sampler_path"] in {m["id"] for m in listed}
    reply = httpx.post(f"{server}/v1/chat/completions", headers=headers, timeout=600, json={
        "model": final["sampler_path"], "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "What is 4 + 5?"}]})
    assert reply.status_code == 200, reply.text
    assert 1 <= reply.json()["usage"]["completion_tokens"] <= 4


@pytest.mark.slow
def test_async_math_rl_trains_on_samples_one_step_old(matrix) -> None:
    results, out = matrix
    steps = [row for row in _rows(out / "math_rl_async") if "env/all/reward/total" in row]
    assert [row["step"] for row in steps] == [0, 1]
    config = json.loads((out / "math_rl_async" / "config.json").read_text())
    assert config["async_config"]["max_steps_off_policy"] == 1
    assert config["loss_fn"] == "stable_reinforce"


@pytest.mark.slow
def test_dpo_on_local_comparisons_learns_the_preferred_answer(matrix) -> None:
    results, out = matrix
    rows = [row for row in _rows(out / "dpo") if "dpo_loss" in row]
    assert len(rows) == 2
    # the first step starts at the reference model: DPO's loss is log 2 there
    assert rows[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-3)
    # one step later the preferred answers are more likely than the refusals, against the
    # reference, on pairs the first step did not see
    assert rows[1]["margin"] > 0 and rows[1]["dpo_loss"] < rows[0]["dpo_loss"]


@pytest.mark.slow
def test_weights_download_of_a_recipe_result_is_a_peft_adapter(matrix, server, tmp_path,
                                                              monkeypatch) -> None:
    from peft import LoraConfig
    from tinker_cookbook import weights

    results, out = matrix
    final = json.loads((out / "chat_sl" / "checkpoints.jsonl").read_text().splitlines()[-1])
    monkeypatch.setenv("TINKER_API_KEY", KEY)  # weights.download's own client reads it
    folder = weights.download(tinker_path=final["state_path"], output_dir=str(tmp_path / "dl"),
                              base_url=server)
    config = LoraConfig.from_pretrained(folder)
    assert isinstance(config, LoraConfig) and config.r == 8
    assert (Path(folder) / "adapter_model.safetensors").stat().st_size > 0

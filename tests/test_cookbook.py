"""An unmodified tinker-cookbook recipe trains against `mint-rl serve`.

The recipe is the cookbook's math RL loop on its arithmetic environment (addition problems it
generates: nothing to download), run by its own entry point in a subprocess, configured only by
its own command-line options and TINKER_BASE_URL / TINKER_API_KEY. The server runs in this
process, so its samplers share the session's vLLM engine.

SmolLM2's chat template is ChatML, which the cookbook's `qwen3_instruct` renderer writes token
for token (without SmolLM2's default system prompt).
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

import httpx
import pytest
from helpers import served

from mint_rl.models import DEFAULT_MODEL, hub_cache_entry, resolve_model
from mint_rl.server import ServerConfig, create_app

# The recipe's own needs (installed by .ci/setup): a missing one fails here, not halfway.
for _module in ("tinker", "tinker_cookbook", "math_verify", "pylatexenc"):
    importlib.import_module(_module)

KEY = "tml-cookbook"
STEPS = 3
RECIPE = "tinker_cookbook.recipes.math_rl.train"


@pytest.fixture(scope="module")
def server(sampler_engine) -> Iterator[str]:
    with served(create_app(ServerConfig(api_key=KEY))) as url:
        yield url


def _run_recipe(server: str, log_path: Path, hf_home: Path) -> None:
    options = {
        "model_name": DEFAULT_MODEL, "renderer_name": "qwen3_instruct", "env": "arithmetic",
        "group_size": 4, "groups_per_batch": 2, "max_steps": STEPS, "max_tokens": 5,
        "lora_rank": 8, "learning_rate": 1e-4, "loss_fn": "importance_sampling",
        "eval_every": 0, "save_every": 0, "log_path": log_path,
        "behavior_if_log_dir_exists": "delete",
    }
    env = {**os.environ, "TINKER_BASE_URL": server, "TINKER_API_KEY": KEY,
           "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", RECIPE, *(f"{k}={v}" for k, v in options.items())],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


@pytest.mark.slow
def test_math_rl_recipe_trains_through_the_server(server, tmp_path) -> None:
    log_path = tmp_path / "math_rl"
    # The cookbook loads its tokenizer by model id from the hub cache (HF_HUB_OFFLINE=1).
    hub_cache_entry(DEFAULT_MODEL, resolve_model(DEFAULT_MODEL), hf_home=tmp_path / "hf")
    _run_recipe(server, log_path, tmp_path / "hf")

    rows = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "env/all/reward/total" in row]
    assert [row["step"] for row in steps] == list(range(STEPS))  # one row per step
    for row in steps:
        # one optim_step on the server per recipe step, with a real gradient
        assert row["step:max"] == row["step"] + 1
        assert math.isfinite(row["grad_norm:mean"]) and row["grad_norm:mean"] > 0
        # arithmetic rewards: 1 if right, minus 0.1 without the stop token
        assert -0.1 <= row["env/all/reward/total"] <= 1.0
        assert row["env/all/total_episodes"] == 2 * 4
        # the sampler's logprobs of its own tokens match the learner's: sampling ran on the
        # weights being trained (a stale or wrong adapter shows here first)
        assert abs(row["optim/kl_sample_train_v1"]) < 1e-2
        assert 0 <= row["optim/kl_sample_train_v2"] < 1e-3
        assert math.isfinite(row["optim/entropy"]) and row["optim/entropy"] > 0

    # the recipe's final checkpoint lives in the server's storage, and any OpenAI client can
    # sample it
    final = json.loads((log_path / "checkpoints.jsonl").read_text().splitlines()[-1])
    headers = {"Authorization": f"Bearer {KEY}"}
    listed = httpx.get(f"{server}/v1/models", headers=headers).json()["data"]
    assert final["sampler_path"] in {m["id"] for m in listed}
    reply = httpx.post(f"{server}/v1/chat/completions", headers=headers, timeout=600, json={
        "model": final["sampler_path"], "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "What is 4 + 5?"}]})
    assert reply.status_code == 200, reply.text
    assert 1 <= reply.json()["usage"]["completion_tokens"] <= 4

"""Faults inside a run, on the real stack (vLLM sampler, peft learner, default model):
an env that raises or hangs restarts its sampler and its group is sampled again; a learner
failure checkpoints and stops the run with a message saying how to resume. Each run must still
train every batch, each step once. (A sampler's engine process killed mid-run:
tests/test_several_samplers.py.)"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from run_helpers import SMALL
from run_helpers import failures as _failures
from run_helpers import rows as _rows

from mint_rl.cli import main

pytestmark = pytest.mark.slow

_FAULTY_RECIPE = textwrap.dedent('''
    """One-word replies, with faults on purpose, each once per run folder (a marker file
    remembers it, across sampler restarts and resumes): `raise` (an env raises), `hang` (an
    env hangs until the run's env timeout), `learner` (the learner gets a batch it cannot train
    on, at step 2)."""
    import random
    from dataclasses import dataclass
    from pathlib import Path

    import anyio

    from mint_rl import types
    from mint_rl.run.config import RLConfig, option
    from mint_rl.run.train import TrainingRun, load_tokenizer
    from mint_rl.rl.types import StepResult


    @dataclass(frozen=True)
    class Config(RLConfig):
        faults: str = option("", "comma-separated: raise, hang, learner")


    def once(config, log_dir, fault):
        """True the first time `fault` is asked for in this run folder."""
        marker = Path(log_dir) / f"fault-{fault}.done"
        if fault not in config.faults.split(",") or marker.exists():
            return False
        marker.touch()
        return True


    class OneWordEnv:
        def __init__(self, tokenizer, prompt, config, log_dir):
            self.tokenizer, self.prompt, self.config, self.log_dir = (tokenizer, prompt, config,
                                                                      log_dir)

        async def initial_observation(self):
            return self.prompt

        async def step(self, action):
            if once(self.config, self.log_dir, "raise"):
                raise RuntimeError("the reward function broke")
            # After step 0 (its metrics row is written): not in the group the raise cancels.
            trained = Path(self.log_dir) / "metrics.jsonl"
            if trained.exists() and trained.stat().st_size and once(self.config, self.log_dir,
                                                                    "hang"):
                await anyio.sleep(3600)
            reply = self.tokenizer.decode(action, skip_special_tokens=True).split()
            return StepResult(reward=1.0 if len(reply) == 1 else 0.0, episode_done=True)


    @dataclass(frozen=True)
    class Group:
        tokenizer: object
        word: str
        config: Config
        log_dir: Path

        async def make_envs(self):
            messages = [{"role": "user", "content": f"Say a word that rhymes with {self.word}."}]
            prompt = list(self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False))
            return [OneWordEnv(self.tokenizer, prompt, self.config, self.log_dir)
                    for _ in range(self.config.group_size)]

        def logging_tag(self):
            return "one-word"


    class Dataset:
        def __init__(self, tokenizer, config, log_dir):
            self.tokenizer, self.config, self.log_dir = tokenizer, config, log_dir

        def get_batch(self, index):
            rng = random.Random(index)
            return [Group(self.tokenizer, rng.choice(["cat", "blue", "tree"]), self.config,
                          self.log_dir) for _ in range(self.config.groups_per_batch)]

        def __len__(self):
            return self.config.steps


    def main(config, log_dir):
        dataset = Dataset(load_tokenizer(config.base_model), config, log_dir)

        async def run_all():
            async with TrainingRun.open(config, log_dir) as run:
                async def advantages(groups):
                    batch = await run.advantage.build(groups)
                    if groups[0].batch_index == 2 and once(config, log_dir, "learner"):
                        tokens = types.ModelInput.from_ints([1, 2, 3])  # no advantages
                        batch.datums[:] = [types.Datum(model_input=tokens, loss_fn_inputs={
                            "target_tokens": [2, 3, 4], "logprobs": [-1.0] * 3})]
                    return batch

                await run.train(dataset, compute_advantages=advantages)

        anyio.run(run_all)
''')


def _assert_every_batch_trained_once(rows: list[dict], steps: int, groups: int) -> None:
    assert [r["step"] for r in rows if "groups/trained" in r] == list(range(steps))
    for r in rows:
        if "groups/trained" in r:  # K = 0: step s trains exactly batch s, all of it
            assert r["groups/trained"] == groups
            assert r["groups/oldest_batch"] == r["groups/newest_batch"] == r["step"]
            assert r["staleness/max"] == 0


def test_env_faults_restart_the_sampler_and_a_learner_failure_stops_resumably(
        sampler_engine, tmp_path: Path, capsys) -> None:
    """Step 0: an env raises; then one hangs: each crashes the sampler, which is restarted
    with the current weights, and its groups are sampled again. Step 2: the learner fails: the
    run checkpoints two steps and stops, saying how to resume; the same command finishes it."""
    recipe = tmp_path / "faulty.py"
    recipe.write_text(_FAULTY_RECIPE)
    run_dir = tmp_path / "run"
    command = ["run", str(recipe), "--log-dir", str(run_dir), "--steps", "4", *SMALL,
               "--faults", "raise,hang,learner", "--env-timeout-s", "5"]
    assert main(command) == 1
    assert "the learner failed at step 2" in " ".join(capsys.readouterr().out.split())
    assert all((run_dir / f"fault-{f}.done").exists() for f in ("raise", "hang", "learner"))
    rows = _rows(run_dir)
    _assert_every_batch_trained_once(rows, steps=2, groups=2)
    assert rows[-1]["groups/resampled"] >= 2  # the failing groups, and any in flight with them
    assert [(f["actor"], f["action"], f["error_type"]) for f in _failures(run_dir)] == [
        ("sampler", "restart", "RuntimeError"), ("sampler", "restart", "EnvTimeoutError")]
    manifest = json.loads((run_dir / "checkpoints" / "step-000002.json").read_text())
    assert manifest["step"] == 2 and 2 in manifest["pending_batches"]
    assert not sampler_engine.closed and not sampler_engine.dead  # taken over, not replaced

    assert main(command) == 0  # resumes at step 2; each fault happened once already
    _assert_every_batch_trained_once(_rows(run_dir), steps=4, groups=2)

"""The RL pipeline end to end on the real stack: vLLM sampler, peft learner, default model.

The runs reuse the session's vLLM engine (the sampler actor resets its versions instead of
starting one), so K = 1 runs on shared cores here: split cores would need an engine of its own.
"""

from __future__ import annotations

import json

import pytest

from mint_rl.recipes.arithmetic import AdditionDataset, Config, make_evaluator, split_problems
from mint_rl.rl.train import load_tokenizer, train


def _train(cfg: Config, log_dir):
    tokenizer = load_tokenizer(cfg.base_model)
    train_set, eval_set = split_problems(cfg.max_operand, cfg.seed)
    return train(cfg, AdditionDataset(train_set, tokenizer, cfg), log_dir,
                 evaluate=make_evaluator(eval_set, tokenizer, cfg))


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1])
def test_arithmetic_pipeline_runs_with_bounded_staleness(sampler_engine, tmp_path, k):
    cfg = Config(steps=3, max_steps_off_policy=k, groups_per_batch=3, group_size=4,
                 max_tokens=4, eval_every=2, eval_samples=1, save_every=2, lr=1e-3,
                 cpus="shared")
    state = _train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    assert [r["step"] for r in steps] == [0, 1, 2]
    assert state.learner_policy_version == 3 and state.sampler_policy_version == 3
    for r in steps:
        assert r["staleness/max"] <= k
        assert 0.0 <= r["reward/mean"] <= 1.0
        for key in ("staleness/mean", "time/step", "time/sample_wait", "time/train"):
            assert key in r
        if k == 0 and r["datums"]:
            # On-policy, fp32: the sampler's behaviour logprobs are the learner's.
            assert abs(r["kl/sampler_learner"]) < 1e-3
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]
    # A checkpoint at step 2, from which the run resumes.
    manifests = sorted((tmp_path / "checkpoints").glob("step-*.json"))
    assert [m.name for m in manifests] == ["step-000002.json"]
    record = json.loads(manifests[-1].read_text())
    assert record["step"] == 2 and record["policy_version"] == 2
    # Batch 2 may have started sampling before the checkpoint was written (on policy 1 at K = 1,
    # on policy 2 once loaded at K = 0): it is recorded, and the resumed run samples it again.
    assert record["pending_batches"] in ([], [2])
    assert record["files"]  # checksums of the learner state
    resumed_cfg = Config(**{**cfg.__dict__, "steps": 4})
    state = _train(resumed_cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Steps past the checkpoint are replaced, not repeated: every step appears once.
    assert [r["step"] for r in rows if "time/step" in r] == [0, 1, 2, 3]
    assert state.learner_policy_version == 4
    assert not sampler_engine.closed  # reused, not restarted

"""The RL pipeline end to end on the real stack: vLLM sampler, peft learner, default model.

The runs reuse the session's vLLM engine (the sampler actor resets its versions instead of
starting one), so K = 1 runs on shared cores here: split cores would need an engine of its own.
"""

from __future__ import annotations

import itertools
import json

import anyio
import pytest

from mint_rl.recipes.arithmetic import AdditionDataset, Config, make_evaluator, split_problems
from mint_rl.rl.types import TrajectoryGroup
from mint_rl.run.train import TrainingRun, load_tokenizer, train


def _train(cfg: Config, log_dir):
    tokenizer = load_tokenizer(cfg.base_model)
    train_set, eval_set = split_problems(cfg.max_operand, cfg.seed)
    return train(cfg, AdditionDataset(train_set, tokenizer, cfg), log_dir,
                 evaluate=make_evaluator(eval_set, tokenizer, cfg))


def _train_recording(cfg: Config, log_dir, sampled: list[TrajectoryGroup],
                     trained: list[tuple[int, TrajectoryGroup]]):
    """`_train`, recording every group sampled (a stage sees it before the pipeline's staleness
    check) and every group trained, with the learner's version when it was trained."""
    tokenizer = load_tokenizer(cfg.base_model)
    train_set, eval_set = split_problems(cfg.max_operand, cfg.seed)

    async def run_all():
        async with TrainingRun.open(cfg, log_dir) as run:
            assert run.advantage is not None
            build, version = run.advantage.build, itertools.count(run.start_step)

            async def record(group: TrajectoryGroup) -> TrajectoryGroup:
                sampled.append(group)
                return group

            async def advantages(groups: list[TrajectoryGroup]):
                v = next(version)  # step s trains on policy version s
                trained.extend((v, g) for g in groups)
                return await build(groups)

            return await run.train(AdditionDataset(train_set, tokenizer, cfg),
                                   evaluate=make_evaluator(eval_set, tokenizer, cfg),
                                   stages=[record], compute_advantages=advantages)

    return anyio.run(run_all)


def _stamps(group: TrajectoryGroup) -> list[int]:
    return [v for tr in group.trajectories for t in tr.transitions for v in t.policy_versions]


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1])
def test_arithmetic_pipeline_runs_with_bounded_staleness(sampler_engine, tmp_path, k):
    cfg = Config(steps=3, max_steps_off_policy=k, groups_per_batch=3, group_size=4,
                 max_tokens=4, eval_every=2, eval_samples=1, save_every=2, lr=1e-3,
                 cpus="shared")
    sampled: list[TrajectoryGroup] = []
    trained: list[tuple[int, TrajectoryGroup]] = []
    state = _train_recording(cfg, tmp_path, sampled, trained)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    assert [r["step"] for r in steps] == [0, 1, 2]
    assert state.learner_policy_version == 3 and state.sampler_policy_version == 3
    _check_sampled_trained_and_dropped(steps, sampled, trained, k, cfg.groups_per_batch)
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


def _check_sampled_trained_and_dropped(steps: list[dict], sampled: list[TrajectoryGroup],
                                       trained: list[tuple[int, TrajectoryGroup]], k: int,
                                       groups_per_batch: int) -> None:
    """The metrics are computed after stale groups were dropped: check the tokens themselves."""
    # Every token trained at learner version v was sampled by a version in [v - K, v] (at K = 0:
    # exactly v), and staleness/max is what those stamps say.
    for r in steps:
        at_step = [g for v, g in trained if v == r["step"]]
        assert len(at_step) == r["groups/trained"] == groups_per_batch
        stamps = [v for g in at_step for v in _stamps(g)]
        assert stamps and all(r["step"] - k <= v <= r["step"] for v in stamps)
        assert r["staleness/max"] == r["step"] - min(stamps)
        assert r["groups/filtered"] == 0
    # Pacing: every group sampled, whether trained or dropped, started within K of its batch.
    assert all(min(_stamps(g)) >= g.batch_index - k for g in sampled)
    # Nothing lost: sampled = trained + dropped as stale (each re-sampled once).
    assert len(sampled) == len(trained) + steps[-1]["groups/dropped_stale"]
    if k == 0:  # on-policy: batch s is sampled and trained by version s, nothing is dropped
        assert all(r["groups/dropped_stale"] == 0 for r in steps)
        assert all(g.batch_index == v and set(_stamps(g)) == {v} for v, g in trained)

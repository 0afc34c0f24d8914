"""Rolling out env groups with a sampler: observation -> sample -> env.step, until done."""

from __future__ import annotations

import dataclasses

import anyio

from mint_rl import types
from mint_rl.errors import EnvTimeoutError
from mint_rl.rl.types import (
    Env,
    EnvGroupBuilder,
    Sampler,
    StepResult,
    Trajectory,
    TrajectoryGroup,
    Transition,
)


async def rollout(env: Env, sampler: Sampler, params: types.SamplingParams, max_turns: int = 16,
                  seed: int | None = None, env_timeout_s: float | None = None) -> Trajectory:
    """One episode. Each turn samples once; the env decides the reward and whether to go on.
    With `seed`, turn t samples with seed + t: the episode is reproducible. An `env.step` (the
    reward, the next observation) running past `env_timeout_s` raises EnvTimeoutError."""
    observation = await env.initial_observation()
    transitions: list[Transition] = []
    for turn in range(max_turns):
        turn_params = params if seed is None else dataclasses.replace(params, seed=seed + turn)
        response = await sampler.sample_async(types.ModelInput.from_ints(observation), 1,
                                              turn_params)
        seq = response.sequences[0]
        result = await _step(env, list(seq.tokens), env_timeout_s)
        versions = seq.policy_versions or [sampler.policy_version] * len(seq.tokens)
        transitions.append(Transition(
            observation=list(observation), action=list(seq.tokens),
            logprobs=list(seq.logprobs or []), policy_versions=list(versions),
            reward=result.reward))
        if result.episode_done or result.next_observation is None:
            break
        observation = result.next_observation
    return Trajectory(transitions)


async def _step(env: Env, action: list[int], timeout_s: float | None) -> StepResult:
    with anyio.move_on_after(timeout_s) as scope:
        return await env.step(action)
    assert scope.cancelled_caught
    raise EnvTimeoutError(f"{type(env).__name__}.step took longer than {timeout_s} s "
                          "(env_timeout_s): a reward function that hangs?")


async def rollout_group(builder: EnvGroupBuilder, sampler: Sampler, params: types.SamplingParams,
                        batch_index: int, seed: int | None = None,
                        env_timeout_s: float | None = None) -> TrajectoryGroup:
    """All envs of a group at once: the engine batches their requests. With `seed`, env i's
    episode is seeded with seed + 1000 * i (its turns count up from there)."""
    envs = list(await builder.make_envs())
    trajectories: list[Trajectory | None] = [None] * len(envs)

    async def one(i: int) -> None:
        trajectories[i] = await rollout(envs[i], sampler, params,
                                        seed=None if seed is None else seed + 1000 * i,
                                        env_timeout_s=env_timeout_s)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(envs)):
                tg.start_soon(one, i)
    except BaseExceptionGroup as group:
        # One env failed and the others were cancelled: report that env's error itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return TrajectoryGroup([t for t in trajectories if t is not None], batch_index,
                           builder.logging_tag())

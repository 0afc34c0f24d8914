"""The guess_number recipe: the game's rules and transitions, the tokens a multi-turn game trains
(the model's replies only, with their behaviour logprobs), a real game on vLLM, and a short run of
`mint-rl run guess_number` (then `mint-rl eval`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from mint_rl.cli import main
from mint_rl.errors import InvalidInputError
from mint_rl.recipes.guess_number import (
    ChatTurns,
    Config,
    GuessDataset,
    GuessEnv,
    example_game,
    example_secret,
    feedback,
    opening,
    parse_guess,
    split_secrets,
    win_reward,
)
from mint_rl.rl.data import trajectory_datums
from mint_rl.rl.types import Trajectory, Transition


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def reply(tokenizer: Any, text: str, finished: bool = True) -> list[int]:
    """The tokens of a model reply; a finished one ends with the end-of-turn token."""
    return tokenizer.encode(text, add_special_tokens=False) + (
        [tokenizer.eos_token_id] if finished else [])


def rendered(tokenizer: Any, cfg: Config, turns: list[tuple[str, str]]) -> str:
    """The conversation (model reply, env message) ... as the chat template writes it."""
    messages = opening(cfg.max_number, cfg.max_turns)
    for model, env in turns:
        messages += [{"role": "assistant", "content": model}, {"role": "user", "content": env}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def play(env: GuessEnv, actions: list[list[int]]) -> list[Any]:
    async def go() -> list[Any]:
        return [await env.step(a) for a in actions]

    return anyio.run(go)


# ------------------------------------------------------------------------------------------------
# The rules


def test_feedback_guesses_and_rewards() -> None:
    assert [feedback(g, 7, 10) for g in (3, 9, 7)] == ["Higher.", "Lower.", "Correct!"]
    assert feedback(None, 7, 10) == "Please reply with a number from 1 to 10."
    assert [parse_guess(r) for r in ("5", "My guess is 8.", "I guess 3, or 4", "five")] == [
        5, 8, 3, None]
    assert [win_reward(t, 5) for t in range(1, 6)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


def test_the_example_game_halves_the_range_until_correct() -> None:
    assert example_game(10) == [(5, "Higher."), (8, "Lower."), (6, "Higher."), (7, "Correct!")]
    for n in (2, 3, 16, 100):
        moves = example_game(n)
        assert moves[-1] == (example_secret(n), "Correct!")
        assert len(moves) <= n.bit_length()  # binary search: at most log2(n) + 1 guesses


def test_bad_options_are_named() -> None:
    for options, field in [({"max_number": 1}, "max_number"), ({"max_turns": 0}, "max_turns"),
                           ({"max_turns": 17}, "max_turns"),
                           ({"invalid_penalty": -0.1}, "invalid_penalty"),
                           ({"eval_samples": 0}, "eval_samples")]:
        with pytest.raises(InvalidInputError) as e:
            Config(**options)
        assert e.value.field == field


def test_held_out_secrets_are_never_played_in_training() -> None:
    train, held = split_secrets(10, seed=0)
    assert len(held) == 3 and sorted(train + held) == list(range(1, 11))
    assert example_secret(10) in train  # the prompt shows it: never held out
    cfg = Config(groups_per_batch=8, steps=30)
    dataset = GuessDataset(train, None, cfg)  # no chat needed: batches name secrets only
    played = {g.secret for i in range(len(dataset)) for g in dataset.get_batch(i)}
    assert played <= set(train) and not played & set(held)
    assert [g.secret for g in dataset.get_batch(4)] == [g.secret for g in dataset.get_batch(4)]


# ------------------------------------------------------------------------------------------------
# Transitions


def test_a_game_feeds_back_each_guess_as_the_next_user_message(tokenizer: Any) -> None:
    cfg = Config(max_number=10, max_turns=5, invalid_penalty=0.1)
    env = GuessEnv(ChatTurns(tokenizer), secret=7, cfg=cfg)
    first = anyio.run(env.initial_observation)
    assert tokenizer.decode(first) == rendered(tokenizer, cfg, [])
    guesses = [reply(tokenizer, "5"), reply(tokenizer, "nine", finished=False),
               reply(tokenizer, "9"), reply(tokenizer, "7")]
    results = play(env, guesses)
    assert [r.episode_done for r in results] == [False, False, False, True]
    assert [r.reward for r in results] == pytest.approx([0.0, -0.1, 0.0, win_reward(4, 5)])
    assert env.won and env.turns == 4
    # Each next prompt is the conversation so far, the model's tokens exactly as sampled (a reply
    # cut at max_tokens gets its end-of-turn token from the env), as the chat template renders it.
    said = [("5", "Higher."), ("nine", "Please reply with a number from 1 to 10."),
            ("9", "Lower.")]
    context = first
    for i, (result, action) in enumerate(zip(results[:3], guesses, strict=False)):
        assert result.next_observation[: len(context) + len(action)] == context + action
        assert tokenizer.decode(result.next_observation) == rendered(tokenizer, cfg,
                                                                     said[: i + 1])
        context = result.next_observation
    assert results[3].next_observation is None


def test_a_game_ends_unrewarded_after_max_turns(tokenizer: Any) -> None:
    cfg = Config(max_number=10, max_turns=3)
    env = GuessEnv(ChatTurns(tokenizer), secret=2, cfg=cfg)
    anyio.run(env.initial_observation)
    results = play(env, [reply(tokenizer, "5"), reply(tokenizer, "1"), reply(tokenizer, "3")])
    assert [r.episode_done for r in results] == [False, False, True]
    assert [r.reward for r in results] == [0.0, 0.0, 0.0]
    assert not env.won and env.turns == 3


def test_the_rl_step_bench_plays_the_recipes_game(tokenizer: Any) -> None:
    """bench/bench_rl.py restates the rules for TRL's child (which cannot import mint_rl): its
    turns must score, answer and extend the conversation exactly as GuessEnv does (less the
    bench's 0.001 per character, which breaks ties)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import bench_rl
    finally:
        sys.path.pop(0)
    cfg = Config(max_number=bench_rl.GAME_MAX_NUMBER, max_turns=bench_rl.GAME_TURNS)
    for secret, texts in [(7, ["5", "nine", "9", "7"]), (2, ["5", "1", "3", "4", "x"])]:
        env = GuessEnv(ChatTurns(tokenizer), secret=secret, cfg=cfg)
        context = anyio.run(env.initial_observation)
        for turn, text in enumerate(texts, 1):
            action = reply(tokenizer, text, finished=turn % 2 == 1)
            result = play(env, [action])[0]
            score, answer = bench_rl.game_turn(text, secret, turn)
            assert score - 0.001 * len(text) == pytest.approx(result.reward)
            assert (answer is None) == result.episode_done
            if answer is not None:
                assert result.next_observation == (
                    context + action + bench_rl.next_user_tokens(tokenizer, action, answer))
                context = result.next_observation


def test_a_multi_turn_datum_trains_only_the_models_tokens(tokenizer: Any) -> None:
    cfg = Config(max_number=10, max_turns=5)
    env = GuessEnv(ChatTurns(tokenizer), secret=7, cfg=cfg)
    observation = anyio.run(env.initial_observation)
    transitions = []
    actions = [reply(tokenizer, "5"), reply(tokenizer, "8", finished=False),
               reply(tokenizer, "7")]
    for turn, action in enumerate(actions):
        # Behaviour logprobs as a sampler returns them: one per sampled token, all distinct.
        logprobs = [-(turn + 1) - 0.01 * k for k in range(len(action))]
        result = play(env, [action])[0]
        transitions.append(Transition(observation, action, logprobs, [turn] * len(action),
                                      result.reward))
        observation = result.next_observation
    (datum,) = trajectory_datums(Trajectory(transitions), advantage=0.5)
    x = {k: v.tolist() for k, v in datum.loss_fn_inputs.items()}
    tokens = datum.model_input.to_ints() + x["target_tokens"][-1:]
    assert tokens == transitions[-1].observation + actions[-1]  # the whole game, once

    trained = [i for i, w in enumerate(x["weights"]) if w > 0]
    assert [x["target_tokens"][i] for i in trained] == [t for a in actions for t in a]
    assert [x["logprobs"][i] for i in trained] == pytest.approx(
        [lp for t in transitions for lp in t.logprobs])
    assert all(x["advantages"][i] == 0.5 for i in trained)
    untrained = [i for i in range(len(x["weights"])) if i not in trained]
    assert all(x["weights"][i] == 0 and x["advantages"][i] == 0 and x["logprobs"][i] == 0
               for i in untrained)
    # The env's words ("Higher.", the end-of-turn token it adds after the cut reply) are there,
    # untrained.
    higher = tokenizer.encode("Higher.", add_special_tokens=False)
    targets = x["target_tokens"]
    at = next(i for i in range(len(targets)) if targets[i: i + len(higher)] == higher)
    assert all(x["weights"][i] == 0 for i in range(at, at + len(higher)))
    cut_end = len(transitions[1].observation) + len(actions[1]) - 1  # target i is token i+1
    assert targets[cut_end] == tokenizer.eos_token_id and x["weights"][cut_end] == 0


# ------------------------------------------------------------------------------------------------
# On the real stack


@pytest.mark.slow
def test_real_games_train_the_sampled_tokens_with_their_behaviour_logprobs(sampler_engine) -> None:
    from mint_rl import types
    from mint_rl.models import DEFAULT_MODEL
    from mint_rl.rl.rollout import rollout
    from mint_rl.run.train import sampling_params
    from mint_rl.sampler.sampling_client import SamplingClient

    client = SamplingClient(DEFAULT_MODEL)
    chat = ChatTurns(client.get_tokenizer())
    cfg = Config(max_tokens=6, max_turns=3)
    played: list[Trajectory] = []

    async def games() -> None:
        async def one() -> None:
            env = GuessEnv(chat, 10, cfg)  # the largest secret: a first guess rarely finds it
            played.append(await rollout(env, client, sampling_params(cfg, chat.tokenizer)))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)

    anyio.run(games)
    multi = [g for g in played if len(g.transitions) >= 2]
    assert multi, "no game lasted two turns"
    for game in multi:
        (datum,) = trajectory_datums(game, advantage=1.0)
        x = {k: v.tolist() for k, v in datum.loss_fn_inputs.items()}
        trained = [i for i, w in enumerate(x["weights"]) if w > 0]
        assert [x["target_tokens"][i] for i in trained] == [
            t for step in game.transitions for t in step.action]
        behaviour = [x["logprobs"][i] for i in trained]
        assert behaviour == pytest.approx([lp for t in game.transitions for lp in t.logprobs])
        # The same weights score the whole game's tokens as the sampler did, token by token.
        tokens = datum.model_input.to_ints() + x["target_tokens"][-1:]
        scored = client.compute_logprobs(types.ModelInput.from_ints(tokens)).result()
        assert [scored[i + 1] for i in trained] == pytest.approx(behaviour, abs=1e-3)


@pytest.mark.slow
def test_guess_number_runs_from_the_command_line_and_evaluates_its_checkpoint(
        sampler_engine, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = main(["run", "guess_number", "--log-dir", str(run), "--steps", "2",
                 "--groups-per-batch", "2", "--group-size", "3", "--max-turns", "2",
                 "--max-tokens", "4", "--eval-every", "0", "--eval-samples", "1",
                 "--save-every", "2"])
    assert code == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert all(-0.2 - 1e-9 <= r["reward/mean"] <= 1.0 for r in rows)
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples
    for s in samples:  # the logged reward follows the rule, turn by turn
        replies = s["completion"].split(" ⏎ ")
        assert 1 <= len(replies) <= 2
        penalty = 0.1 * sum(parse_guess(r) is None for r in replies)
        possible = [win_reward(len(replies), 2) - penalty]
        if len(replies) == 2:
            possible.append(-penalty)  # the last guess may have missed too
        assert any(s["reward"] == pytest.approx(p) for p in possible), s

    # The held-out evaluation, through the recipe's evaluate_checkpoint, on step 2's adapter.
    assert main(["eval", str(run)]) == 0
    (record,) = [json.loads(p.read_text()) for p in (run / "checkpoints").glob("eval-*.json")]
    assert record["recipe"] == "guess_number" and record["step"] == 2
    metrics = record["metrics"]
    assert set(metrics) == {"eval/accuracy", "eval/mean_turns", "eval/reward"}
    # 3 held-out secrets, one game each, 2 turns at most: a lost game takes both turns.
    wins = metrics["eval/accuracy"] * 3
    assert wins == pytest.approx(round(wins))
    assert 2 - wins / 3 - 1e-9 <= metrics["eval/mean_turns"] <= 2.0

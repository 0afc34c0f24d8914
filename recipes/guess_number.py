"""Guess the number: a multi-turn game. SmolLM2-135M-Instruct learns to use "higher"/"lower".

The env picks a secret in [1, max_number]. Each turn the model replies with a guess (the first
whole number in its reply); the env answers "Higher.", "Lower." or "Correct!" as the next user
message, rendered with the model's chat template and appended to the conversation: the next
turn's prompt is the whole conversation so far, the model's own replies token for token. The
episode ends on a correct guess or after `max_turns` turns. Every game starts after an example
game (played by halving the range, against a secret that is never held out), shown as earlier
chat turns: without it the default model rarely replies with a bare number.

Reward: 1 - (turns - 1) / max_turns when the secret is found (1 on the first guess), 0 when it
is not, and `invalid_penalty` subtracted for each reply without a number. Fewer turns earn
more, so a strategy that halves the range beats scanning or guessing at random. The penalty
makes a reply without a number worse than a wrong guess (which at least narrows the range);
it is small (0.1, half of what one more turn costs a winner at 5 turns) so that it shapes the
replies without drowning the signal of winning. A whole game is one trajectory: its tokens
form one datum in which only the model's replies are trained (weight 1, their behaviour
logprobs, the game's advantage); the prompts and the env's messages have weight 0.

Held-out secrets (never played in training) are evaluated before, during and after training:
`eval/accuracy` is the fraction of games won, `eval/mean_turns` the turns a game took (a lost
game counts `max_turns`), `eval/reward` the mean reward.

    mint-rl run guess_number [--max-number 10] [--max-turns 5] [--steps 20] [--log-dir DIR]

Defaults: secrets 1..10 (3 held out: 2, 6 and 9 at seed 0), 5 turns, at most 6 new tokens per
reply, 4 secrets x 8 games per step, 20 steps, PPO, lr 1e-3, LoRA r16, K = 0, fp32; each
held-out secret played 8 times at T = 1, every 10 steps.

Measured here (2026-12-02, 2 cores shared with other jobs, load 4-13; `--learner-threads 1`,
otherwise defaults; stopped from outside at step 8 and resumed from its checkpoint by the same
command): games won on held-out secrets 0.42 (step 0) -> 0.58 (step 10) -> 0.67 (step 20); mean
turns 3.83 -> 3.50 -> 4.29; held-out reward 0.28 -> 0.42 -> 0.28; training reward/mean 0.25 ->
0.48 (mean of the last 5 steps). The model learns to open with 5 and to move the right way
after each answer, but by one after "Lower." (5, 4, 3, 2, 1): it finds more secrets, not faster.
By step 16 the 8 games of a secret were mostly identical, so most groups had constant rewards
and nothing to train on. Step time: median 73 s under that load (45-190 s).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mint_rl.errors import InvalidInputError
from mint_rl.rl.rollout import rollout
from mint_rl.rl.types import Sampler, StepResult
from mint_rl.run.config import RLConfig, option
from mint_rl.run.train import load_tokenizer, sampling_params, train
from mint_rl.sampler.sampling_client import SamplingClient

# rollout() plays at most this many turns (its default); a longer game would end unscored.
ROLLOUT_TURNS = 16


@dataclass(frozen=True)
class Config(RLConfig):
    max_number: int = option(10, "the secret is a whole number from 1 to this", at_least=2)
    max_turns: int = option(5, "guesses per game", at_least=1, at_most=ROLLOUT_TURNS)
    invalid_penalty: float = option(0.1, "reward subtracted for each reply without a number",
                                    at_least=0, at_most=1)
    eval_samples: int = option(8, "games per held-out secret", at_least=1)
    steps: int = option(20, "training steps (one optimizer step each)")
    groups_per_batch: int = option(4, "secrets per training step")
    eval_every: int = option(10, "evaluate every N steps (0 = never)")


# ------------------------------------------------------------------------------------------------
# The game


def question(max_number: int, max_turns: int) -> str:
    return (f"I am thinking of a whole number from 1 to {max_number}. Guess it! You have "
            f"{max_turns} guesses. After each guess I say Higher (my number is bigger), Lower "
            "(it is smaller) or Correct. Reply with just your guess, one number.")


def example_game(max_number: int) -> list[tuple[int, str]]:
    """A game played by halving the range, against the secret `example_secret(max_number)`:
    (guess, the env's reply) per turn. Shown before every game, it teaches a model too small to
    follow the instructions alone what a reply looks like (a bare number) and how the feedback
    narrows the range."""
    secret, low, high = example_secret(max_number), 1, max_number
    moves: list[tuple[int, str]] = []
    while not moves or moves[-1][0] != secret:
        guess = (low + high) // 2
        moves.append((guess, feedback(guess, secret, max_number)))
        low, high = (guess + 1, high) if guess < secret else (low, guess - 1)
    return moves


def example_secret(max_number: int) -> int:
    return max(1, 7 * max_number // 10)


def opening(max_number: int, max_turns: int) -> list[dict[str, str]]:
    """The messages before the model's first guess: the example game, then the new game."""
    messages = [{"role": "user", "content": question(max_number, max_turns)}]
    for guess, reply in example_game(max_number):
        messages += [{"role": "assistant", "content": str(guess)},
                     {"role": "user", "content": reply}]
    messages[-1] = {"role": "user", "content": f"{messages[-1]['content']} New game: a new "
                    f"number from 1 to {max_number}, {max_turns} guesses. Your first guess?"}
    return messages


def parse_guess(reply: str) -> int | None:
    match = re.search(r"-?\d+", reply)
    return int(match.group()) if match else None


def feedback(guess: int | None, secret: int, max_number: int) -> str:
    """The env's reply to a guess (None: the reply held no number)."""
    if guess is None:
        return f"Please reply with a number from 1 to {max_number}."
    if guess < secret:
        return "Higher."
    if guess > secret:
        return "Lower."
    return "Correct!"


def win_reward(turns: int, max_turns: int) -> float:
    """Finding the secret on turn `turns` (1-based): 1 on the first guess, less later."""
    return 1.0 - (turns - 1) / max_turns


class ChatTurns:
    """Token pieces that continue a conversation: the end of the model's turn and a new user
    message, rendered with the tokenizer's chat template. Appending them to the tokens so far
    (never re-rendering the conversation) keeps the model's sampled tokens exactly as sampled."""

    # A one-exchange conversation: what follows its rendering is what a new message adds.
    _BASE = ({"role": "user", "content": "?"}, {"role": "assistant", "content": "?"})

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self._base = self._render([*self._BASE], False)
        if self.eos not in self._base:
            raise InvalidInputError("base_model", "its chat template does not end a turn with "
                                    "the end-of-sequence token")
        end = len(self._base) - self._base[::-1].index(self.eos) - 1
        self._close = self._base[end:]  # e.g. "<|im_end|>\n"
        self._user: dict[str, list[int]] = {}

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        return list(self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=True,
            return_dict=False))

    def first(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt of the first turn: `messages` and the assistant's header."""
        return self._render(messages, True)

    def next_user(self, action: list[int], content: str) -> list[int]:
        """What follows the model's reply `action`: the end of its turn (what the model did not
        sample of it: a reply cut at max_tokens has no end-of-turn token), the user's message
        `content` and the assistant's header."""
        close = self._close[1:] if action and action[-1] == self.eos else self._close
        if content not in self._user:  # a game has a handful of distinct messages
            full = self._render([*self._BASE, {"role": "user", "content": content}], True)
            if full[: len(self._base)] != self._base:
                raise InvalidInputError("base_model", "its chat template renders earlier turns "
                                        "differently once a message follows them")
            self._user[content] = full[len(self._base):]
        return close + self._user[content]


class GuessEnv:
    """One game against one secret."""

    def __init__(self, chat: ChatTurns, secret: int, cfg: Config) -> None:
        self.chat, self.secret, self.cfg = chat, secret, cfg
        self.context = chat.first(opening(cfg.max_number, cfg.max_turns))
        self.turns = 0
        self.won = False

    async def initial_observation(self) -> list[int]:
        return self.context

    async def step(self, action: list[int]) -> StepResult:
        self.turns += 1
        guess = parse_guess(self.chat.tokenizer.decode(action, skip_special_tokens=True))
        penalty = self.cfg.invalid_penalty if guess is None else 0.0
        if guess == self.secret:
            self.won = True
            return StepResult(win_reward(self.turns, self.cfg.max_turns), True,
                              metrics={"won": 1.0, "turns": float(self.turns)})
        if self.turns >= self.cfg.max_turns:
            return StepResult(-penalty, True, metrics={"won": 0.0, "turns": float(self.turns)})
        reply = feedback(guess, self.secret, self.cfg.max_number)
        self.context = self.context + action + self.chat.next_user(action, reply)
        return StepResult(-penalty, False, next_observation=self.context)


@dataclass(frozen=True)
class GuessGroup:
    """`group_size` games against the same secret (their rewards are compared)."""

    secret: int
    chat: ChatTurns
    cfg: Config

    async def make_envs(self) -> list[GuessEnv]:
        return [GuessEnv(self.chat, self.secret, self.cfg) for _ in range(self.cfg.group_size)]

    def logging_tag(self) -> str:
        return "guess_number"


def split_secrets(max_number: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, held out): 30% of the secrets (at least one) are never played in training. The
    example game's secret, shown in every prompt, is never held out."""
    secrets = [s for s in range(1, max_number + 1) if s != example_secret(max_number)]
    random.Random(seed).shuffle(secrets)
    n_eval = max(1, int(0.3 * max_number))
    return sorted([*secrets[n_eval:], example_secret(max_number)]), sorted(secrets[:n_eval])


class GuessDataset:
    """Batch i is a deterministic function of (seed, i): a resumed run sees the same data."""

    def __init__(self, secrets: list[int], chat: ChatTurns, cfg: Config) -> None:
        self.secrets, self.chat, self.cfg = secrets, chat, cfg

    def get_batch(self, index: int) -> list[GuessGroup]:
        rng = random.Random(f"{self.cfg.seed}-{index}")
        return [GuessGroup(rng.choice(self.secrets), self.chat, self.cfg)
                for _ in range(self.cfg.groups_per_batch)]

    def __len__(self) -> int:
        return self.cfg.steps


def make_evaluator(secrets: list[int], chat: ChatTurns, cfg: Config) -> Any:
    """Games against each held-out secret, `eval_samples` times: win rate, turns, reward."""
    params = sampling_params(cfg, chat.tokenizer)

    async def evaluate(client: Sampler, step: int) -> dict[str, float]:
        games: list[tuple[GuessEnv, float]] = []

        async def one(secret: int) -> None:
            env = GuessEnv(chat, secret, cfg)
            game = await rollout(env, client, params, max_turns=cfg.max_turns)
            games.append((env, game.total_reward))

        async with anyio.create_task_group() as tg:
            for secret in secrets:
                for _ in range(cfg.eval_samples):
                    tg.start_soon(one, secret)
        n = len(games)
        return {"eval/accuracy": sum(env.won for env, _ in games) / n,
                "eval/mean_turns": sum(env.turns for env, _ in games) / n,
                "eval/reward": sum(reward for _, reward in games) / n}

    return evaluate


# ------------------------------------------------------------------------------------------------
# The run, and evaluating a saved checkpoint (`mint-rl eval`)


def main(config: Config, log_dir: Path) -> None:
    chat = ChatTurns(load_tokenizer(config.base_model))
    train_secrets, eval_secrets = split_secrets(config.max_number, config.seed)
    train(config, GuessDataset(train_secrets, chat, config), log_dir,
          evaluate=make_evaluator(eval_secrets, chat, config))


def evaluate_checkpoint(config: Config, adapter_dir: Path) -> dict[str, float]:
    """The held-out evaluation of `main`, on the LoRA adapter saved in `adapter_dir`."""
    chat = ChatTurns(load_tokenizer(config.base_model))
    evaluate = make_evaluator(split_secrets(config.max_number, config.seed)[1], chat, config)
    client = SamplingClient(config.base_model, adapter_dir)
    return anyio.run(evaluate, client, 0)

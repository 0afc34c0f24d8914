"""Preference learning with DPO: SmolLM2-135M-Instruct learns to prefer the better reply.

Each pair is a prompt with a chosen and a rejected reply (recipes/preference_data.py: generated
arithmetic, facts stated in the prompt, one-word answers and help requests; `--data hh-rlhf` for
Anthropic/hh-rlhf from the hub, `--data FILE.jsonl|.parquet` for a local file in its format).
A reply's log-probability is summed over its tokens (the assistant's reply through its
end-of-turn token, as `build_supervised_example` weights them). With pc, pr the policy's
log-probabilities of the chosen and the rejected reply, and rc, rr the frozen reference's:

    implicit reward   R(chosen) = beta * (pc - rc),  R(rejected) = beta * (pr - rr)
    loss              mean over pairs of -log sigmoid(R(chosen) - R(rejected))
                    = -log sigmoid(beta * ((pc - rc) - (pr - rr)))

trained through `forward_backward_custom`. The reference is the base model: the LoRA adapter
starts at zero, so the policy before its first step is the reference, and the reference
log-probabilities of every pair the run uses are computed once with `forward` before training
(also when a run resumes: before its checkpoint is loaded).

    mint-rl run preference [--steps 20] [--beta 0.1] [--data generated] [--log-dir DIR]

Held-out pairs give, at step 0, every `eval_every` steps and at the end: `eval/accuracy` (the
fraction of pairs whose chosen reply has the higher implicit reward; a tie counts half, so it
is 0.5 at step 0 where every reward is 0), `eval/margin` (mean R(chosen) - R(rejected)),
`eval/loss`, `eval/policy_accuracy` (the policy alone gives the chosen reply the higher
log-probability) and, for generated data, `eval/accuracy/<kind>`. samples.jsonl holds a few
held-out pairs with their implicit rewards. `mint-rl eval` calls `evaluate_checkpoint`.

Defaults: 20 steps of 4 pairs, beta 0.1, lr 5e-4, LoRA rank 16, fp32; 224 training and 32
held-out generated pairs, evaluated every 5 steps.

Measured here on 2026-12-02 (2 cores shared with other jobs, load average 8-13, so times are
rough; `--learner-threads 1`, which on busy cores is several times faster than two): defaults,
9.4 s per step (median), 7 min 53 s for the whole run (2 min 48 s of CPU), of which about 3 min
pass before step 0: start-up and the reference log-probabilities of 112 pairs. Held-out:

    step               0      5      10     15     20
    eval/accuracy      0.50   0.91   0.94   0.97   0.94
    eval/margin        0.00   1.42   2.70   4.01   5.44
    eval/policy_acc.   0.72   0.88   1.00   1.00   1.00
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mint_rl import types
from mint_rl.errors import InvalidInputError
from mint_rl.learner.engine import CustomLossFn
from mint_rl.recipes.preference_data import Pair, load_pairs
from mint_rl.run.config import OfflineConfig, option
from mint_rl.run.offline_run import Metrics, OfflineRun, run_steps, training_client
from mint_rl.supervised import build_supervised_example
from mint_rl.terminal import console

PLOTTED = ["eval/accuracy", "eval/margin", "eval/policy_accuracy", "train/loss", "time/step"]


@dataclass(frozen=True)
class Config(OfflineConfig):
    steps: int = option(20, "training steps (one optimizer step each)")
    batch_size: int = option(4, "pairs per step")
    eval_every: int = option(5, "held-out evaluation every N steps (0 = only at the start and "
                                "the end, which are always evaluated)")
    save_every: int = option(10, "checkpoint every N steps (0 = only at the end); the same "
                                 "--log-dir resumes from the newest")
    data: str = option("generated", "'generated' (ships with mint_rl), 'hh-rlhf' (from the "
                                    "hub) or a local .jsonl/.json/.parquet file in its format")
    pairs: int = option(256, "pairs generated (with --data generated)", at_least=2)
    held_out: int = option(32, "pairs held out for evaluation", at_least=1)
    beta: float = option(0.1, "DPO beta: the implicit reward's scale (higher keeps the policy "
                              "closer to the reference)", above=0)
    max_length: int = option(512, "tokens kept per prompt + reply (the rest is cut)", at_least=2)
    samples: int = option(4, "held-out pairs written to samples.jsonl per evaluation",
                          at_least=0)


# ------------------------------------------------------------------------------------------------
# The loss


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over pairs of -log sigmoid(beta * ((pc - rc) - (pr - rr))); one entry per pair."""
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                       ref_rejected: torch.Tensor, beta: float) -> Metrics:
    """Accuracy of the implicit reward (ties count half), its mean margin, the DPO loss, and
    how often the policy alone ranks the chosen reply higher (ties count half)."""
    with torch.no_grad():
        margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
        return {"accuracy": _rate(margin), "margin": float(margin.mean()),
                "loss": float(dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)),
                "policy_accuracy": _rate(chosen - rejected)}


def _rate(difference: torch.Tensor) -> float:
    return float(((difference > 0).float() + 0.5 * (difference == 0).float()).mean())


def sequence_logprob(datum: types.Datum, logprobs: torch.Tensor) -> torch.Tensor:
    """The reply's log-probability: the datum's per-token logprobs summed where weighted."""
    weights = datum.loss_fn_inputs["weights"].to_torch().to(logprobs.dtype)
    return (logprobs * weights).sum()


def dpo_loss_fn(reference: torch.Tensor, beta: float) -> CustomLossFn:
    """The loss for forward_backward_custom on datums [chosen_0, rejected_0, chosen_1, ...];
    `reference` holds the reference model's sequence logprobs of the same datums."""
    def loss_fn(data: list[types.Datum], logprobs: list[torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        seq = torch.stack([sequence_logprob(d, lp) for d, lp in zip(data, logprobs, strict=True)])
        args = (seq[0::2], seq[1::2], reference[0::2], reference[1::2], beta)
        return dpo_loss(*args), {f"dpo/{k}": v for k, v in preference_metrics(*args).items()}

    return loss_fn


# ------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class PairSet:
    pairs: list[Pair]
    datums: list[types.Datum]  # chosen_0, rejected_0, chosen_1, rejected_1, ...

    @classmethod
    def build(cls, tokenizer: Any, pairs: list[Pair], max_length: int) -> PairSet:
        """Pairs whose replies both keep a trained token within max_length."""
        kept, datums = [], []
        for pair in pairs:
            two = [build_supervised_example(
                tokenizer, [*pair.prompt, {"role": "assistant", "content": reply}],
                "last_assistant", max_length) for reply in (pair.chosen, pair.rejected)]
            if all(sum(d.loss_fn_inputs["weights"].tolist()) > 0 for d in two):
                kept.append(pair)
                datums += two
        if not kept:
            raise InvalidInputError("max_length", f"{max_length} tokens cut every reply")
        return cls(kept, datums)

    def take(self, indices: Sequence[int]) -> list[types.Datum]:
        return [d for i in indices for d in self.datums[2 * i: 2 * i + 2]]


def split(config: Config) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): a seeded shuffle, the first `held_out` pairs held out."""
    pairs = load_pairs(config.data, config.pairs, config.seed)
    if len(pairs) <= config.held_out:
        raise InvalidInputError("held_out", f"{config.held_out} leaves no training pairs out "
                                            f"of {len(pairs)}")
    random.Random(f"preference-split-{config.seed}").shuffle(pairs)
    return pairs[config.held_out:], pairs[: config.held_out]


def sequence_logprobs(client: Any, datums: list[types.Datum]) -> torch.Tensor:
    """Each datum's sequence logprob under the client's current weights (no gradient)."""
    out = client.forward(datums, "cross_entropy").result()
    return torch.stack([sequence_logprob(d, o["logprobs"].to_torch())
                        for d, o in zip(datums, out.loss_fn_outputs, strict=True)])


# ------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_pairs(client: Any, held_out: PairSet, reference: torch.Tensor,
                   beta: float) -> tuple[Metrics, torch.Tensor]:
    """Held-out metrics (all pairs and per kind) and the policy's sequence logprobs."""
    policy = sequence_logprobs(client, held_out.datums)
    metrics = {f"eval/{k}": v for k, v in preference_metrics(
        policy[0::2], policy[1::2], reference[0::2], reference[1::2], beta).items()}
    kinds = sorted({p.kind for p in held_out.pairs})
    margin = beta * ((policy[0::2] - reference[0::2]) - (policy[1::2] - reference[1::2]))
    for kind in kinds if len(kinds) > 1 else []:
        rows = torch.tensor([p.kind == kind for p in held_out.pairs])
        metrics[f"eval/accuracy/{kind}"] = _rate(margin[rows])
    return metrics, policy


def sample_rows(held_out: PairSet, policy: torch.Tensor, reference: torch.Tensor, beta: float,
                step: int, n: int) -> list[dict[str, Any]]:
    """samples.jsonl rows: a held-out pair, and the implicit reward of each reply."""
    reward = beta * (policy - reference)
    return [{"step": step, "prompt": pair.prompt[-1]["content"], "completion": pair.chosen,
             "rejected": pair.rejected, "reward": float(reward[2 * i]),
             "rejected_reward": float(reward[2 * i + 1]), "kind": pair.kind,
             "policy_version": step} for i, pair in enumerate(held_out.pairs[:n])]


# ------------------------------------------------------------------------------------------------
# The run


def main(config: Config, log_dir: Path) -> None:
    run = OfflineRun(config, log_dir)
    if run.report_finished():
        return
    train_pairs, held_out_pairs = split(config)
    train = PairSet.build(run.tokenizer, train_pairs, config.max_length)
    held_out = PairSet.build(run.tokenizer, held_out_pairs, config.max_length)
    # The reference before any checkpoint is loaded: the adapter is still zero.
    needed = sorted({i for step in range(run.start_step, config.steps)
                     for i in run.batch(step, len(train.pairs))})
    with console.status(f"reference logprobs of {2 * (len(needed) + len(held_out.pairs))} "
                        "replies"):
        train_ref = dict(zip(needed, sequence_logprobs(run.client, train.take(needed)).view(
            -1, 2), strict=True))
        held_out_ref = sequence_logprobs(run.client, held_out.datums)
    run.resume()
    adam = run.adam()

    def train_step(step: int) -> Metrics:
        indices = run.batch(step, len(train.pairs))
        reference = torch.cat([train_ref[i] for i in indices])
        out = run.client.forward_backward_custom(train.take(indices),
                                                 dpo_loss_fn(reference, config.beta))
        optim = run.client.optim_step(adam)
        metrics = out.result().metrics
        return {"train/loss": metrics["dpo/loss"], "train/accuracy": metrics["dpo/accuracy"],
                "train/margin": metrics["dpo/margin"],
                "optim/grad_norm": (optim.result().metrics or {})["grad_norm:mean"]}

    def evaluate(step: int) -> Metrics:
        metrics, policy = evaluate_pairs(run.client, held_out, held_out_ref, config.beta)
        run.log_samples(sample_rows(held_out, policy, held_out_ref, config.beta, step,
                                    config.samples))
        return metrics

    run_steps(run, train_step, evaluate, headline="eval/accuracy", plotted=PLOTTED)


def evaluate_checkpoint(config: Config, adapter_dir: Path) -> dict[str, float]:
    """Held-out preference accuracy and reward margin of a checkpoint (a PEFT adapter folder)
    against the base model as the reference, on this config's data."""
    client = training_client(config)
    _, held_out_pairs = split(config)
    held_out = PairSet.build(client.get_tokenizer(), held_out_pairs, config.max_length)
    reference = sequence_logprobs(client, held_out.datums)  # the adapter is still zero
    client.load_state(str(adapter_dir)).result()
    return evaluate_pairs(client, held_out, reference, config.beta)[0]

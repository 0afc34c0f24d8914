"""Malformed requests, generated: each is refused with a typed error naming its field, and
changes nothing.

hypothesis generates the inputs (derandomized, so CI runs the same ones every time; each test
counts what it ran): datums for forward / forward_backward (198), batches (40), loss names and
configs (110), AdamParams (80), SamplingParams (80), RLConfig and OfflineConfig values (90 each)
and command-line options (30) — 718 in the fast lane. Everything that reaches a TrainingClient
is checked against the issue's property: after the bad request, the next valid forward_backward
+ optim_step gives bitwise the same loss, logprobs, gradients, adapter weights and step as on a
twin client (same seed) that never saw it. About half of the bad requests come after a valid
forward_backward, so gradients accumulated before a refused call must survive it too.

Sampling requests need the vLLM engine: the last test (slow, 20 more) sends them to the
session's engine; after each, the engine must score a prompt as before, and at the end the same
seeded request must sample the same tokens.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pytest
import torch
from helpers import rl_batch, to_datums
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import mint_rl as mint
from mint_rl import types
from mint_rl.errors import BadRequestError, InvalidInputError
from mint_rl.learner.engine import LearnerSettings
from mint_rl.losses import LOSSES
from mint_rl.run.config import OfflineConfig, RLConfig, parse_config


def derandomized(examples: int) -> Callable:
    # No shrinking: the twins' state moves on with every example, so a failure is reported as
    # found (replaying it on clients that have moved on would only confuse the report).
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclasses.dataclass
class Bad:
    """A malformed request: `send(client)` must raise a BadRequestError whose message has
    `field` in it."""

    what: str
    send: Callable[[mint.TrainingClient], Any]
    field: str


def _refused(bad: Bad, client: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        out = bad.send(client)
        if hasattr(out, "result"):
            out.result()
    assert bad.field in str(info.value), f"{bad.what}: {info.value}"
    return info.value


class Twins:
    """Two clients built alike; only `victim` gets the bad requests."""

    def __init__(self, model: Any) -> None:
        # One torch thread: the tiny model is fastest so, and the two stay in lockstep.
        service = mint.ServiceClient(learner_settings=LearnerSettings(num_threads=1))
        self.victim = service.create_lora_training_client(str(model), rank=4, seed=0)
        self.twin = service.create_lora_training_client(str(model), rank=4, seed=0)
        self.vocab = self.victim.engine.vocab_size
        items = rl_batch(self.vocab, seed=1, groups=1, samples=2, prompt_len=5)
        self.batch = to_datums(items, "ppo", [[-2.0] * it["n"] for it in items])
        self.seen: list[str] = []

    def refuse_then_step(self, bad: Bad, midway: bool) -> None:
        """`bad` is refused by the victim (before its valid forward_backward, or `midway`:
        after it, with gradients accumulated); then both clients must still agree bitwise."""
        self.seen.append(bad.what)
        pair = (self.victim, self.twin)
        if midway:
            outs = [c.forward_backward(self.batch, "ppo").result() for c in pair]
            _refused(bad, self.victim)
        else:
            _refused(bad, self.victim)
            outs = [c.forward_backward(self.batch, "ppo").result() for c in pair]
        assert outs[0].loss == outs[1].loss and math.isfinite(outs[0].loss), bad.what
        for a, b in zip(outs[0].loss_fn_outputs, outs[1].loss_fn_outputs, strict=True):
            assert torch.equal(a["logprobs"].to_torch(), b["logprobs"].to_torch()), bad.what
        self._same(lambda p: p.grad, bad.what)
        for c in pair:
            c.optim_step(types.AdamParams(learning_rate=1e-3)).result()
        self._same(lambda p: p.detach(), bad.what)
        assert self.victim.engine.step == self.twin.engine.step == len(self.seen), bad.what

    def _same(self, of: Callable[[torch.nn.Parameter], Any], what: str) -> None:
        mine, theirs = self.victim.engine.params, self.twin.engine.params
        assert mine.keys() == theirs.keys()
        for name, p in mine.items():
            a, b = of(p), of(theirs[name])
            assert a is not None and b is not None and torch.equal(a, b), f"{what}: {name}"


@pytest.fixture
def twins(tiny_model) -> Twins:
    return Twins(tiny_model)


# --------------------------------------------------------------------------------------------
# Values


def not_numbers() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.lists(st.floats(),
                                                                            max_size=2))


def non_finite() -> st.SearchStrategy[float]:
    return st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1e39])  # ±1e39: inf in fp32


def floats_outside(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats not in [lo, hi] (NaN and the infinities included)."""
    return st.one_of(st.floats(max_value=lo, exclude_max=True),
                     st.floats(min_value=hi, exclude_min=True), st.just(math.nan))


RL_LOSSES = sorted(name for name, loss in LOSSES.items() if loss.is_rl)


# --------------------------------------------------------------------------------------------
# Datums: a valid one, then one thing broken


@dataclasses.dataclass
class Case:
    """A datum under construction, and how it will be sent."""

    loss: str
    tokens: list[Any]
    inputs: dict[str, Any]
    vocab: int
    backward: bool | None = None  # None: drawn
    spans: tuple[int, int] | None = None  # lengths of a model_input / loss_fn_inputs span

    def pick(self, draw: st.DrawFn, values: list[Any] | None = None) -> int:
        return draw(st.integers(0, len(self.tokens if values is None else values) - 1))


@st.composite
def valid_case(draw: st.DrawFn, vocab: int, losses: list[str]) -> Case:
    loss = draw(st.sampled_from(losses))
    n = draw(st.integers(2, 8))
    ids = st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n)
    inputs: dict[str, Any] = {"target_tokens": draw(ids)}
    weights = draw(st.lists(st.floats(0, 2), min_size=n, max_size=n))
    if loss == "cross_entropy" or draw(st.booleans()):
        inputs["weights"] = weights
    if loss != "cross_entropy":
        inputs["logprobs"] = draw(st.lists(st.floats(-5, 0), min_size=n, max_size=n))
        # Per token, or one per trajectory (broadcast).
        inputs["advantages"] = draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)
                                    | st.lists(st.floats(-2, 2), min_size=1, max_size=1))
    return Case(loss, draw(ids), inputs, vocab)


def _wrong_length(draw: st.DrawFn, case: Case) -> str:
    key = draw(st.sampled_from(sorted(case.inputs)))
    n = len(case.tokens)
    m = draw(st.integers(0, n + 4).filter(lambda m: m != n and (key != "advantages" or m != 1)))
    case.inputs[key] = (case.inputs[key] * (m + 1))[:m]
    return key


def _input_id_out_of_vocab(draw: st.DrawFn, case: Case) -> str:
    case.tokens[case.pick(draw)] = draw(st.integers(case.vocab, 2**70))
    return "model_input"


def _target_id_out_of_vocab(draw: st.DrawFn, case: Case) -> str:
    case.inputs["target_tokens"][case.pick(draw)] = draw(st.integers(case.vocab, 2**70)
                                                        | st.integers(-2**70, -1))
    return "target_tokens"


def _input_id_not_an_int(draw: st.DrawFn, case: Case) -> str:
    case.tokens[case.pick(draw)] = draw(st.floats() | st.booleans() | st.text(max_size=3)
                                        | st.none() | st.integers(max_value=-1))
    return "tokens"


def _target_id_not_an_int(draw: st.DrawFn, case: Case) -> str:
    fractional = st.floats().filter(lambda x: not x.is_integer())
    case.inputs["target_tokens"][case.pick(draw)] = draw(fractional | st.booleans()
                                                        | st.text(max_size=3))
    return "target_tokens"


def _logprob_not_finite(draw: st.DrawFn, case: Case) -> str:
    case.inputs["logprobs"][case.pick(draw)] = draw(non_finite())
    return "logprobs"


def _logprob_positive(draw: st.DrawFn, case: Case) -> str:
    case.inputs["logprobs"][case.pick(draw)] = draw(st.floats(1e-5, 1e30))
    return "logprobs"


def _logprob_implausible_on_a_trained_token(draw: st.DrawFn, case: Case) -> str:
    """Below -100 on a token the loss trains: the ratio exp(logp - logq) would overflow."""
    j = case.pick(draw)
    case.inputs["logprobs"][j] = draw(st.floats(-1e30, -100.5))
    adv = case.inputs["advantages"]
    adv[0 if len(adv) == 1 else j] = 1.0
    if "weights" in case.inputs:
        case.inputs["weights"][j] = 1.0
    return "logprobs"


def _advantage_not_finite(draw: st.DrawFn, case: Case) -> str:
    adv = case.inputs["advantages"]
    adv[case.pick(draw, adv)] = draw(non_finite())
    return "advantages"


def _weight_not_finite(draw: st.DrawFn, case: Case) -> str:
    weights = case.inputs.setdefault("weights", [1.0] * len(case.tokens))
    weights[case.pick(draw)] = draw(non_finite())
    return "weights"


def _missing_input(draw: st.DrawFn, case: Case) -> str:
    key = draw(st.sampled_from(LOSSES[case.loss].required))
    case.inputs.pop(key, None)
    return key


def _wrong_type(draw: st.DrawFn, case: Case) -> str:
    key = draw(st.sampled_from(sorted(case.inputs)))
    n = len(case.tokens)
    case.inputs[key] = draw(st.sampled_from([
        "0.5", None, {"a": 1}, {1.0, 2.0}, np.array(["a"] * n), np.zeros(n, np.complex64),
        np.array([None] * n, dtype=object), np.zeros((n, 2), np.float32),
        torch.zeros(n, dtype=torch.complex64)]))
    return key


def _unknown_key_as_a_list(draw: st.DrawFn, case: Case) -> str:
    key = draw(st.text("abcdefgh_XYZ", min_size=1, max_size=8).filter(
        lambda k: k not in types._KEY_DTYPES))
    case.inputs[key] = [1.0] * len(case.tokens)
    return f"loss_fn_inputs[{key!r}]"


def _loss_overflows(draw: st.DrawFn, case: Case) -> str:
    """Finite but huge weights and advantages: the loss is inf, found inside forward_backward
    (which must undo its own gradient)."""
    n = len(case.tokens)
    case.inputs["weights"] = [draw(st.floats(1e38, 3e38))] * n
    if case.loss != "cross_entropy":
        case.inputs["advantages"] = [draw(st.sampled_from([1e30, -1e30]))] * n
    case.backward = True  # forward computes no gradient, so an inf loss is only reported
    return "data"


def _too_long(draw: st.DrawFn, case: Case) -> str:
    n = 512 + draw(st.integers(1, 100))  # the tiny model's context is 512
    case.tokens[:] = [(7 * i) % case.vocab for i in range(n)]
    for key, values in case.inputs.items():
        if len(values) > 1:  # (one advantage per trajectory stays one)
            case.inputs[key] = [values[0]] * n
    return "model_input"


def _empty(draw: st.DrawFn, case: Case) -> str:
    case.tokens.clear()
    case.inputs = {key: [] for key in case.inputs}
    return "model_input"


def _spans_that_do_not_tile(draw: st.DrawFn, case: Case) -> str:
    n = len(case.tokens)
    off = draw(st.integers(-n - 2, 5).filter(lambda d: d != 0))
    case.spans = (n + off, n) if draw(st.booleans()) else (n, n + off)
    return "length" if n + off < 0 else "spans"


def _ratio_mask_not_binary(draw: st.DrawFn, case: Case) -> str:
    mask = [1.0] * len(case.tokens)
    # (width 32: 1 + 1e-9 would be a valid 1 once stored as float32)
    mask[case.pick(draw)] = draw(st.floats(width=32).filter(lambda x: x not in (0, 1)))
    case.inputs["sequence_ratio_mask"] = mask
    return "sequence_ratio_mask"


Corruption = Callable[[st.DrawFn, Case], str]
ALL_LOSSES = sorted(LOSSES)
# Each corruption, and the losses it applies to.
CORRUPTIONS: dict[Corruption, list[str]] = {
    _wrong_length: ALL_LOSSES,
    _input_id_out_of_vocab: ALL_LOSSES,
    _target_id_out_of_vocab: ALL_LOSSES,
    _input_id_not_an_int: ALL_LOSSES,
    _target_id_not_an_int: ALL_LOSSES,
    _logprob_not_finite: RL_LOSSES,
    _logprob_positive: RL_LOSSES,
    _logprob_implausible_on_a_trained_token: RL_LOSSES,
    _advantage_not_finite: RL_LOSSES,
    _weight_not_finite: ALL_LOSSES,
    _missing_input: ALL_LOSSES,
    _wrong_type: ALL_LOSSES,
    _unknown_key_as_a_list: ALL_LOSSES,
    # stable_reinforce's trust band may zero every token, so its loss can stay finite.
    _loss_overflows: [name for name in ALL_LOSSES if name != "stable_reinforce"],
    _too_long: ALL_LOSSES,
    _empty: ALL_LOSSES,
    _spans_that_do_not_tile: ALL_LOSSES,
    _ratio_mask_not_binary: ["gspo"],
}


@st.composite
def bad_datums(draw: st.DrawFn, corrupt: Corruption, vocab: int,
               valid: list[types.Datum]) -> Bad:
    case = draw(valid_case(vocab, CORRUPTIONS[corrupt]))
    field = corrupt(draw, case)
    backward = draw(st.booleans()) if case.backward is None else case.backward
    position = draw(st.integers(0, len(valid)))  # among valid datums: the call is refused whole

    def send(client: mint.TrainingClient) -> Any:
        datum = types.Datum(types.ModelInput.from_ints(case.tokens), case.inputs)
        if case.spans is not None:
            span = types.PromptProvenanceSpan
            datum = datum.with_provenance([span(sequence_id="s", length=case.spans[0])],
                                          [span(sequence_id="s", length=case.spans[1])])
        run = client.forward_backward if backward else client.forward
        return run([*valid[:position], datum, *valid[position:]], case.loss)

    return Bad(f"{corrupt.__name__} ({case.loss}, backward={backward})", send, field)


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda c: c.__name__.strip("_"))
def test_bad_datums_are_refused_and_change_nothing(twins: Twins, corrupt: Corruption) -> None:
    @derandomized(11)
    @given(bad=bad_datums(corrupt, twins.vocab, twins.batch), midway=st.booleans())
    def check(bad: Bad, midway: bool) -> None:
        twins.refuse_then_step(bad, midway)

    check()
    assert len(twins.seen) >= 11  # x 18 corruptions


# --------------------------------------------------------------------------------------------
# Batches: the request around the datums


def _reassigned(valid: types.Datum, field: str, value: Any) -> types.Datum:
    """A datum built valid, one field set afterwards (Datum is a plain class)."""
    datum = types.Datum(valid.model_input, dict(valid.loss_fn_inputs))
    if field in ("model_input", "loss_fn_inputs"):
        setattr(datum, field, value)
    else:
        datum.loss_fn_inputs[field] = value
    return datum


@st.composite
def bad_batches(draw: st.DrawFn, valid: list[types.Datum]) -> Bad:
    kind = draw(st.sampled_from(["empty", "not a list", "not a datum", "field reassigned"]))
    field = "data"
    data: Any
    if kind == "empty":
        data = draw(st.sampled_from([[], ()]))
    elif kind == "not a list":
        data = draw(st.sampled_from([valid[0], None, "data", {"data": valid}, 3,
                                     (d for d in valid)]))
    else:
        i = draw(st.integers(0, len(valid)))
        if kind == "not a datum":
            item = draw(st.sampled_from([None, {}, "datum", valid[0].model_input, [valid[0]]]))
        else:
            key, value = draw(st.sampled_from([
                ("model_input", [5, 6, 7]), ("model_input", None), ("loss_fn_inputs", None),
                ("loss_fn_inputs", [("weights", [1.0])]), ("weights", [1.0] * 12),
                ("target_tokens", types.TensorData(["a"] * 3, "int64")),
                ("logprobs", types.TensorData([None, "x"], "float32"))]))
            item, field = _reassigned(valid[0], key, value), key
        data, field = [*valid[:i], item, *valid[i:]], f"data[{i}]" if field == "data" else field
    backward = draw(st.booleans())
    loss = draw(st.sampled_from(sorted(LOSSES)))

    def send(client: mint.TrainingClient) -> Any:
        run = client.forward_backward if backward else client.forward
        return run(data, loss)

    return Bad(f"{kind} ({loss}, backward={backward})", send, field)


def test_bad_batches_are_refused_and_change_nothing(twins: Twins) -> None:
    @derandomized(40)
    @given(bad=bad_batches(twins.batch), midway=st.booleans())
    def check(bad: Bad, midway: bool) -> None:
        twins.refuse_then_step(bad, midway)

    check()
    assert len(twins.seen) >= 40


# --------------------------------------------------------------------------------------------
# Loss names and loss configs


def _below_one() -> st.SearchStrategy[Any]:
    return st.floats(max_value=1.0, exclude_max=True) | st.sampled_from([math.nan, math.inf])


_THRESHOLDS = {"clip_low_threshold": floats_outside(0.0, 1.0),
               "clip_high_threshold": _below_one()}
# Per loss, a strategy of out-of-range values per key; any key not listed is unknown to it.
BAD_CONFIG = {
    "cross_entropy": {},
    "importance_sampling": {},
    "ppo": {"clip_ratio": floats_outside(0.0, 0.5), **_THRESHOLDS},
    "cispo": {"clip_ratio": floats_outside(0.0, 0.5), **_THRESHOLDS,
              "beta": st.floats(max_value=0.0) | st.sampled_from([math.nan, -math.inf])},
    "dro": {"beta": st.floats(max_value=0.0, exclude_max=True)
            | st.sampled_from([math.nan, math.inf])},
    "gspo": dict(_THRESHOLDS),
    # inf is allowed where it means "off" (no truncation, no upper mask).
    "stable_reinforce": {"clip_high_threshold": _below_one().filter(lambda x: x != math.inf),
                         "mask_low_threshold": floats_outside(0.0, 1.0),
                         "mask_high_threshold": _below_one().filter(lambda x: x != math.inf),
                         "kl_coeff": st.floats(max_value=0.0, exclude_max=True)
                         | st.sampled_from([math.nan, math.inf])},
}


@st.composite
def bad_losses(draw: st.DrawFn, valid: list[types.Datum]) -> Bad:
    loss = draw(st.sampled_from(sorted(LOSSES)))
    kind = draw(st.sampled_from(["name", "value", "not a number", "unknown key",
                                 "not a mapping", "two clip forms"]))
    config: Any = {}
    field = ""
    if kind == "name":
        loss = draw(st.text(max_size=12).filter(lambda s: s not in LOSSES)
                    | st.sampled_from([None, 3, 0.5, ["ppo"], "PPO", " ppo", "custom"]))
        field = "loss_fn"
    elif kind in ("value", "not a number") and BAD_CONFIG[loss]:
        field = draw(st.sampled_from(sorted(BAD_CONFIG[loss])))
        config = {field: draw(BAD_CONFIG[loss][field] if kind == "value" else not_numbers())}
    elif kind == "two clip forms" and loss in ("ppo", "cispo"):
        config = {"clip_ratio": 0.2, draw(st.sampled_from(sorted(_THRESHOLDS))): 0.9}
        field = "clip_ratio"
    elif kind == "not a mapping":
        config = draw(st.sampled_from([[("beta", 0.1)], "clip_ratio=0.2", 0.2, ("beta",), []]))
        field = "loss_fn_config"
    else:  # a key this loss does not take (gspo takes no clip_ratio)
        key = draw(st.sampled_from(["clip_ratio", "beta", "eps", "kl_coef"]
                                   ).filter(lambda k: k not in BAD_CONFIG[loss])
                   | st.text("xyz_", min_size=1, max_size=6))
        config, field = {key: 0.1}, f"loss_fn_config[{key!r}]"
    backward = draw(st.booleans())

    def send(client: mint.TrainingClient) -> Any:
        run = client.forward_backward if backward else client.forward
        return run(valid, loss, config)

    return Bad(f"{kind} ({loss!r}, {config!r})", send, field)


def test_bad_loss_names_and_configs_are_refused_and_change_nothing(twins: Twins) -> None:
    @derandomized(110)
    @given(bad=bad_losses(twins.batch), midway=st.booleans())
    def check(bad: Bad, midway: bool) -> None:
        twins.refuse_then_step(bad, midway)

    check()
    assert len(twins.seen) >= 110


# --------------------------------------------------------------------------------------------
# AdamParams


def _not_positive() -> st.SearchStrategy[float]:
    return st.floats(max_value=0.0) | st.sampled_from([math.nan, math.inf])


def _negative() -> st.SearchStrategy[float]:
    return st.floats(max_value=0.0, exclude_max=True) | st.sampled_from([math.nan, math.inf])


BAD_ADAM = {
    "learning_rate": _negative(),
    "beta1": floats_outside(0.0, 1.0) | st.just(1.0),  # 1 divides by zero in the bias correction
    "beta2": floats_outside(0.0, 1.0) | st.just(1.0),
    "eps": _not_positive(),
    "weight_decay": _negative(),
    "grad_clip_norm": _negative(),
}


@st.composite
def bad_adam(draw: st.DrawFn) -> Bad:
    field = draw(st.sampled_from(sorted(BAD_ADAM)))
    value = draw(BAD_ADAM[field] | not_numbers())
    how = draw(st.sampled_from(["built", "altered after it was built", "not AdamParams"]))
    if how == "not AdamParams":
        params: Any = draw(st.sampled_from([{field: 1e-4}, None, "adam", 1e-4,
                                            SimpleNamespace(**{field: 1e-4})]))
        return Bad(how, lambda client: client.optim_step(params), "adam_params")
    if how == "built":
        return Bad(f"{how}: {field}={value!r}",
                   lambda client: client.optim_step(types.AdamParams(**{field: value})), field)

    def send(client: mint.TrainingClient) -> Any:
        params = types.AdamParams()  # an unpickled AdamParams skips __post_init__ too
        object.__setattr__(params, field, value)
        return client.optim_step(params)

    return Bad(f"{how}: {field}={value!r}", send, field)


def test_bad_adam_params_are_refused_and_change_nothing(twins: Twins) -> None:
    @derandomized(80)
    @given(bad=bad_adam(), midway=st.booleans())
    def check(bad: Bad, midway: bool) -> None:
        twins.refuse_then_step(bad, midway)

    check()
    assert len(twins.seen) >= 80


# --------------------------------------------------------------------------------------------
# SamplingParams (built before any engine is involved)


BAD_SAMPLING = {
    "max_tokens": st.integers(max_value=0) | st.booleans() | st.floats() | st.text(max_size=3),
    # negative: vLLM reads -1 as unseeded, and sample i uses seed + i
    "seed": (st.integers(max_value=-1) | st.integers(min_value=2**63) | st.booleans()
             | st.floats() | st.text(max_size=3)),
    "temperature": _negative() | not_numbers(),
    "top_k": st.integers(max_value=-2) | st.booleans() | st.floats() | st.none(),
    "top_p": floats_outside(0.0, 1.0) | st.just(0.0) | not_numbers(),
    "stop": (st.integers() | st.floats() | st.just("") | st.dictionaries(st.text(), st.text())
             | st.lists(st.just("") | st.integers(max_value=-1) | st.floats() | st.none(),
                        min_size=1, max_size=3)
             | st.sampled_from([["end", 3], [7, "end"], [True]])),
    "stop_token_ids": (st.text(max_size=3) | st.integers()
                       | st.lists(st.integers(max_value=-1) | st.floats() | st.booleans()
                                  | st.text(max_size=2), min_size=1, max_size=3)),
}


def test_bad_sampling_params_are_refused_by_name() -> None:
    seen: list[str] = []

    @derandomized(80)
    @given(field=st.sampled_from(sorted(BAD_SAMPLING)), data=st.data())
    def check(field: str, data: st.DataObject) -> None:
        value = data.draw(BAD_SAMPLING[field])
        seen.append(field)
        with pytest.raises(InvalidInputError) as info:
            types.SamplingParams(**{field: value})
        assert info.value.field.split("[")[0] == field, info.value

    check()
    assert len(seen) >= 80


# --------------------------------------------------------------------------------------------
# RLConfig: from Python (typed errors) and from the command line (argparse's exit)


_AT_LEAST = {"max_steps_off_policy": 0, "eval_every": 0, "save_every": 0, "learner_threads": 1}
_NO_BOUND = {"seed"}


def bad_config_values(name: str, hint: Any) -> st.SearchStrategy[Any]:
    """Values of the wrong type for a field typed `hint`, or out of its range."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is Literal:
        return st.text(max_size=8).filter(lambda s: s not in typing.get_args(hint)) | st.integers()
    if hint is bool:
        return st.integers() | st.text(max_size=3)
    if hint is int:
        low = _AT_LEAST.get(name, 1)
        too_small = st.nothing() if name in _NO_BOUND else st.integers(max_value=low - 1)
        return too_small | st.booleans() | st.floats() | st.text(max_size=3)
    if hint is float:
        below = st.floats(max_value=0.0) if name == "lr" else _negative()
        return below | st.sampled_from([math.nan, math.inf]) | st.booleans() | st.text(max_size=3)
    return st.integers() | st.lists(st.text(max_size=2), max_size=2)  # str fields


@pytest.mark.parametrize("kind", ["rl", "offline"])
def test_bad_configs_are_refused_by_name(kind: str) -> None:
    """RLConfig and OfflineConfig (and recipes' configs that extend them) are checked by the
    one RunConfig check."""
    from mint_rl.recipes.arithmetic import Config as ArithmeticConfig
    from mint_rl.recipes.sft import Config as SftConfig

    base, recipe = (RLConfig, ArithmeticConfig) if kind == "rl" else (OfflineConfig, SftConfig)
    hints = typing.get_type_hints(base)
    names = [f.name for f in dataclasses.fields(base)]
    seen: list[str] = []

    @derandomized(90)
    @given(name=st.sampled_from(names), config_cls=st.sampled_from([base, recipe]),
           data=st.data())
    def check(name: str, config_cls: type, data: st.DataObject) -> None:
        value = data.draw(bad_config_values(name, hints[name]))
        seen.append(name)
        with pytest.raises(InvalidInputError) as info:
            config_cls(**{name: value})
        assert info.value.field == name, info.value

    check()
    assert len(seen) >= 90


def test_bad_command_line_options_exit_naming_the_option(capsys) -> None:
    bad_text = {int: ["zero", "1.5", "", "-7"], float: ["fast", "nan", "inf", "-1"]}
    hints = typing.get_type_hints(RLConfig)
    numeric = [f.name for f in dataclasses.fields(RLConfig)
               if hints[f.name] in bad_text and f.name not in _NO_BOUND]
    seen: list[str] = []

    @derandomized(30)
    @given(name=st.sampled_from(numeric + ["loss", "cpus", "learner_dtype"]), data=st.data())
    def check(name: str, data: st.DataObject) -> None:
        text = data.draw(st.sampled_from(bad_text.get(hints[name], ["nope", "PPO", ""])))
        seen.append(name)
        flag = "--" + name.replace("_", "-")
        with pytest.raises(SystemExit) as info:
            parse_config(RLConfig, [flag, text])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert flag in err or f"{name}:" in err, err

    check()
    assert len(seen) >= 30


# --------------------------------------------------------------------------------------------
# Sampling requests, on the session's vLLM engine


@st.composite
def bad_sampling_requests(draw: st.DrawFn, prompt: types.ModelInput, vocab: int,
                          max_len: int) -> Bad:
    params = types.SamplingParams(max_tokens=4)
    what = draw(st.sampled_from(["num_samples", "prompt", "max_tokens", "topk_prompt_logprobs",
                                 "sequence_ids", "sampling_params", "altered sampling_params"]))
    args: dict[str, Any] = {"prompt": prompt, "num_samples": 1, "sampling_params": params}
    field = what
    if what == "num_samples":
        args[what] = draw(st.integers(max_value=0) | st.floats() | st.none() | st.just(True))
    elif what == "prompt":
        tokens = prompt.to_ints()
        tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.integers(vocab, 2**40))
        args[what] = draw(st.sampled_from([types.ModelInput.from_ints(tokens),
                                           types.ModelInput.empty(), tokens, None]))
    elif what == "max_tokens":  # more than the context leaves after the prompt
        args["sampling_params"] = types.SamplingParams(
            max_tokens=draw(st.integers(max_len - prompt.length + 1, 10 * max_len)))
    elif what == "topk_prompt_logprobs":
        args[what] = draw(st.integers(max_value=-1) | st.integers(10**3, 10**6) | st.text())
    elif what == "sequence_ids":
        args["num_samples"] = 2
        args[what] = draw(st.sampled_from([["a"], ["a", "a"], ["", "b"], [1, 2], ["a", "b", "c"]]))
    elif what == "sampling_params":
        args[what] = draw(st.sampled_from([None, {"max_tokens": 4}, SimpleNamespace(max_tokens=4)]))
    else:
        field = draw(st.sampled_from(sorted(BAD_SAMPLING)))
        altered = types.SamplingParams(max_tokens=4)
        object.__setattr__(altered, field, draw(BAD_SAMPLING[field]))
        args["sampling_params"] = altered
    return Bad(f"{what}: {args!r}"[:200], lambda client: client.sample(**args), field)


@pytest.mark.slow
def test_bad_sampling_requests_are_refused_and_change_nothing(sampler_engine) -> None:
    from mint_rl.models import DEFAULT_MODEL
    from mint_rl.sampler import SamplingClient

    client = SamplingClient(DEFAULT_MODEL)
    tokenizer = client.get_tokenizer()
    prompt = types.ModelInput.from_ints(tokenizer.encode("What is 3 + 4?"))
    valid = types.SamplingParams(max_tokens=4, seed=11)
    sampled = client.sample(prompt, 2, valid).result().sequences
    scored = client.compute_logprobs(prompt).result()[1:]
    max_len = sampler_engine.config.max_model_len
    assert max_len is not None
    seen: list[str] = []

    @derandomized(20)
    @given(bad=bad_sampling_requests(prompt, len(tokenizer), max_len))
    def check(bad: Bad) -> None:
        seen.append(bad.what)
        _refused(bad, client)
        # The engine still serves the same weights (one engine step: a step costs on CPU).
        # (To float rounding: the prompt's cached keys and values may come from another batch.)
        again = client.compute_logprobs(prompt).result()[1:]
        assert again == pytest.approx(scored, abs=1e-5), bad.what

    check()
    assert len(seen) >= 20
    # And samples as before: the same seeded request, the same tokens.
    again = client.sample(prompt, 2, valid).result().sequences
    assert [s.tokens for s in again] == [s.tokens for s in sampled]
    for a, b in zip(again, sampled, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)

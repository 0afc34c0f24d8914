"""Types: conversions both ways and validation that names the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mint_rl import types
from mint_rl.errors import InvalidInputError


def test_tensor_data_round_trips():
    for value in ([1, 2, 3], np.array([[1.5, 2.0]], dtype=np.float64), torch.tensor([4, 5])):
        if isinstance(value, list):
            td = types.TensorData.from_list(value, "int64")
        elif isinstance(value, np.ndarray):
            td = types.TensorData.from_numpy(value)
        else:
            td = types.TensorData.from_torch(value)
        back = np.asarray(value if not isinstance(value, torch.Tensor) else value.numpy())
        np.testing.assert_allclose(td.to_numpy(), back)
        assert td.to_torch().shape == tuple(back.shape)
        assert td.tolist() == back.tolist()
    assert types.TensorData.from_numpy(np.zeros(2, np.float64)).dtype == "float32"
    with pytest.raises(ValueError, match="shape"):
        types.TensorData(data=[1, 2, 3], dtype="int64", shape=[2])


def test_model_input():
    mi = types.ModelInput.from_ints([1, 2, 3]).append_int(4)
    assert mi.to_ints() == [1, 2, 3, 4] and mi.length == 4
    assert types.ModelInput.empty().length == 0
    with pytest.raises(ValueError, match=r"tokens\[1\]"):
        types.ModelInput.from_ints([1, -2])


def test_datum_converts_lists_numpy_and_torch():
    d = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"target_tokens": [2, 3], "weights": np.ones(2),
                        "advantages": torch.tensor([0.5, 0.5])},
    )
    assert d.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert d.loss_fn_inputs["weights"].dtype == "float32"
    assert d.loss_fn_inputs["advantages"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"beta1": 1.5}, "beta1"),
    ({"grad_clip_norm": -1.0}, "grad_clip_norm"),
])
def test_adam_params_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        types.AdamParams(**kwargs)


def test_adam_defaults_are_tinkers():
    p = types.AdamParams()
    assert (p.learning_rate, p.beta1, p.beta2, p.eps, p.weight_decay, p.grad_clip_norm) == (
        1e-4, 0.9, 0.95, 1e-12, 0.0, 0.0)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_k": -5}, "top_k"),
    ({"stop": ["a", 3]}, "stop"),
])
def test_sampling_params_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        types.SamplingParams(**kwargs)


def test_sampling_params_stops():
    sp = types.SamplingParams(stop=[5, 6], stop_token_ids=[2])
    assert sp.stop_token_id_list() == [5, 6, 2] and sp.stop_strings() == []
    assert types.SamplingParams(stop="\n").stop_strings() == ["\n"]


# --------------------------------------------------------------------------------------------
# Provenance spans and sequence ids


def _prov_datum(**kw):
    return types.Datum(model_input=types.ModelInput.from_ints([1, 2, 3, 4]),
                       loss_fn_inputs={"target_tokens": [2, 3, 4, 5]}, **kw)


def test_provenance_spans_tile_their_fields():
    P, S = types.PromptProvenanceSpan, types.SampledProvenanceSpan
    # The cookbook's single-turn layout: prompt of 3, 2 sampled tokens.
    d = _prov_datum().with_provenance(
        model_input=[P(sequence_id="s", length=3), S(sequence_id="s", length=1)],
        loss_fn_inputs=[P(sequence_id="s", offset=1, length=2), S(sequence_id="s", length=2)])
    assert d.model_input_spans == [P(sequence_id="s", length=3), S(sequence_id="s", length=1)]
    assert d.loss_fn_input_spans is not None and d.loss_fn_input_spans[0].offset == 1
    assert _prov_datum().model_input_spans is None
    cases = [  # (spans, the field the error must name)
        ({"model_input_spans": [P(sequence_id="s", length=4)]}, "loss_fn_input_spans"),
        ({"loss_fn_input_spans": [P(sequence_id="s", length=4)]}, "model_input_spans"),
        ({"model_input_spans": [P(sequence_id="s", length=3)],
          "loss_fn_input_spans": [S(sequence_id="s", length=4)]}, "model_input_spans"),
        ({"model_input_spans": [P(sequence_id="s", length=4)],
          "loss_fn_input_spans": [S(sequence_id="s", length=5)]}, "loss_fn_input_spans"),
        ({"model_input_spans": [("s", 0, 4)],
          "loss_fn_input_spans": [S(sequence_id="s", length=4)]}, r"model_input_spans\[0\]"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidInputError, match=field):
            _prov_datum(**kwargs)
    with pytest.raises(ValueError, match="cover 3 positions but model_input has 4"):
        _prov_datum().with_provenance(model_input=[P(sequence_id="s", length=3)],
                                      loss_fn_inputs=[S(sequence_id="s", length=4)])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"sequence_id": "", "length": 1}, "sequence_id"),
    ({"sequence_id": "s", "length": -1}, "length"),
    ({"sequence_id": "s", "offset": -2, "length": 1}, "offset"),
    ({"sequence_id": "s", "length": 1.5}, "length"),
])
def test_provenance_span_fields_are_checked(kwargs, field):
    for cls in (types.PromptProvenanceSpan, types.SampledProvenanceSpan):
        with pytest.raises(ValueError, match=f"{cls.__name__}.{field}"):
            cls(**kwargs)


def test_sampled_sequences_always_carry_a_distinct_id():
    a = types.SampledSequence(tokens=[1], logprobs=[-0.1], stop_reason="stop")
    b = types.SampledSequence(tokens=[1], logprobs=[-0.1], stop_reason="stop")
    assert a.sequence_id and b.sequence_id and a.sequence_id != b.sequence_id
    assert types.SampledSequence([1], [-0.1], "stop", sequence_id="x").sequence_id == "x"


def test_stability_store_expires_a_day_after_last_use_and_bounds_memory():
    from mint_rl.stability import StabilityStore

    now = [0.0]
    store = StabilityStore(ttl_s=100.0, max_tokens=10, clock=lambda: now[0])
    store.record("a", [1, 2], [3, 4], [-0.1, -0.2])
    store.record("b", [1, 2], [5], [-0.3])
    now[0] = 90.0
    rec = store.get("a")  # a use restarts its time to live
    assert rec is not None and rec.logprobs.tolist() == pytest.approx([-0.1, -0.2])
    now[0] = 150.0
    assert store.get("b") is None  # unused for 150 s > 100 s
    assert store.get("a") is not None  # used 60 s ago
    now[0] = 151.0
    store.record("c", [1, 2, 3], [4, 5, 6], [-1.0] * 3)  # 4 + 6 tokens: fits exactly
    assert len(store) == 2
    store.record("d", [1], [2], [-1.0])  # 12 > 10: the least recently used ("a") goes
    assert store.get("a") is None and store.get("c") is not None and store.get("d") is not None


def test_fixed_sequence_ids_are_one_per_sample_distinct_and_non_empty():
    from mint_rl.sampler.sampling_client import _sequence_ids

    assert _sequence_ids(None, 3) is None  # fresh uuids per sequence
    assert _sequence_ids(("r:0", "r:1"), 2) == ["r:0", "r:1"]
    for ids in (["a"], ["a", "a"], ["a", ""]):
        with pytest.raises(InvalidInputError, match="sequence_ids"):
            _sequence_ids(ids, 2)

"""Types: conversions both ways and validation that names the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mint_rl import types


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

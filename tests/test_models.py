"""Model resolution: local folders, the bundled default, and a clear error for the hub."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from mint_rl import models
from mint_rl.errors import ModelNotAvailableError
from mint_rl.models import cached_tokenizer, resolve_model


def test_local_folder_is_used_as_is(tiny_model):
    assert resolve_model(str(tiny_model)) == tiny_model.resolve()


def test_unreachable_hub_id_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="no-such-org/no-such-model"):
        resolve_model("no-such-org/no-such-model")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.slow  # needs the bundled default model (dequantized by set-up)
def test_default_model_is_a_plain_hf_folder(default_model):
    config = json.loads((default_model / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (default_model / "model.safetensors").exists()
    assert (default_model / "tokenizer.json").exists()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True)
    assert "<|im_start|>assistant" in prompt


def test_a_cached_tokenizer_pickles_as_its_model_name(tiny_model, monkeypatch):
    # Group builders carry the tokenizer to samplers in other processes with every rollout.
    tok = cached_tokenizer(str(tiny_model))
    data = pickle.dumps(tok)
    assert len(data) < 1000 and pickle.loads(data) is tok
    monkeypatch.setattr(models, "_TOKENIZERS", {})  # as in a process that never loaded it
    loaded = pickle.loads(data)
    text = "3 + 4 = 7"
    assert loaded is not tok and loaded.encode(text) == tok.encode(text)
    assert pickle.loads(data) is loaded  # loaded once per process
    clone = copy.deepcopy(tok)  # copies stay copies
    assert clone is not tok and clone.encode(text) == tok.encode(text)

"""A tiny random model for fast unit tests (the library's real default lives in mint_rl.models)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def make_tiny_model(out: str | Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Builds a 2-layer random Llama and a byte-level BPE tokenizer in `out` (a second or two).

    Same architecture family as the default model, so every code path runs; only the numbers are
    meaningless. Cached: an existing folder is reused.
    """
    out = Path(out)
    if (out / "config.json").exists():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [
        "The capital of France is Paris. What is 3 + 4? Reply with just the number. 7",
        "user assistant system 0 1 2 3 4 5 6 7 8 9 + - = ? . ,",
    ] * 8
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tmp-") as tmp:
        model.save_pretrained(Path(tmp) / "m", safe_serialization=True)
        tokenizer.save_pretrained(Path(tmp) / "m")
        if not (out / "config.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            os.replace(Path(tmp) / "m", out)
    return out


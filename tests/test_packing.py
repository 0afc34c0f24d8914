"""Packed rows and shared prompts give the same logprobs as running sequences one by one."""

from __future__ import annotations

import random

import torch
from transformers import AutoModelForCausalLM

from mint_rl.learner.packing import pack


def test_shared_prompt_and_packing_match_unpacked(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rng = random.Random(0)
    prompt = [rng.randrange(3, 300) for _ in range(20)]
    seqs = [prompt + [rng.randrange(3, 300) for _ in range(rng.randrange(1, 12))]
            for _ in range(4)]
    seqs += [[rng.randrange(3, 300) for _ in range(rng.randrange(5, 40))] for _ in range(5)]
    packed = pack(seqs, row_capacity=64)
    assert packed.real_tokens < sum(map(len, seqs))  # the prompt was stored once
    with torch.no_grad():
        hidden = model.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                             position_ids=packed.position_ids).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])
        for seq, cols in zip(seqs, packed.columns, strict=True):
            alone = model.model(input_ids=torch.tensor([seq])).last_hidden_state[0]
            torch.testing.assert_close(flat[cols], alone, atol=1e-5, rtol=1e-4)


def test_padding_waste_under_ten_percent_for_mixed_lengths():
    rng = random.Random(1)
    seqs = [[1] * rng.randrange(16, 257) for _ in range(32)]
    packed = pack(seqs, row_capacity=512, share_prefixes=False)
    padded_to_longest = 1 - sum(map(len, seqs)) / (len(seqs) * max(map(len, seqs)))
    assert packed.padding_fraction < 0.10 < padded_to_longest
    # Every datum's positions are distinct columns holding its own tokens.
    ids = packed.input_ids.reshape(-1)
    seen = torch.cat(packed.columns)
    assert len(set(seen.tolist())) == len(seen) and bool((ids[seen] == 1).all())


def test_sequences_that_only_share_a_short_prefix_are_not_grouped():
    seqs = [[1, 2, 3, 4, 5, 6], [1, 2, 9, 9, 9, 9]]
    packed = pack(seqs, min_shared=8)
    assert packed.real_tokens == 12


def test_prompts_behind_a_common_system_prompt_stay_separate_groups():
    # 4 prompts that share a 30-token system prompt, 4 samples each: grouping all 16 under the
    # system prompt would recompute each prompt's own 20 tokens per sample and build one unit too
    # wide for a row; one group per prompt computes each prompt once.
    rng = random.Random(0)
    system = [rng.randrange(1000) for _ in range(30)]
    prompts = [system + [rng.randrange(1000) for _ in range(20)] for _ in range(4)]
    seqs = [p + [rng.randrange(1000) for _ in range(16)] for p in prompts for _ in range(4)]
    packed = pack(seqs, row_capacity=256)
    assert packed.real_tokens == 4 * 50 + 16 * 16
    assert packed.input_ids.shape[0] == 2  # 456 tokens over rows of 256: units split evenly
    assert packed.input_ids.shape[1] <= 256

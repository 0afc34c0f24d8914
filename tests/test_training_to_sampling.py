"""From the TrainingClient to vLLM: sampled logprobs are the learner's, before and after a step."""

from __future__ import annotations

import pytest
import torch

import mint_rl as mint
from mint_rl import types


def _learner_logprobs(tc, prompt: list[int], completion: list[int]) -> torch.Tensor:
    full = prompt + completion
    datum = types.Datum(model_input=types.ModelInput.from_ints(full[:-1]),
                        loss_fn_inputs={"target_tokens": full[1:],
                                        "weights": [0.0] * (len(full) - 1)})
    out = tc.forward([datum], "cross_entropy").result()
    return out.loss_fn_outputs[0]["logprobs"].to_torch()[len(prompt) - 1:]


@pytest.mark.slow
def test_sampling_client_serves_the_learners_policy(default_model, sampler_engine):
    tc = mint.ServiceClient().create_lora_training_client(str(default_model), rank=8, seed=0)
    tok = tc.get_tokenizer()
    prompt = list(tok.apply_chat_template([{"role": "user", "content": "What is 2 + 5?"}],
                                          add_generation_prompt=True, tokenize=True,
                                          return_dict=False))
    params = types.SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    before = tc.save_weights_and_get_sampling_client()
    assert before.policy_version == 0

    # One SFT step toward " 7" so that the policy really changes.
    answer = tok.encode(" 7")
    full = prompt + answer
    sft = types.Datum(model_input=types.ModelInput.from_ints(full[:-1]),
                      loss_fn_inputs={"target_tokens": full[1:],
                                      "weights": [0.0] * (len(prompt) - 1) + [1.0] * 2})
    tc.forward_backward([sft], "cross_entropy").result()
    old_policy = {}
    seqs_before = before.sample(types.ModelInput.from_ints(prompt), 3, params).result()
    for i, s in enumerate(seqs_before.sequences):
        old_policy[i] = _learner_logprobs(tc, prompt, s.tokens)  # grads only: same weights
    tc.optim_step(types.AdamParams(learning_rate=5e-3))  # not waited for: queued

    after = tc.save_weights_and_get_sampling_client()
    assert after.policy_version == 1  # labelled after the queued step, not before it
    out = after.sample(types.ModelInput.from_ints(prompt), 3, params).result()
    for s in out.sequences:
        assert s.policy_versions == [1] * len(s.tokens)
        learner = _learner_logprobs(tc, prompt, s.tokens)
        torch.testing.assert_close(torch.tensor(s.logprobs), learner, atol=1e-3, rtol=0)

    # The client made before the step still samples the old policy.
    again = before.sample(types.ModelInput.from_ints(prompt), 3, params).result()
    for i, s in enumerate(again.sequences):
        assert s.policy_versions == [0] * len(s.tokens)
        assert s.tokens == seqs_before.sequences[i].tokens  # same seed, same weights
        torch.testing.assert_close(torch.tensor(s.logprobs), old_policy[i], atol=1e-3,
                                   rtol=0)
    changed = any(
        not torch.allclose(_learner_logprobs(tc, prompt, s.tokens), old_policy[i], atol=1e-3)
        for i, s in enumerate(again.sequences)
    )
    assert changed, "the optimizer step should have changed the policy"

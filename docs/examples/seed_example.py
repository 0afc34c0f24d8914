"""The seed document's example (mint-loss-functions.txt), run against mint_rl.

Changes from the seed: the import (`mint_rl as mint`), the model id (Qwen3-0.6B cannot be
downloaded here; the bundled SmolLM2 is used), and `weights[1:]` — the seed builds `weights` one
element longer than `target_tokens`, which mint_rl rejects with a ValueError naming `weights`.
"""

import mint_rl as mint
from mint_rl import types

service_client = mint.ServiceClient()
training_client = service_client.create_lora_training_client(
    base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    rank=16,
)
tokenizer = training_client.get_tokenizer()

# Example 1: SFT (supervised learning)
prompt_text = "The capital of France is"
target_text = " Paris."
prompt_ids = tokenizer.encode(prompt_text)
target_ids = tokenizer.encode(target_text)
all_ids = prompt_ids + target_ids
model_input_sft = types.ModelInput.from_ints(all_ids[:-1])
sft_target_tokens = all_ids[1:]
sft_weights = [0] * len(prompt_ids) + [1] * len(target_ids)
datum_sft = types.Datum(
    model_input=model_input_sft,
    loss_fn_inputs={
        "target_tokens": sft_target_tokens,
        "weights": sft_weights[1:],  # the seed's list is one too long
    },
)
result = training_client.forward_backward([datum_sft], loss_fn="cross_entropy").result()
print(f"SFT loss: {result.loss:.4f}")

# Example 2: RL (policy gradient)
model_tokens = [7741, 34651, 31410]
model_logprobs = [-0.5, -0.3, -0.8]
advantages = [0.15]  # Single trajectory, positive reward
model_input_rl = types.ModelInput.from_ints(model_tokens)
datum_rl = types.Datum(
    model_input=model_input_rl,
    loss_fn_inputs={
        "target_tokens": model_tokens,
        "logprobs": model_logprobs,
        "advantages": advantages,
    },
)
result_rl = training_client.forward_backward([datum_rl], loss_fn="ppo").result()
print(f"PPO loss: {result_rl.loss:.4f}")

# Apply optimizer step
adam_params = types.AdamParams(learning_rate=1e-4)
training_client.optim_step(adam_params).result()
print("optim_step: ok")

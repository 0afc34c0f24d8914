"""Test helpers: an RL-shaped batch, a reference computation independent of the learner, and a
`mint-rl serve` app running in this process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mint_rl import types


def rl_batch(
    vocab: int, *, seed: int = 0, groups: int = 2, samples: int = 3, prompt_len: int = 12
) -> list[dict]:
    """Groups of samples sharing a prompt; completions of different lengths (4..9 tokens)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(groups):
        prompt = torch.randint(3, vocab, (prompt_len,), generator=g).tolist()
        for s in range(samples):
            completion = torch.randint(3, vocab, (4 + (s * 2) % 6,), generator=g).tolist()
            full = prompt + completion
            n = len(full) - 1
            weights = [0.0] * (prompt_len - 1) + [1.0] * len(completion)
            adv = 1.0 if s % 2 == 0 else -0.5
            items.append({
                "tokens": full[:-1],
                "targets": full[1:],
                "weights": weights,
                "advantages": [a * adv for a in weights],
                "n": n,
            })
    return items


def reference_logprobs(model: torch.nn.Module, tokens: list[int], targets: list[int]):
    """Plain HF forward of one unpadded sequence, full log-softmax, gather: no packing."""
    logits = model(input_ids=torch.tensor([tokens])).logits[0].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(targets)[:, None]).squeeze(-1)


def to_datums(items: list[dict], loss_fn: str, sampler_logprobs: list[list[float]]) -> list:
    datums = []
    for item, q in zip(items, sampler_logprobs, strict=True):
        inputs = {"target_tokens": item["targets"]}
        if loss_fn == "cross_entropy":
            inputs["weights"] = item["weights"]
        else:
            inputs.update(logprobs=q, advantages=item["advantages"], weights=item["weights"])
        datums.append(types.Datum(model_input=types.ModelInput.from_ints(item["tokens"]),
                                  loss_fn_inputs=inputs))
    return datums


def lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def randomize_lora_b(model: torch.nn.Module, seed: int = 1, scale: float = 0.02) -> None:
    """LoRA B starts at 0; make it non-zero so the adapter matters and all grads are live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Runs the ASGI `app` with uvicorn on a thread, on a free loopback port; yields its URL.

    In this process, so the server's samplers share the session's vLLM engine."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def rl_step_data(vocab: int, *, groups: int, samples: int, tokens: int, prompt: int,
                 seed: int = 0) -> list:
    """An RL batch at a real shape: `groups` x `samples` datums of `tokens` model-input tokens,
    the first `prompt` shared within a group, the completion trained (ppo inputs)."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(groups):
        shared = torch.randint(100, vocab, (prompt,), generator=g).tolist()
        for s in range(samples):
            full = shared + torch.randint(100, vocab, (tokens + 1 - prompt,), generator=g).tolist()
            weights = [0.0] * (prompt - 1) + [1.0] * (tokens + 1 - prompt)
            advantage = 1.0 if s % 2 else -1.0
            data.append(types.Datum(
                model_input=types.ModelInput.from_ints(full[:-1]),
                loss_fn_inputs={"target_tokens": full[1:], "weights": weights,
                                "advantages": [advantage * w for w in weights],
                                # about a random model's own logprob of a token
                                "logprobs": [-10.8] * tokens}))
    return data

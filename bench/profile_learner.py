"""Where the learner's step time goes: one forward_backward and one optim_step, by category.

The batch, model and API are bench/bench_learner.py's `rl` row: 8 prompts x 4 samples, prompts
of 40..50 tokens, completions of 16, weights on the completions only; the default model
(SmolLM2-135M, 49152 x 576 tied embedding / LM head) with LoRA rank 16 on every attention and MLP
linear layer; `TrainingClient.forward_backward` with `ppo` and `cross_entropy`, then
`optim_step`; in fp32 and in the learner's bf16 setting (`LearnerSettings(dtype="bfloat16")`:
bf16 autocast, log-softmax in fp32).

Per dtype and loss: one warm-up step (forward_backward + optim_step), then 3 steps under
torch.profiler (CPU activities, record_shapes, every thread: the client computes on its worker
thread). Each torch op's self time goes to the category of its outermost enclosing op that one
can be given, by op name and input shapes:

  LM head matmul          matmuls with a vocab-sized operand (the 49152 x 576 weight), forward and
                          backward, and bf16 autocast's copy of that weight
  log-softmax on logits   every other op on a (positions x 49152) tensor: fp32 upcast, logsumexp,
                          gather and their backward
  attention               scaled_dot_product_attention and its backward
  base matmuls            the frozen q/k/v/o and gate/up/down projections, forward and backward
  LoRA matmuls            matmuls with a rank-sized (16) dimension
  other torch ops         norms, rotary, activations, embedding, masks, packing, loss, ...
  outside torch ops       wall time of the step not spent in any torch op (Python, waiting)

optim_step is profiled separately (grad norm, AdamW) and shown as its own row; shares are of
forward_backward + optim_step. The table reads the fastest of the 3 profiled forward_backward
calls and the fastest optim_step: other processes only ever add time, so the fastest is the least
disturbed. The profiler adds overhead (a few %), and other processes on the machine (they make
torch's intra-op threads wait on each other) change absolute times much more than shares:
compare shares, and check the load average printed with the results.

    .venv/bin/python bench/profile_learner.py [--dtype fp32|bf16|both] [--markdown out.md]
        [--loss ppo|cross_entropy|both] [--top N]   (N heaviest ops of each category, with shapes)
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from bench_learner import ADAM, PPO_CONFIG, RANK, machine, release_memory, rl_batch, to_datums
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

from mint_rl.client import ServiceClient, TrainingClient
from mint_rl.learner.engine import LearnerSettings
from mint_rl.models import DEFAULT_MODEL

PROFILED_STEPS = 3
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}

LM_HEAD = "LM head matmul (fwd + bwd)"
LOGITS = "log-softmax / logsumexp / gather on logits"
ATTENTION = "attention (SDPA fwd + bwd)"
BASE = "base MLP + projection matmuls"
LORA = "LoRA matmuls"
OTHER = "norms / elementwise / other torch ops"
OUTSIDE = "outside torch ops (Python, waits)"
OPTIM = "optimizer step (optim_step)"
FB_CATEGORIES = [LM_HEAD, LOGITS, ATTENTION, BASE, LORA, OTHER, OUTSIDE]

MATMULS = {"aten::linear", "aten::matmul", "aten::mm", "aten::addmm", "aten::bmm",
           "aten::baddbmm", "aten::addmm_", "aten::_addmm_activation"}
COPIES = {"aten::to", "aten::_to_copy", "aten::copy_"}


# ------------------------------------------------------------------------------------------------
# classifying profiler events


@dataclass(frozen=True)
class Shapes:
    """The model dimensions that identify an op: vocabulary, hidden size, LoRA rank."""

    vocab: int
    hidden: int
    rank: int


def classify(event: FunctionEvent, dims: Shapes) -> str | None:
    """The category of one op from its name and input shapes; None when it says nothing."""
    name = event.name
    if "scaled_dot_product" in name or "ScaledDotProduct" in name or "flash_attention" in name:
        return ATTENTION
    if name in ("aten::embedding", "aten::embedding_backward") or "EmbeddingBackward" in name:
        return OTHER  # reads the (vocab x hidden) table, but it is the input embedding
    if "Backward" in name and not name.startswith("aten::"):
        return None  # an autograd node: its inputs are only the gradients; its ops decide
    shapes = [list(s) for s in event.input_shapes if isinstance(s, list) and s]
    has_vocab = any(dims.vocab in s for s in shapes)
    if name in MATMULS:
        if has_vocab:
            return LM_HEAD
        matrix_dims = [d for s in shapes if len(s) >= 2 for d in s[-2:]]
        return LORA if dims.rank in matrix_dims else BASE
    if has_vocab:
        if name in COPIES and [dims.vocab, dims.hidden] in shapes:
            return LM_HEAD  # autocast's bf16 copy of the LM-head weight
        return LOGITS
    return None


def ancestors(event: FunctionEvent) -> list[FunctionEvent]:
    """The event and its enclosing ops, outermost first."""
    chain = []
    node: FunctionEvent | None = event
    while node is not None:
        chain.append(node)
        node = node.cpu_parent
    return chain[::-1]


def op_times(events: Iterable[FunctionEvent], dims: Shapes) -> dict[tuple[str, str], float]:
    """Self time (ms) per (category, op with its input shapes): each op's self time goes to the
    category of its outermost classifiable ancestor."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for event in events:
        if event.self_cpu_time_total <= 0:
            continue
        category = next((c for e in ancestors(event) if (c := classify(e, dims))), OTHER)
        shapes = [s for s in event.input_shapes if s]
        out[category, f"{event.name} {shapes}"] += event.self_cpu_time_total / 1e3
    return out


def top_ops(events: Iterable[FunctionEvent], n: int = 5) -> list[tuple[str, float]]:
    """The n op names with the most self time (ms), for the optimizer step's breakdown."""
    out: dict[str, float] = defaultdict(float)
    for event in events:
        out[event.name] += event.self_cpu_time_total / 1e3
    return sorted(out.items(), key=lambda kv: -kv[1])[:n]


# ------------------------------------------------------------------------------------------------
# profiling


@dataclass
class Timed:
    """One profiled call: its wall time and the self time of its ops (ms)."""

    wall: float
    ops: dict[tuple[str, str], float]  # (category, op with shapes) -> ms


@dataclass
class Profile:
    """The profiled steps of one (dtype, loss). The report reads the least-disturbed one."""

    fb: list[Timed] = field(default_factory=list)
    optim: list[Timed] = field(default_factory=list)

    def best(self) -> tuple[Timed, Timed]:
        """The fastest forward_backward and the fastest optim_step: other processes on the
        machine only ever add time, so the fastest step is the least disturbed one."""
        return min(self.fb, key=lambda t: t.wall), min(self.optim, key=lambda t: t.wall)

    def per_step(self) -> dict[str, float]:
        """ms of the least-disturbed step per forward_backward category, OUTSIDE and OPTIM."""
        fb, optim = self.best()
        out = {c: 0.0 for c in FB_CATEGORIES}
        for (category, _), ms in fb.ops.items():
            out[category] += ms
        out[OUTSIDE] = max(0.0, fb.wall - sum(out.values()))
        out[OPTIM] = optim.wall
        return out


def profiled(fn: Callable[[], object]) -> tuple[float, list[FunctionEvent]]:
    """Runs fn under the CPU profiler (all threads, with shapes); its wall ms and events."""
    config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                 experimental_config=config) as prof:
        t0 = time.perf_counter()
        fn()
        wall = (time.perf_counter() - t0) * 1e3
    return wall, list(prof.events())


def profile_loss(client: TrainingClient, data: list, loss: str, dims: Shapes,
                 steps: int = PROFILED_STEPS) -> Profile:
    """One warm-up step, then `steps` profiled forward_backward + optim_step pairs."""
    config = PPO_CONFIG if loss == "ppo" else None

    def fb() -> object:
        return client.forward_backward(data, loss, config).result()

    def optim() -> object:
        return client.optim_step(ADAM).result()

    fb()
    optim()
    release_memory()
    result = Profile()
    for _ in range(steps):
        wall, events = profiled(fb)
        result.fb.append(Timed(wall, op_times(events, dims)))
        wall, events = profiled(optim)
        result.optim.append(Timed(wall, {(OPTIM, name): ms for name, ms in top_ops(events)}))
        release_memory()
    return result


# ------------------------------------------------------------------------------------------------
# report


def table(profiles: dict[str, Profile]) -> str:
    """Markdown: one ms / share column pair per profiled (dtype, loss)."""
    names = list(profiles)
    rows = {name: p.per_step() for name, p in profiles.items()}
    header = "| category | " + " | ".join(f"{n} ms | {n} share" for n in names) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(names)]

    def line(label: str, values: list[tuple[float, float]], bold: bool = False) -> str:
        cells = " | ".join(f"{ms:,.0f} | {share:.1%}" for ms, share in values)
        return f"| **{label}** | {cells} |" if bold else f"| {label} | {cells} |"

    totals = {n: sum(r.values()) for n, r in rows.items()}
    for category in FB_CATEGORIES:
        lines.append(line(category, [(rows[n][category], rows[n][category] / totals[n])
                                     for n in names]))
    fb = {n: totals[n] - rows[n][OPTIM] for n in names}
    lines.append(line("forward_backward", [(fb[n], fb[n] / totals[n]) for n in names], True))
    lines.append(line(OPTIM, [(rows[n][OPTIM], rows[n][OPTIM] / totals[n]) for n in names]))
    lines.append(line("step total", [(totals[n], 1.0) for n in names], True))
    return "\n".join(lines)


def heaviest_ops(profiles: dict[str, Profile], n: int) -> str:
    """The n heaviest ops (name and input shapes) of each category, least-disturbed step."""
    out = []
    for name, p in profiles.items():
        fb, optim = p.best()
        out.append(f"{name}: heaviest ops per category (self ms in the least-disturbed step)")
        for category in [*FB_CATEGORIES, OPTIM]:
            ops = sorted(((op, ms) for (c, op), ms in {**fb.ops, **optim.ops}.items()
                          if c == category), key=lambda kv: -kv[1])[:n]
            if ops:
                out.append(f"  {category}")
                out += [f"    {ms:8.1f}  {op}" for op, ms in ops]
    return "\n".join(out)


def step_walls(profiles: dict[str, Profile]) -> str:
    """Every profiled step's wall time: how much other load disturbed the run."""
    return "\n".join(
        f"- {name}: forward_backward " + ", ".join(f"{t.wall:,.0f}" for t in p.fb)
        + " ms; optim_step " + ", ".join(f"{t.wall:,.0f}" for t in p.optim) + " ms"
        for name, p in profiles.items())


# ------------------------------------------------------------------------------------------------


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def make_client(dtype: str, seed: int) -> TrainingClient:
    settings = LearnerSettings(dtype=dtype)
    return ServiceClient(learner_settings=settings).create_lora_training_client(
        DEFAULT_MODEL, rank=RANK, seed=seed)


def model_dims(client: TrainingClient) -> Shapes:
    config = client.engine.hf_model().config
    return Shapes(vocab=int(config.vocab_size), hidden=int(config.hidden_size), rank=RANK)


def rl_data(client: TrainingClient, seed: int) -> dict[str, list]:
    """bench_learner's rl batch as datums for each loss; ppo's sampler logprobs are the
    policy's own (ratios start at 1), as in bench_learner."""
    batch = rl_batch(np.random.default_rng(seed), client.engine.vocab_size)
    ce = to_datums(batch, "cross_entropy")
    fwd = client.forward(ce, "cross_entropy").result()
    sampler_lp = [o["logprobs"].to_numpy().tolist() for o in fwd.loss_fn_outputs]
    return {"ppo": to_datums(batch, "ppo", sampler_lp), "cross_entropy": ce}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--loss", choices=["ppo", "cross_entropy", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="also write the markdown table to this file")
    parser.add_argument("--top", type=int, default=0, metavar="N",
                        help="also print the N heaviest ops (with shapes) of each category")
    args = parser.parse_args()

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    torch.manual_seed(args.seed)
    log(f"{machine()}; {load_average()}")
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    losses = ["ppo", "cross_entropy"] if args.loss == "both" else [args.loss]
    profiles: dict[str, Profile] = {}
    for dtype in dtypes:
        client = make_client(DTYPES[dtype], args.seed)
        dims = model_dims(client)
        data = rl_data(client, args.seed)
        for loss in losses:
            log(f"{dtype} {loss}: 1 warm-up step, {PROFILED_STEPS} profiled steps")
            profiles[f"{dtype} {loss}"] = p = profile_loss(client, data[loss], loss, dims)
            log("  forward_backward " + ", ".join(f"{t.wall:,.0f}" for t in p.fb) + " ms")
        del client
        release_memory()

    md = table(profiles)
    print()
    print(md)
    print()
    print("Profiled steps (the table shows the fastest of each):")
    print(step_walls(profiles))
    if args.top:
        print()
        print(heaviest_ops(profiles, args.top))
    log(f"done; {load_average()}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"Machine: {machine()}; at the end: {load_average()}\n\n{md}\n\n"
                    f"Profiled steps (the table shows the fastest of each):\n"
                    f"{step_walls(profiles)}\n")


if __name__ == "__main__":
    main()

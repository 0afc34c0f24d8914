"""`mint-rl serve` with several training clients of one base model: the server's RSS with 1, 2
and 4 clients, the base weights shared (the server as it is) or copied per client (as before
BaseModels).

For each model and mode a fresh server runs in its own process (this script with --serve, which
builds the app with mint_rl.server.create_app and runs uvicorn; with --no-share it first patches
BaseModels.get to load a fresh copy of the base model on every call, which is what every client
did before the base weights were shared). The official tinker SDK then creates rank-16 LoRA
clients one by one (default train_* flags); after each creation every client created so far runs
one forward_backward (cross_entropy, 4 datums x 128 random tokens, weights 1) and one optim_step,
so its adapter, gradients and Adam moments exist. Then GET /api/v1/status gives the server's
current and peak RSS, the base weights' bytes and each client's adapter and optimizer bytes. The
current RSS is read twice: right after the steps (it still holds the activations glibc keeps
for reuse, so it is noisy) and after the engines' own idle release (malloc_trim ~10 s after the
last work) has run; the second, `server_rss`, is the one the figures below use.

The check (shared mode): rss(4) <= rss(1) + 3 x (adapter + optimizer) + 0.10 x base, i.e. a
client past the first costs its own state, not another copy of the base. Also reported for both
modes: the cost of each extra client, (rss(4) - rss(1)) / 3.

    .venv/bin/python bench/bench_server_clients.py [--models smollm2 qwen3_0.6b] [--no-write]

One result file per model: bench/results/server_clients_<model>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_serve_memory import free_port, wait_healthy

KEY = "tml-bench"
COUNTS = (1, 2, 4)  # clients at which the figures are recorded
RANK, DATUMS, TOKENS = 16, 4, 128
MODES = {"shared": True, "copies": False}
MiB = 2**20


def models() -> dict[str, str]:
    """Bench name -> the base model the SDK asks for (an id, or a folder path)."""
    return {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "qwen3_0.6b": str(Path.home() / ".mint_rl" / "models" / "random-qwen3-0.6b")}


# --------------------------------------------------------------------------------------------
# The server (--serve): run in a child process, so its RSS is the server's alone


def per_client_copies() -> None:
    """Patches BaseModels.get to load a fresh base model on every call: each engine gets its
    own copy, as before the weights were shared. The newest copy is still recorded, so /status
    reports one copy's bytes."""
    from mint_rl.learner.base_models import BaseModels, load_base

    def get(self: BaseModels, model_dir: Path, device: Any) -> Any:
        model = load_base(Path(model_dir), device)
        with self._lock:
            self._loaded[(str(Path(model_dir).resolve()), str(device))] = model
        return model

    BaseModels.get = get  # type: ignore[method-assign]


def serve(port: int, share: bool) -> None:
    import uvicorn

    from mint_rl.server import ServerConfig, create_app

    if not share:
        per_client_copies()
    uvicorn.run(create_app(ServerConfig(port=port)), host="127.0.0.1", port=port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)


def start_server(share: bool, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MINT_RL_RUNS": str(work / "storage")}
    command = [sys.executable, __file__, "--serve", "--port", str(port)]
    server = subprocess.Popen(command + ([] if share else ["--no-share"]), env=env,
                              stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, server)
    return server, url


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# --------------------------------------------------------------------------------------------
# The clients (the tinker SDK)


def vocab_size(base_model: str) -> int:
    from mint_rl.models import resolve_model

    config = json.loads((resolve_model(base_model) / "config.json").read_text())
    return int(config["vocab_size"])


def batch(vocab: int, rng: np.random.Generator) -> list[Any]:
    """DATUMS datums of TOKENS random token ids, every target weighted 1."""
    from tinker import types as tt

    out = []
    for _ in range(DATUMS):
        ids = rng.integers(0, vocab, TOKENS + 1).tolist()
        out.append(tt.Datum(model_input=tt.ModelInput.from_ints(ids[:-1]),
                            loss_fn_inputs={"target_tokens": ids[1:],
                                            "weights": [1.0] * TOKENS}))
    return out


def figures(url: str, clients: int) -> dict[str, Any]:
    """The server's memory as /status reports it, with `clients` training clients: read right
    after the steps, then again once the engines' idle release (malloc_trim after
    IDLE_RELEASE_S without work, the server's own doing) has given freed activations back."""
    from mint_rl.learner.memory import IDLE_RELEASE_S

    busy = httpx.get(f"{url}/api/v1/status", timeout=30).json()
    time.sleep(IDLE_RELEASE_S + 3)
    status = httpx.get(f"{url}/api/v1/status", timeout=30).json()
    own = list(status["models"].values())
    return {"clients": clients, "server_rss": status["memory"]["server_rss"],
            "server_rss_after_step": busy["memory"]["server_rss"],
            "server_peak_rss": status["memory"]["server_peak_rss"],
            "base_bytes": sum(b["bytes"] for b in status["base_models"]),
            "adapter_bytes": max(m["adapter_bytes"] for m in own),
            "optimizer_bytes": max(m["optimizer_bytes"] for m in own),
            "status_after_step": busy, "status": status}


def measure(base_model: str, share: bool, max_clients: int) -> list[dict[str, Any]]:
    """Figures after 1..max_clients clients (each step trains every client so far once)."""
    import tinker
    from tinker import types as tt

    rng = np.random.default_rng(0)
    vocab = vocab_size(base_model)
    work = Path(tempfile.mkdtemp(prefix="bench-server-clients-"))
    server, url = start_server(share, work)
    rows: list[dict[str, Any]] = []
    try:
        service = tinker.ServiceClient(base_url=url, api_key=KEY)
        clients: list[Any] = []
        for n in range(1, max_clients + 1):
            clients.append(service.create_lora_training_client(base_model, rank=RANK).result())
            for client in clients:
                fb = client.forward_backward(batch(vocab, rng), "cross_entropy")
                step = client.optim_step(tt.AdamParams(learning_rate=1e-4))
                fb.result(), step.result()
            if n in COUNTS:
                rows.append(figures(url, n))
                print(f"  {n} client(s): rss {rows[-1]['server_rss'] / MiB:.0f} MiB",
                      flush=True)
        with contextlib.suppress(Exception):
            service.close("success").result()
    finally:
        stop_server(server)
    return rows


# --------------------------------------------------------------------------------------------
# The figures


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per mode the cost of each extra client; for the shared mode the issue's check."""
    out: dict[str, Any] = {}
    for mode, rows in runs.items():
        by_n = {r["clients"]: r for r in rows}
        one, four = by_n[1], by_n[max(by_n)]
        extra = max(by_n) - 1
        out[mode] = {"per_extra_client_rss": (four["server_rss"] - one["server_rss"]) / extra,
                     "per_extra_client_rss_after_step":
                         (four["server_rss_after_step"] - one["server_rss_after_step"]) / extra,
                     "per_extra_client_peak_rss":
                         (four["server_peak_rss"] - one["server_peak_rss"]) / extra}
    if "shared" in runs:
        by_n = {r["clients"]: r for r in runs["shared"]}
        one, four = by_n[1], by_n[max(by_n)]
        own = four["adapter_bytes"] + four["optimizer_bytes"]
        allowance = (max(by_n) - 1) * own + 0.10 * four["base_bytes"]
        bound, bound_busy = (one["server_rss"] + allowance,
                             one["server_rss_after_step"] + allowance)
        out["check"] = {"rule": "rss(4) <= rss(1) + 3 x (adapter + optimizer) + 0.10 x base",
                        "rss_4": four["server_rss"], "bound": bound,
                        "holds": four["server_rss"] <= bound,
                        "rss_4_after_step": four["server_rss_after_step"],
                        "bound_after_step": bound_busy,
                        "holds_after_step": four["server_rss_after_step"] <= bound_busy}
    return out


def show(name: str, runs: dict[str, list[dict[str, Any]]], result: dict[str, Any]) -> None:
    print(f"\n{name} (MiB)")
    print(f"{'mode':8}{'N':>3}{'rss':>9}{'rss@step':>9}{'peak':>9}{'base':>9}{'adapter':>9}"
          f"{'optim':>9}")
    for mode, rows in runs.items():
        for r in rows:
            print(f"{mode:8}{r['clients']:>3}{r['server_rss'] / MiB:>9.0f}"
                  f"{r['server_rss_after_step'] / MiB:>9.0f}"
                  f"{r['server_peak_rss'] / MiB:>9.0f}{r['base_bytes'] / MiB:>9.0f}"
                  f"{r['adapter_bytes'] / MiB:>9.1f}{r['optimizer_bytes'] / MiB:>9.1f}")
    for mode in runs:
        s = result[mode]
        print(f"{mode}: each extra client {s['per_extra_client_rss'] / MiB:.0f} MiB RSS "
              f"({s['per_extra_client_peak_rss'] / MiB:.0f} MiB peak)")
    if "check" in result:
        c = result["check"]
        print(f"check {c['rule']}: {c['rss_4'] / MiB:.0f} <= {c['bound'] / MiB:.0f} MiB: "
              f"{'holds' if c['holds'] else 'FAILS'} (right after the steps: "
              f"{c['rss_4_after_step'] / MiB:.0f} <= {c['bound_after_step'] / MiB:.0f} MiB: "
              f"{'holds' if c['holds_after_step'] else 'fails'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(models()), default=list(models()))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--no-write", action="store_true", help="print only, write no result")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-share", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, share=not args.no_share)
        return 0

    os.environ["TINKER_API_KEY"] = KEY  # the SDK insists on a key with the tml- prefix
    for name in args.models:
        base_model = models()[name]
        runs = {}
        for mode in args.modes:
            print(f"{name}, {mode}:", flush=True)
            runs[mode] = measure(base_model, MODES[mode], max(COUNTS))
        result = summary(runs)
        show(name, runs, result)
        if not args.no_write:
            from results import write_result

            path = write_result(f"server_clients_{name}", {
                "base_model": base_model, "rank": RANK, "datums": DATUMS, "tokens": TOKENS,
                "loss_fn": "cross_entropy", "runs": runs, "summary": result})
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

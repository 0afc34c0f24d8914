"""`mint-rl serve` under an unmodified tinker-cookbook recipe: the server's peak memory and step
times.

Starts `mint-rl serve` in its own process, runs the cookbook's multiplayer `guess_number` recipe
(its own entry point, configured only by its options and TINKER_BASE_URL) for a few steps with
the bundled SmolLM2-135M, then reads the peak RSS (VmHWM) of the server process and of its vLLM
engine process before stopping it. Step times come from the cookbook's own metrics.jsonl.

    .venv/bin/python bench/bench_serve_memory.py [--steps 3] [--batch-size 4 --group-size 4] \
        [--name serve_memory_guess_number]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

KEY = "tml-bench"
RECIPE = "tinker_cookbook.recipes.multiplayer_rl.guess_number.train"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the server did not answer /healthz")


def peaks(pid: int) -> dict[str, Any]:
    """VmHWM of the process and of each child (the vLLM engine core), in bytes."""
    from mint_rl.process_memory import peak_rss

    out: dict[str, Any] = {"server": peak_rss(pid), "children": {}}
    for child in psutil.Process(pid).children(recursive=True):
        out["children"][f"{child.pid} {' '.join(child.cmdline()[:3])[:80]}"] = \
            peak_rss(child.pid)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from mint_rl.models import DEFAULT_MODEL, resolve_model

    model = resolve_model(DEFAULT_MODEL)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {**os.environ, "TINKER_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([str(bin_dir / "mint-rl"), "serve", "--port", str(port),
                               "--storage", str(work / "storage")],
                              env=env, stdout=open(work / "server.log", "w"),
                              stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, server)
        options = {"model_name": str(model), "renderer_name": "qwen3_instruct",
                   "batch_size": args.batch_size, "group_size": args.group_size,
                   "max_steps": args.steps, "eval_every": 0, "save_every": 0,
                   "log_path": work / "run", "behavior_if_log_dir_exists": "delete"}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", RECIPE,
                               *(f"{k}={v}" for k, v in options.items())],
                              env={**env, "TINKER_BASE_URL": url}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        memory = peaks(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:])
        return 1
    steps = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    timing = [{k: v for k, v in s.items() if k.startswith("time/")} for s in steps]
    print(f"server peak RSS {memory['server'] / 2**30:.2f} GiB; engine processes "
          + ", ".join(f"{v / 2**30:.2f} GiB" for v in memory["children"].values() if v))
    for i, t in enumerate(timing):
        print(f"step {i}: total {t.get('time/total', float('nan')):.1f} s, "
              f"train {t.get('time/train', float('nan')):.1f} s")
    if args.name:
        from results import write_result

        path = write_result(args.name, {"recipe": RECIPE, "options": {
            k: str(v) for k, v in options.items()}, "wall_s": wall, "peak_rss": memory,
            "steps": steps})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

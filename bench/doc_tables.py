"""Writes the docs' tables of measured figures from the result files (never by hand).

    .venv/bin/python bench/doc_tables.py          # rewrite every table below in place
    .venv/bin/python bench/doc_tables.py --check  # fail if a doc differs from the data (CI)

Each table sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` in its doc:
- docs/memory.md `learner-memory`: the learner at real shapes (bench_learner_memory.py:
  bench/results/learner_memory_*.json); `serve-memory`: the server under the cookbook's
  guess_number (bench_serve_memory.py: serve_memory_*.json)
- docs/server.md `server-clients`: server RSS with 1/2/4 training clients, base weights shared or
  copied (bench_server_clients.py: server_clients_*.json)
- docs/arithmetic.md `arithmetic-run`: the README main job's documented run (its metrics file,
  docs/arithmetic_k0_metrics.jsonl)
- docs/pipeline.md `trip`: the files one group's trip runs through (trip_files.py:
  trip_files*.json); `structure-behaviour`: the arithmetic recipe's curve and step time before
  and after a structure change, one sitting (time_to_quality.py: structure_behaviour_*.json)
- docs/off_policy.md `time-to-quality`: wall-clock time to 0.9 held-out accuracy at K = 0 and
  K = 1 (time_to_quality.py: time_to_quality_*.json)
- docs/rl_bench.md `rl-step`: whole RL steps of mint_rl and TRL's GRPOTrainer, several
  invocations (bench_rl.py: rl_step_*.json)
- README.md `headline`: the front page's figures, each from the file its row links to
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from doc_markers import replace_between_markers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GiB, MiB = 1 << 30, 1 << 20


def _load(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def _result(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _when(result: dict[str, Any]) -> str:
    s = result["sitting"]
    return f"{s['date'][:16].replace('T', ' ')} UTC, {s['commit']}"


def learner_table() -> str:
    lines = ["| result | code | batch (groups x samples x tokens) | tokens | step s (each) "
             "| tokens/s (best) | peak RSS GiB | micro-batch tokens | micro-batches "
             "| recompute |", "|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for name, result in _load("learner_memory_*.json"):
        for row in result["rows"]:
            if "steps" not in row:
                lines.append(f"| {name} | {_when(result)} | {row['batch']} | | "
                             f"{row.get('error', 'failed')} | | | | | |")
                continue
            times = [s["seconds"] for s in row["steps"]]
            plan = row["steps"][-1]["metrics"]
            tokens = plan.get("memory/microbatch_tokens:max")
            parts = plan.get("memory/microbatches:sum")
            recompute = plan.get("memory/recompute:max")
            lines.append(
                f"| {name} | {_when(result)} | {row['batch']} | {row['tokens']} "
                f"| {', '.join(f'{t:.1f}' for t in times)} | {row['tokens'] / min(times):.1f} "
                f"| {row['peak_rss'] / GiB:.2f} | {'' if tokens is None else f'{tokens:.0f}'} "
                f"| {'' if parts is None else f'{parts:.0f}'} "
                f"| {'' if recompute is None else ('on' if recompute else 'off')} |")
    return "\n".join(lines)


def serve_table() -> str:
    lines = ["| result | code | trained tokens per step | train_step s (each) | median "
             "| server peak RSS GiB | engine peak RSS GiB |", "|---|---|---|---|---:|---:|---:|"]
    for name, result in _load("serve_memory_*.json"):
        steps = [s for s in result["steps"] if "time/train_step" in s]
        train = [s["time/train_step"] for s in steps]
        tokens = ", ".join(str(int(s.get("tokens/trained", 0))) for s in steps)
        engines = [v for v in result["peak_rss"]["children"].values() if v and v > GiB // 4]
        lines.append(f"| {name} | {_when(result)} | {tokens} | "
                     f"{', '.join(f'{t:.0f}' for t in train)} | {statistics.median(train):.0f} "
                     f"| {result['peak_rss']['server'] / GiB:.2f} "
                     f"| {max(engines) / GiB if engines else float('nan'):.2f} |")
    return "\n".join(lines)


SERVER_MODELS = {"server_clients_smollm2": "SmolLM2-135M",
                 "server_clients_qwen3_0.6b": "Qwen3-0.6B shape, random weights"}


def server_clients_table() -> str:
    def per_count(runs: list[dict[str, Any]], key: str) -> str:
        return " / ".join(f"{r[key] / MiB:.0f}" for r in runs)

    lines = ["| base model | base MiB | adapter + Adam MiB | RSS shared | RSS copies | peak shared "
             "| peak copies |", "|---|---|---|---|---|---|---|"]
    for name, label in SERVER_MODELS.items():
        runs = _result(name)["runs"]
        shared, copies = runs["shared"], runs["copies"]
        first = shared[0]
        own = (first["adapter_bytes"] + first["optimizer_bytes"]) / MiB
        lines.append(f"| {label} | {first['base_bytes'] / MiB:.0f} | {own:.1f} "
                     f"| {per_count(shared, 'server_rss')} | {per_count(copies, 'server_rss')} "
                     f"| {per_count(shared, 'server_peak_rss')} "
                     f"| {per_count(copies, 'server_peak_rss')} |")
    return "\n".join(lines)


ARITHMETIC_RUN = ROOT / "docs" / "arithmetic_k0_metrics.jsonl"


def _arithmetic_run() -> tuple[list[dict[str, Any]], float]:
    """The documented run's metric rows (those with an evaluation) and its median step."""
    rows = [json.loads(x) for x in ARITHMETIC_RUN.read_text().splitlines()]
    step = statistics.median(r["time/step"] for r in rows if "time/step" in r)
    return [r for r in rows if "eval/accuracy" in r], step


def arithmetic_run_table() -> str:
    """The README main job's documented run: held-out accuracy and time at each evaluation."""
    evaluated, step = _arithmetic_run()
    out = ["| step | held-out accuracy | seconds of training so far | mean reward of the step |",
           "|---:|---:|---:|---:|"]
    for r in evaluated:
        reward = f"{r['reward/mean']:.2f}" if "reward/mean" in r else ""
        out.append(f"| {r['step']} | {r['eval/accuracy']:.3f} | {r['time/elapsed']:.0f} "
                   f"| {reward} |")
    out += ["", f"Median step {step:.2f} s."]
    return "\n".join(out)


def _arithmetic_row() -> str:
    evaluated, step = _arithmetic_run()
    accuracy = {r["step"]: r["eval/accuracy"] for r in evaluated}
    return ("| Arithmetic RL, SmolLM2-135M, K = 0, 30 steps (the README's main job at its "
            "defaults, one run, 2026-12-08) | held-out accuracy "
            f"{accuracy[0]:.3f} → {accuracy[10]:.3f} (step 10) → {accuracy[30]:.3f} (step 30); "
            f"median step {step:.1f} s | [arithmetic.md](docs/arithmetic.md) "
            "| [arithmetic_k0_metrics.jsonl](docs/arithmetic_k0_metrics.jsonl) |")


def _median_time_to_target(runs: list[dict[str, Any]]) -> float:
    """The median seconds to the target; a run that never reached it counts as infinitely late
    (so the median is inf unless more than half reached it)."""
    return statistics.median(r["reached"]["seconds"] if r["reached"] else math.inf
                             for r in runs)


def _best_accuracy(run: dict[str, Any]) -> float:
    return max(e["accuracy"] for e in run["evals"])


def _time_to_quality_row() -> str:
    result = _result("time_to_quality_arithmetic")
    target, runs = result["config"]["target"], result["runs"]

    def summary(k: int) -> str:
        mine = [r for r in runs if r["k"] == k]
        hits = sum(1 for r in mine if r["reached"])
        median = _median_time_to_target(mine)
        if median != math.inf:
            return f"K = {k}: median {median:.0f} s ({hits} of {len(mine)} seeds reached it)"
        return (f"K = {k}: {hits} of {len(mine)} seeds reached it in "
                f"{result['config']['steps']} steps (best {max(map(_best_accuracy, mine)):.2f})")

    return (f"| Wall-clock time to {target} held-out accuracy, arithmetic, K = 0 against K = 1 "
            f"({_when(result)}) | {summary(0)}; {summary(1)} "
            "| [off_policy.md](docs/off_policy.md#time-to-09-does-k--1-pay-in-wall-clock-time) "
            "| [time_to_quality_arithmetic.json]"
            "(bench/results/time_to_quality_arithmetic.json) |")


def _defaults_row() -> str:
    """The arithmetic recipe at its defaults, every seed of the two latest sittings."""
    names = ("structure_behaviour_before", "structure_behaviour_after")
    finals = [f"{r['evals'][-1]['accuracy']:.2f}" for n in names for r in _result(n)["runs"]]
    when = _when(_result(names[-1]))
    return ("| Arithmetic RL at the defaults (K = 0, 30 steps), SmolLM2-135M, "
            f"{len(finals)} runs: seeds 0-2 twice, unseeded sampling (latest {when}) "
            f"| held-out accuracy at step 30: {', '.join(finals)} "
            "| [pipeline.md](docs/pipeline.md#behaviour-across-a-structure-change) "
            "| [before](bench/results/structure_behaviour_before.json), "
            "[after](bench/results/structure_behaviour_after.json) |")


def _rl_step_row(name: str, what: str, memory: bool = False) -> str:
    """The README row of one rl_step_*.json: both K against TRL at its fastest (`memory`: and
    each system's peak RSS)."""
    result = _result(name)
    systems = _rl_step_systems(result)
    fastest = _trl_fastest(systems)

    def figure(system: str) -> str:
        rss = f", {_peak_rss(systems[system])} GiB" if memory else ""
        return (f"{system} {_system_median(systems[system]):.1f} s{rss}, "
                f"{_ratio_text(_speedups(result, system, fastest))}")

    step = _system_median(systems[fastest])
    trl_rss = f", {_peak_rss(systems[fastest])} GiB" if memory else ""
    peer = "at its fastest" if len(_trl_candidates(systems)) > 1 else "in the one setting run"
    # mint_rl's rows in the sitting: fp32 (its default), and bf16 where it ran (TRL's own
    # precision when a bf16 setting is its fastest).
    mint = [s for s in ("mint_rl K=0", "mint_rl K=1", "mint_rl K=0 bf16", "mint_rl K=1 bf16")
            if s in systems]
    return (f"| RL step against TRL's GRPOTrainer {peer} ({fastest}, {step:.1f} s{trl_rss}), "
            f"{what}, {len(result['invocations'])} invocations ({_when(result)}) "
            f"| {'; '.join(figure(s) for s in mint)} (median step"
            + ("; peak RSS, mint_rl's learner + vLLM engine" if memory else "")
            + "; speed-up: median and range over invocations) "
            "| [rl_bench.md](docs/rl_bench.md#results) "
            f"| [{name}.json](bench/results/{name}.json) |")


def _peak_rss(runs: list[dict[str, Any]], engine_label: str = "") -> str:
    """A system's peak RSS over its runs, GiB: mint_rl's as learner + `engine_label` engine."""
    rss = max(r["peak_rss_gib"] for r in runs)
    engine = max(r.get("engine_peak_rss_gib", 0.0) for r in runs)
    return f"{rss:.2f}" + (f" + {engine_label}{engine:.2f}" if engine else "")


def _learner_row() -> str:
    now = {r["batch"]: r["peak_rss"] / GiB for r in _result("learner_memory_qwen3-0.6b")["rows"]}
    before = {r["batch"]: r["peak_rss"] / GiB
              for r in _result("learner_memory_qwen3-0.6b_before")["rows"] if "peak_rss" in r}
    return ("| Learner at Qwen3-0.6B's shape (random weights), RL batch of 16 x 512 tokens | peak "
            f"RSS {now['4x4x512']:.2f} GiB; for 4 x 512 tokens {now['1x4x512']:.2f} GiB, against "
            f"{before['1x4x512']:.2f} GiB with the old fixed micro-batches "
            "| [memory.md](docs/memory.md#the-learner-at-qwen3-06bs-shape) "
            "| [learner_memory_qwen3-0.6b.json](bench/results/learner_memory_qwen3-0.6b.json), "
            "[_before](bench/results/learner_memory_qwen3-0.6b_before.json) |")


def _serve_row() -> str:
    def figures(name: str) -> tuple[float, float]:
        result = _result(name)
        train = [s["time/train_step"] for s in result["steps"] if "time/train_step" in s]
        return result["peak_rss"]["server"] / GiB, statistics.median(train)

    (peak, step), (peak_before, step_before) = (figures("serve_memory_guess_number"),
                                                figures("serve_memory_guess_number_before"))
    return ("| `mint-rl serve` under tinker-cookbook's guess_number, SmolLM2-135M, 3 steps | "
            f"server peak RSS {peak:.2f} GiB (old code {peak_before:.2f}); median train step "
            f"{step:.0f} s (old code {step_before:.0f} s) "
            "| [memory.md](docs/memory.md#the-server-under-the-cookbooks-guess_number) "
            "| [serve_memory_guess_number.json](bench/results/serve_memory_guess_number.json), "
            "[_before](bench/results/serve_memory_guess_number_before.json) |")


def _server_clients_row() -> str:
    def four(name: str) -> str:
        runs = _result(name)["runs"]
        rss = [next(r["server_rss"] for r in runs[kind] if r["clients"] == 4) / MiB
               for kind in ("shared", "copies")]
        return f"{rss[0]:.0f} vs {rss[1]:.0f} MiB"

    return ("| `mint-rl serve` with 4 training clients of one base model: server RSS, base "
            "weights shared vs a copy per client | SmolLM2-135M "
            f"{four('server_clients_smollm2')}; Qwen3-0.6B shape "
            f"{four('server_clients_qwen3_0.6b')} "
            "| [server.md](docs/server.md#many-loras-on-one-base) "
            "| [smollm2](bench/results/server_clients_smollm2.json), "
            "[qwen3_0.6b](bench/results/server_clients_qwen3_0.6b.json) |")


def _recipes_row() -> str:
    runs = _result("run_memory_qwen3-0.6b")["runs"]

    def peak(run: str, key: str) -> float:
        return max(r[key] for r in runs[run]["rows"] if key in r)

    return ("| Recipes at Qwen3-0.6B's shape, 2 steps each | `sft`: learner peak RSS "
            f"{peak('sft06', 'memory/learner_peak_rss_gib'):.2f} GiB; `math`: vLLM engine peak "
            f"RSS {peak('math06', 'memory/engine_peak_rss_gib'):.2f} GiB "
            "| [memory.md](docs/memory.md#recipes-at-the-06b-shape) "
            "| [run_memory_qwen3-0.6b.json](bench/results/run_memory_qwen3-0.6b.json) |")


def trip_table() -> str:
    """The trip's files now, and the count in every earlier measurement."""
    now = _result("trip_files")
    lines = ["| measured | trip files | actor runtime | the run around it |",
             "|---|---:|---:|---:|"]
    for name, result in _load("trip_files*.json"):
        counts = result["counts"]
        lines.append(f"| {name} ({_when(result)}) | {counts['trip']} | {counts['runtime']} "
                     f"| {counts['run']} |")
    files = ", ".join(f"`{f}`" for f in now["files"]["trip"])
    return "\n".join([*lines, "", f"The trip's files ({_when(now)}): {files}."])


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else ""


def time_to_quality_table() -> str:
    return _time_to_target_tables("time_to_quality_*.json")


def structure_behaviour_table() -> str:
    return _time_to_target_tables("structure_behaviour_[ab]*.json")


def _time_to_target_tables(pattern: str) -> str:
    """Per K: each seed's time (and step) to the target, their median, each seed's final
    accuracy, and the median phase times over the steps without an evaluation of every seed (and
    the evaluations' median)."""
    out = []
    for name, result in _load(pattern):
        target, runs = result["config"]["target"], result["runs"]
        seeds = sorted({r["seed"] for r in runs})
        out += [f"{name} ({_when(result)}): `{result['config']['command']}`, target {target}.",
                "", "| K | " + " | ".join(f"seed {s}: s (step)" for s in seeds)
                + " | median s to target | final accuracy | step s | sampling wait s "
                "| training s | loading weights s | evaluation s | staleness max |",
                "|---|" + "---:|" * (len(seeds) + 8)]
        for k in sorted({r["k"] for r in runs}):
            mine = {r["seed"]: r for r in runs if r["k"] == k}
            cells = [f"{mine[s]['reached']['seconds']:.1f} ({mine[s]['reached']['step']})"
                     if mine[s]["reached"] else f"not reached (best {_best_accuracy(mine[s]):.2f})"
                     for s in seeds]
            # Phases of the steps without an evaluation (which holds the training loop), and
            # the evaluations' own time.
            plain = [x for r in mine.values() for x in r["steps"] if "time/eval" not in x]
            phases = {key: [x[key] for x in plain if key in x]
                      for key in ("time/step", "time/sample_wait", "time/train",
                                  "time/load_weights")}
            phases["time/eval"] = [x["time/eval"] for r in mine.values() for x in r["steps"]
                                   if "time/eval" in x]
            median = _median_time_to_target(list(mine.values()))
            cells.append(f"**{median:.1f}**" if median != math.inf else "not reached")
            cells.append(" / ".join(f"{mine[s]['evals'][-1]['accuracy']:.2f}" for s in seeds))
            cells += [_median(phases[key]) for key in phases]
            cells.append(str(max(r["staleness_max"] for r in mine.values())))
            out.append(f"| {k} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip()


def _rl_step_systems(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """System -> its run in each invocation (runs that failed are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for invocation in result["invocations"]:
        for system, run in invocation.items():
            if "steps" in run:
                out.setdefault(system, []).append(run)
    return out


def _run_median(run: dict[str, Any], key: str = "seconds") -> float:
    return statistics.median(s[key] for s in run["steps"])


def _system_median(runs: list[dict[str, Any]]) -> float:
    """A system's step: the median over invocations of each invocation's median step."""
    return statistics.median(map(_run_median, runs))


def _ratio_text(ratios: list[float]) -> str:
    """"median (min-max)" of per-invocation speed-ups."""
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _trl_candidates(systems: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [name for name in systems if name.startswith("TRL")]


def _trl_fastest(systems: dict[str, list[dict[str, Any]]]) -> str:
    """The TRL candidate with the lowest median step."""
    return min(_trl_candidates(systems), key=lambda name: _system_median(systems[name]))


def _speedups(result: dict[str, Any], system: str, fastest: str) -> list[float]:
    """Per invocation: TRL at its fastest's median step over `system`'s, in the same
    invocation."""
    return [_run_median(inv[fastest]) / _run_median(inv[system])
            for inv in result["invocations"]
            if "steps" in inv.get(fastest, {}) and "steps" in inv.get(system, {})]


def _settings(system: str, run: dict[str, Any]) -> str:
    if system.startswith("TRL"):
        return (f"TRL {run['versions']['trl']}, {'bf16' if run['bf16'] else 'fp32'}, gradient "
                f"checkpointing {'on' if run['gradient_checkpointing'] else 'off'}, torch "
                f"{run['torch_threads']} threads")
    return ("sampler and learner share both cores" if "K=0" in system
            else "sampler on core 0, learner on core 1") + (
        ", bf16" if "bf16" in system else ", fp32")


def _phases(system: str, runs: list[dict[str, Any]]) -> tuple[float, float]:
    """(sampling, training) seconds per step, medians over every measured step. TRL: its
    generation and scoring, and the rest of the step. mint_rl: the training loop's wait for
    samples (at K = 1 what sampling did not hide behind training), and training + saving."""
    steps = [s for run in runs for s in run["steps"]]
    if system.startswith("TRL"):
        return (statistics.median(s["sampling"] for s in steps),
                statistics.median(s["training"] for s in steps))
    return (statistics.median(s["sample_wait"] for s in steps),
            statistics.median(s["train"] + s["save_weights"] for s in steps))


def rl_step_table() -> str:
    out = []
    for name, result in _load("rl_step_*.json"):
        c, systems = result["config"], _rl_step_systems(result)
        fastest = _trl_fastest(systems)
        out += [f"{name} ({_when(result)}, {result['sitting']['cpu']}, "
                f"{result['sitting']['cores']} cores): `{c['command']}`. {c['prompts']} prompts "
                f"x {c['samples']} samples x <= {c['max_tokens']} new tokens, "
                f"{Path(c['model']).name}, LoRA r{c['lora_rank']}; "
                f"{c['steps']} steps per run, the first {c['warmup']} not measured; "
                f"{len(result['invocations'])} invocations. TRL at its fastest that sitting: "
                f"**{fastest}**"
                + (" (the only TRL setting run)." if len(_trl_candidates(systems)) == 1
                   else "."), "",
                "| system | settings | step s: median of each invocation | median | range "
                "| sampling s | training s | tokens/sample | peak RSS GiB "
                "| TRL at its fastest / this: median (range) |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for system, runs in systems.items():
            medians = [_run_median(r) for r in runs]
            sampling, training = _phases(system, runs)
            memory = _peak_rss(runs, engine_label="engine ")
            ratio = (_ratio_text(_speedups(result, system, fastest)) if system != fastest
                     else "1")
            out.append(f"| {system} | {_settings(system, runs[0])} "
                       f"| {', '.join(f'{m:.2f}' for m in medians)} "
                       f"| **{statistics.median(medians):.2f}** "
                       f"| {min(medians):.2f}-{max(medians):.2f} | {sampling:.2f} "
                       f"| {training:.2f} "
                       f"| {statistics.mean(r['tokens_mean'] for r in runs):.1f} | {memory} "
                       f"| {ratio} |")
        out += ["", _rl_step_reading(systems, fastest), ""]
    return "\n".join(out).rstrip()


def _rl_step_reading(systems: dict[str, list[dict[str, Any]]], fastest: str) -> str:
    """Where the K = 0 ratio comes from, phase by phase, in words."""
    if "mint_rl K=0" not in systems:
        return ""
    trl_sampling, trl_training = _phases(fastest, systems[fastest])
    sampling, training = _phases("mint_rl K=0", systems["mint_rl K=0"])
    return (f"Phase by phase, K = 0 against {fastest}: TRL's generation and scoring take "
            f"{trl_sampling / sampling:.1f}x mint_rl's wait for samples (vLLM, which includes "
            f"loading the new weights), and TRL's training {trl_training / training:.1f}x "
            "mint_rl's training and saving (each prompt computed once for its group, the LM "
            "head only where a token trains: docs/learner.md).")


def headline_table() -> str:
    rows = [_arithmetic_row(), _defaults_row(), _time_to_quality_row(),
            _rl_step_row("rl_step_arithmetic", "arithmetic batch (<= 16 new tokens)"),
            _rl_step_row("rl_step_math256", "word problems (<= 256 new tokens)"),
            _rl_step_row("rl_step_guess_number", "guess_number game (up to 5 turns of <= 6 "
                         "new tokens)"),
            _rl_step_row("rl_step_arithmetic_qwen3-0.6b", "arithmetic batch at Qwen3-0.6B's "
                         "shape (random weights)", memory=True),
            _learner_row(),
            _serve_row(), _server_clients_row(), _recipes_row()]
    return "\n".join(["| what | figure | doc | data |", "|---|---|---|---|", *rows])


DOCS = ROOT / "docs"
TABLES = {
    (DOCS / "memory.md", "learner-memory"): learner_table,
    (DOCS / "memory.md", "serve-memory"): serve_table,
    (DOCS / "server.md", "server-clients"): server_clients_table,
    (DOCS / "arithmetic.md", "arithmetic-run"): arithmetic_run_table,
    (DOCS / "pipeline.md", "trip"): trip_table,
    (DOCS / "pipeline.md", "structure-behaviour"): structure_behaviour_table,
    (DOCS / "off_policy.md", "time-to-quality"): time_to_quality_table,
    (DOCS / "rl_bench.md", "rl-step"): rl_step_table,
    (ROOT / "README.md", "headline"): headline_table,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a doc differs from the data")
    args = parser.parse_args()
    differ = []
    for (doc, name), table in TABLES.items():
        before = doc.read_text()
        replace_between_markers(doc, table(), name)
        if args.check and doc.read_text() != before:
            doc.write_text(before)
            differ.append(f"{doc.relative_to(ROOT)} ({name})")
    if differ:
        print("differs from bench/results: " + ", ".join(differ)
              + "; run .venv/bin/python bench/doc_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

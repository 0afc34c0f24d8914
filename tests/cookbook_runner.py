"""Runs tinker-cookbook recipes one after another in this process, each by its own entry point.

    python tests/cookbook_runner.py PLAN.json RESULTS.json

PLAN.json is a list of {"name", "entry", "args", "cwd"}: each recipe runs as
`python -m ENTRY ARGS...` (or `python ENTRY.py ARGS...`) would (runpy, `__main__`, its own
argv), from `cwd`. One process imports torch, transformers and the cookbook once instead of once
per recipe, which is most of a small recipe's time on a CPU. RESULTS.json gets, per recipe, "ok"
or the error's last lines, and the seconds it took; a failing recipe does not stop the others.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

RECIPES = "tinker_cookbook.recipes."
RENDERER = "qwen3_instruct"  # SmolLM2's ChatML, token for token (the cookbook does not list it)
# twenty_questions' answerer: a hub name hard-coded in the recipe, served under --model-alias.
ANSWERER = "Qwen/Qwen3.5-9B"
DPO_SCRIPT = str(Path(__file__).with_name("cookbook_dpo_jsonl.py"))


def plan(model: str, cookbook: Path, out: Path, *, full: bool = False) -> list[dict]:
    """The matrix: each recipe for a step or a few, as small as its options allow. `full`
    (MINT_RL_COOKBOOK_FULL=1 in tests/test_cookbook.py) adds twenty_questions, whose twenty turns
    of two models cost a minute here, and rubric, whose judge answers with up to 2048 tokens
    (hard-coded): minutes on a CPU. The suite keeps within its time budget without them."""
    conversations = str(cookbook / "example_data" / "conversations.jsonl")
    common = [f"model_name={model}", f"renderer_name={RENDERER}", "eval_every=0",
              "behavior_if_log_dir_exists=delete"]

    def recipe(name: str, module: str, *args: str, save_every: bool = True) -> dict:
        return {"name": name, "entry": RECIPES + module, "cwd": None,
                "args": [*common, *(["save_every=0"] if save_every else []), *args,
                         f"log_path={out / name}"]}

    rl = ["env=arithmetic", "group_size=4", "groups_per_batch=2", "max_steps=2", "max_tokens=5",
          "lora_rank=8", "learning_rate=1e-4"]
    rubric_data = out / "rubric_data"
    items = [
        recipe("math_rl", "math_rl.train", *rl, "loss_fn=importance_sampling"),
        recipe("math_rl_async", "math_rl.train", *rl, "loss_fn=stable_reinforce",
               "max_steps_off_policy=1"),
        recipe("guess_number", "multiplayer_rl.guess_number.train", "group_size=2", "batch_size=1",
               "max_steps=1", "max_tokens=6"),
        recipe("text_arena", "multiplayer_rl.text_arena.train", "batch_size=2",
               "num_train_datapoints=4", "num_test_datapoints=2", "test_opponent=random",
               "max_steps=1", "max_tokens=16"),
        recipe("shorter", "preference.shorter.train", "batch_size=2", "group_size=2",
               "max_tokens=16", "max_steps=1", save_every=False),
        recipe("chat_sl", "chat_sl.train", f"dataset={conversations}", "batch_size=4",
               "max_length=512", "lora_rank=8", "max_steps=2"),
        recipe("prompt_distillation", "prompt_distillation.train", f"file_path={conversations}",
               "batch_size=4", "max_length=512", "num_epochs=1", "lora_rank=8", "max_steps=2"),
        {"name": "dpo", "entry": DPO_SCRIPT, "cwd": None,
         "args": [f"model_name={model}", f"renderer_name={RENDERER}", "batch_size=4",
                  "max_steps=2", f"train_path={out / 'comparisons.jsonl'}",
                  f"log_path={out / 'dpo'}"]},
    ]
    if full:
        items.append(recipe("twenty_questions", "multiplayer_rl.twenty_questions.train",
                            "group_size=2", "batch_size=1", "num_epochs=1", "max_steps=1",
                            "max_tokens=4"))
        (rubric_data / "tinker_cookbook" / "example_data").mkdir(parents=True, exist_ok=True)
        data = rubric_data / "tinker_cookbook" / "example_data"
        items += [
            # writes ./tinker_cookbook/example_data/example_rubric_{train,test}.jsonl
            {"name": "rubric_data", "entry": RECIPES + "rubric.generate_data", "args": [],
             "cwd": str(rubric_data)},
            recipe("rubric", "rubric.train", f"grader_llm_name={model}",
                   f"grader_renderer_name={RENDERER}",
                   f"train_jsonl_path={data / 'example_rubric_train.jsonl'}",
                   f"test_jsonl_path={data / 'example_rubric_test.jsonl'}", "train_group_size=2",
                   "groups_per_batch=2", "max_tokens=16", "loss_fn=importance_sampling",
                   "max_steps=1", "lora_rank=8"),
        ]
    return items


def write_comparisons(path: Path, n: int = 16) -> None:
    """Preference pairs for DPO in the cookbook's JSONL form: the right sum is preferred."""
    with path.open("w") as f:
        for i in range(n):
            comparison = {
                "prompt_conversation": [{"role": "user", "content": f"What is {i} + {i}?"}],
                "completion_A": [{"role": "assistant", "content": str(2 * i)}],
                "completion_B": [{"role": "assistant", "content": "I do not know."}]}
            f.write(json.dumps({"comparison": comparison, "label": "A"}) + "\n")


def answerer_stand_in(model_dir: Path, folder: Path) -> Path:
    """`model_dir`'s weights with a tokenizer that has Qwen3.5's `<think>` and `</think>` as
    single tokens (two of SmolLM2's unused special tokens renamed): twenty_questions renders its
    answerer's turns with the Qwen3.5 renderer, which needs them."""
    folder.mkdir(parents=True, exist_ok=True)
    renamed = {"<jupyter_script>": "<think>", "<empty_output>": "</think>"}
    for file in model_dir.iterdir():
        target = folder / file.name
        if file.name in ("tokenizer.json", "tokenizer_config.json"):
            text = file.read_text()
            for old, new in renamed.items():
                text = text.replace(json.dumps(old), json.dumps(new))
            target.write_text(text)
        elif not target.exists():
            target.symlink_to(file.resolve())
    return folder


def run_one(entry: str, args: list[str], cwd: str | None) -> str:
    """'ok', or why not: the recipe's exception (a recipe that exits 0 is ok). `entry` is a
    module name, or the path of a script (ending in .py)."""
    before = os.getcwd()
    sys.argv = [entry, *args]
    try:
        if cwd:
            os.chdir(cwd)
        if entry.endswith(".py"):
            runpy.run_path(entry, run_name="__main__")
        else:
            runpy.run_module(entry, run_name="__main__", alter_sys=True)
        return "ok"
    except SystemExit as stop:
        return "ok" if stop.code in (0, None) else f"exit {stop.code}"
    except BaseException:  # noqa: BLE001 - reported, and the next recipe still runs
        return traceback.format_exc()[-4000:]
    finally:
        os.chdir(before)


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    results_path = Path(sys.argv[2])
    results: dict[str, dict[str, object]] = {}
    for recipe in plan:
        start = time.monotonic()
        status = run_one(recipe["entry"], recipe["args"], recipe.get("cwd"))
        results[recipe["name"]] = {"status": status, "seconds": round(time.monotonic() - start, 1)}
        print(f"[cookbook] {recipe['name']}: {status.splitlines()[-1]} "
              f"({results[recipe['name']]['seconds']} s)", file=sys.stderr, flush=True)
        results_path.write_text(json.dumps(results, indent=1))  # what finished survives a crash


if __name__ == "__main__":
    main()

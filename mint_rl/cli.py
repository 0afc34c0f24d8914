"""The `mint-rl` command.

    mint-rl run RECIPE|FILE.py [--log-dir DIR] [--wandb PROJECT] [recipe options...]
    mint-rl prepare-model [ID_OR_FOLDER] [--check]
    mint-rl prepare-model --shape qwen3-0.6b --random [--out DIR]
    mint-rl list
    mint-rl show RUN_FOLDER
    mint-rl plot RUN_FOLDER [RUN_FOLDER ...] [--out comparison.png]
    mint-rl eval RUN_FOLDER|CHECKPOINT [--step N] [--recipe NAME]
    mint-rl export RUN_FOLDER|CHECKPOINT OUT [--step N] [--merged] [--force]
    mint-rl serve [--host 127.0.0.1] [--port 8000] [--storage DIR] [--api-key KEY]

A recipe is a module with a `Config` dataclass and `main(config, log_dir)`; its command-line
options are derived from `Config` (mint_rl/run/config.py). Recipes live in the repository's
`recipes/` folder, installed as `mint_rl.recipes` (and `actors/` as `mint_rl.actors`, so no
generic top-level package lands in site-packages), or anywhere: `mint-rl run path/to/file.py`.
The library never imports recipes otherwise (imports point recipes -> actors -> mint_rl).
`mint-rl run` records the recipe in the run folder (`run.json`), so `mint-rl eval` runs that
recipe's `evaluate_checkpoint` (mint_rl/run/eval_checkpoint.py) on the run's checkpoints.
`mint-rl export` writes a checkpoint as a PEFT adapter or merged model folder
(mint_rl/run/export.py); `mint-rl plot` compares runs in one PNG (mint_rl/run/plot.py).

`mint-rl run` keeps the terminal for mint_rl's own progress lines, live view and errors; what
vLLM, transformers and torch print (their processes included) goes to `third_party.log` in the
run folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import pkgutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from mint_rl.errors import BadRequestError, InvalidInputError, LearnerFailedError, MintError
from mint_rl.run.config import config_parser, parse_config, write_config
from mint_rl.run.wandb_sink import check_sinks
from mint_rl.runtime.ray_backend import ship_by_value
from mint_rl.terminal import console, tail, third_party_output_to

# Where `mint-rl run` sends vLLM's, transformers' and torch's own output, inside the run folder.
THIRD_PARTY_LOG = "third_party.log"


def is_recipe(module: ModuleType) -> bool:
    """A recipe has a `Config` dataclass and a `main(config, log_dir)` function."""
    config = getattr(module, "Config", None)
    return dataclasses.is_dataclass(config) and callable(getattr(module, "main", None))


def _recipe_names() -> list[str]:
    """Modules of `mint_rl.recipes` that `mint-rl run` can run (other files there are helpers
    or examples run as scripts). Recipes import lazily: listing them is cheap."""
    try:
        import mint_rl.recipes as recipes
    except ImportError:
        return []
    names = []
    for m in pkgutil.iter_modules(recipes.__path__):
        if not m.name.startswith("_") and is_recipe(
                importlib.import_module(f"mint_rl.recipes.{m.name}")):
            names.append(m.name)
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":  # a recipe's options reach `run` as `extra`
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    command, subparser = args.command, commands[args.command]
    if command == "run":
        return _run(args, extra, subparser)
    if command == "prepare-model":
        if args.shape is not None:
            return _prepare_random_model(args, subparser)
        return _prepare_model(args.model, args.check)
    if command == "list":
        print("\n".join(_recipe_names()))
        return 0
    if command == "show":
        return _show(args.log_dir, subparser)
    if command == "serve":
        return _serve(args)
    tools = {"plot": _plot, "eval": _eval, "export": _export}
    try:
        return tools[command](args, subparser)
    except MintError as e:  # a missing or damaged checkpoint, a recipe that cannot evaluate
        console.print(f"[bold red]mint-rl {command}: {e}[/]")
        return 2


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line; also returns each command's own parser (for its error messages)."""
    # __doc__ is None under `python -OO`, which strips docstrings.
    description = __doc__.splitlines()[0] if __doc__ else None
    parser = argparse.ArgumentParser(prog="mint-rl", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    # Help is ours to give: `mint-rl run RECIPE --help` shows the recipe's own options too.
    run = sub.add_parser("run", help="run a recipe end to end", add_help=False)
    run.add_argument("-h", "--help", action="store_true", help="show this help (and the recipe's)")
    run.add_argument("recipe", nargs="?",
                     help="recipe name (see `mint-rl list`) or path of your own recipe file")
    run.add_argument("--log-dir", type=Path, default=None,
                     help="run folder: config, metrics, plots, checkpoints (the same folder "
                          "resumes a run)")
    prepare = sub.add_parser("prepare-model", help="resolve a model once into the local cache")
    prepare.add_argument("model", nargs="?", default=None)
    prepare.add_argument("--check", action="store_true",
                         help="also load it with transformers and ask it a question")
    prepare.add_argument("--shape", default=None,
                         help="instead: build a model of a real architecture (qwen3-0.6b, "
                              "qwen3-1.7b, qwen2.5-0.5b, llama-3.2-1b, smollm2-360m) with random "
                              "weights and the bundled tokenizer, for memory and speed at real "
                              "shapes (needs --random)")
    prepare.add_argument("--random", action="store_true",
                         help="with --shape: random weights (the only kind: nothing downloads)")
    prepare.add_argument("--out", type=Path, default=None,
                         help="with --shape: the folder to write (default "
                              "$MINT_RL_HOME/models/random-SHAPE)")
    commands = {"run": run, "prepare-model": prepare,
                "list": sub.add_parser("list", help="list recipes")}
    show = sub.add_parser("show", help="a run's latest samples and a summary of its metrics")
    show.add_argument("log_dir", type=Path, help="the run folder")
    commands["show"] = show
    commands.update(_run_tool_parsers(sub))
    serve = sub.add_parser("serve", help="serve the Tinker HTTP protocol: the tinker SDK "
                                         "trains and samples here (docs/server.md)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (not loopback: needs an API key)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--storage", type=Path, default=None,
                       help="checkpoint folder (default: $MINT_RL_RUNS or ~/.mint_rl/runs)")
    serve.add_argument("--api-key", default=None,
                       help="require this X-API-Key (starts with tml-; default $MINT_RL_API_KEY)")
    serve.add_argument("--model-alias", action="append", default=[], metavar="NAME=FOLDER",
                       help="serve the model in FOLDER to clients asking for base model NAME "
                            "(repeatable); also makes NAME's tokenizer loadable offline here")
    commands["serve"] = serve
    return parser, commands


def _run_tool_parsers(sub: Any) -> dict[str, argparse.ArgumentParser]:
    """plot, eval and export: what to do with run folders and checkpoints after a run."""
    plot = sub.add_parser("plot", help="one PNG comparing runs: reward, eval metrics, KL "
                                       "sampler/learner, staleness, step time")
    plot.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run folders")
    plot.add_argument("--out", type=Path, default=Path("comparison.png"),
                      help="the PNG to write")
    target = ("a run folder (its newest intact checkpoint), a checkpoint manifest "
              "(<run>/checkpoints/step-*.json) or an adapter folder")
    evaluate = sub.add_parser("eval", help="a recipe's held-out evaluation of a checkpoint")
    evaluate.add_argument("checkpoint", help=target)
    evaluate.add_argument("--recipe", default=None,
                          help="recipe name or file (default: the one that made the run)")
    export = sub.add_parser("export", help="a checkpoint as a PEFT adapter folder, or a merged "
                                           "HF model folder (--merged)")
    export.add_argument("checkpoint", help=target)
    export.add_argument("out", type=Path, help="the folder to write")
    export.add_argument("--merged", action="store_true",
                        help="write the adapter merged into the base model's weights")
    export.add_argument("--force", action="store_true",
                        help="replace an earlier export at OUT")
    for command in (evaluate, export):
        command.add_argument("--step", type=int, default=None,
                             help="the checkpoint of this step (a run folder's)")
    return {"plot": plot, "eval": evaluate, "export": export}


def _run(args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser) -> int:
    recipe: str | None = args.recipe
    module = _find_recipe(recipe, parser) if recipe is not None else None
    if args.help:
        parser.print_help()
        if module is not None:
            print(f"\noptions of the {recipe} recipe:")
            config_parser(module.Config, f"mint-rl run {recipe}").print_help()
        return 0
    if recipe is None or module is None:  # module is None exactly when no recipe is given
        parser.error("a recipe name or file is required (see `mint-rl list`)")
    name = Path(recipe).stem
    # Options are checked before anything starts (argparse errors go to the terminal).
    config = parse_config(module.Config, extra, f"mint-rl run {recipe}")
    try:
        check_sinks(config)
    except InvalidInputError as e:
        parser.error(str(e))
    log_dir = args.log_dir or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # A recipe file is recorded by its absolute path, so `mint-rl eval` finds it from anywhere.
    recorded = str(Path(recipe).resolve()) if recipe.endswith(".py") else recipe
    return _run_recipe(module, config, log_dir, recorded)


def _show(log_dir: Path, parser: argparse.ArgumentParser) -> int:
    from mint_rl.run.samples import show_run

    if not (log_dir / "metrics.jsonl").is_file():
        parser.error(f"{log_dir} holds no run (no metrics.jsonl)")
    show_run(log_dir)
    return 0


def _plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mint_rl.run.metrics import read_metrics
    from mint_rl.run.plot import compare_runs, run_labels

    for run_dir in args.runs:
        if not (run_dir / "metrics.jsonl").is_file():
            parser.error(f"{run_dir} holds no run (no metrics.jsonl)")
    runs = {label: read_metrics(run_dir / "metrics.jsonl")
            for label, run_dir in zip(run_labels(args.runs), args.runs, strict=True)}
    plot = compare_runs(runs, args.out)
    console.print(f"wrote {plot.path.resolve()}: {', '.join(plot.labels)}; "
                  f"panels: {', '.join(plot.panels) or 'none (no metrics to compare)'}")
    return 0


def _eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The recipe's held-out evaluation of a checkpoint; prints and writes the metrics."""
    from mint_rl.run.eval_checkpoint import evaluate
    from mint_rl.run.run_folder import find_checkpoint, recorded_recipe

    checkpoint = find_checkpoint(args.checkpoint, args.step)
    recipe = args.recipe or recorded_recipe(checkpoint.run_dir)
    if recipe is None:
        raise InvalidInputError("recipe", f"{args.checkpoint} does not record the recipe that "
                                "made it; pass --recipe NAME")
    module = _find_recipe(recipe, parser)
    step = "" if checkpoint.step is None else f" (step {checkpoint.step})"
    console.print(f"evaluating {checkpoint.adapter_dir}{step} with the {recipe} recipe")
    log_file = (checkpoint.run_dir or checkpoint.adapter_dir.parent) / THIRD_PARTY_LOG
    console.print(f"[dim]vLLM, transformers and torch output: {log_file}[/]")
    running = _running_engine(checkpoint.base_model)  # one this process had: leave it running
    with third_party_output_to(log_file):
        try:
            result = evaluate(module, recipe, checkpoint)
        finally:
            started = _running_engine(checkpoint.base_model)
            if started is not None and started is not running:
                # In order, while its output still goes to the log: at interpreter exit it
                # would be killed, noisily, on the terminal.
                started.close()
    for key, value in result.metrics.items():
        console.print(f"{key}: {value:.4f}")
    console.print(f"written to {result.path}")
    return 0


def _running_engine(base_model: str) -> Any:
    """The vLLM engine for `base_model` running in this process, if any (imports no vLLM)."""
    engines = sys.modules.get("mint_rl.sampler.engine")  # never imported: no engine runs
    try:
        return engines.IN_PROCESS.running(base_model) if engines is not None else None
    except MintError:  # a model that cannot be resolved has no engine
        return None


def _export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from transformers.utils import logging as hf_logging

    from mint_rl.run.export import export
    from mint_rl.run.run_folder import find_checkpoint

    hf_logging.disable_progress_bar()  # the status line below says what is going on
    checkpoint = find_checkpoint(args.checkpoint, args.step)
    kind = "merged model" if args.merged else "adapter"
    step = "" if checkpoint.step is None else f" of step {checkpoint.step}"
    with console.status(f"exporting the {kind}{step}"):
        out = export(checkpoint, args.out, merged=args.merged, force=args.force)
    console.print(f"wrote the {kind}{step} ({checkpoint.adapter_dir}, base "
                  f"{checkpoint.base_model}) to {out}")
    return 0


def _find_recipe(recipe: str, parser: argparse.ArgumentParser) -> ModuleType:
    """A recipe by name (`mint-rl list`) or the path of the user's own recipe file."""
    if recipe.endswith(".py"):
        path = Path(recipe)
        if not path.is_file():
            parser.error(f"recipe file {recipe!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"mint_rl_user_recipe_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        ship_by_value(spec.name)  # with --backend ray: Ray's workers cannot import it by name
        if not is_recipe(module):
            parser.error(f"{recipe} is not a recipe: it needs a `Config` dataclass and "
                         "main(config, log_dir)")
        return module
    names = _recipe_names()
    if recipe not in names:
        parser.error(f"unknown recipe {recipe!r}; available: {', '.join(names) or 'none'} "
                     "(or give the path of a recipe file)")
    return importlib.import_module(f"mint_rl.recipes.{recipe}")


def _serve(args: argparse.Namespace) -> int:
    """Runs the Tinker-protocol server (mint_rl/server) until Ctrl-C."""
    import os

    from mint_rl.models import hub_cache_entry
    from mint_rl.server import ServerConfig, serve
    from mint_rl.server.config import api_key_from_env, parse_alias

    if args.storage is not None:
        # The training clients write checkpoints under $MINT_RL_RUNS; tinker paths map there.
        os.environ["MINT_RL_RUNS"] = str(args.storage.expanduser().resolve())
    try:
        aliases = tuple(parse_alias(a) for a in args.model_alias)
        config = ServerConfig(host=args.host, port=args.port,
                              api_key=api_key_from_env(args.api_key), model_aliases=aliases)
    except BadRequestError as e:  # a public host without a key, a key the SDK cannot send
        console.print(f"[bold red]mint-rl serve: {e}[/]")
        return 2
    for name, folder in aliases:
        # Recipes load the tokenizer of a hard-coded name from the hub cache (HF_HUB_OFFLINE=1).
        entry = hub_cache_entry(name, Path(folder))
        console.print(f"model alias {name} -> {folder} (tokenizer: {entry})")
    serve(config)
    return 0


def _prepare_model(model: str | None, check: bool) -> int:
    """Resolves (for the default model: dequantizes) a model into the cache; optionally checks
    that it loads and answers a question it knows (the default model knows this one)."""
    from transformers.utils import logging as hf_logging

    from mint_rl.models import DEFAULT_MODEL, resolve_model

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    with console.status(f"preparing {model or DEFAULT_MODEL}"):
        path = resolve_model(model or DEFAULT_MODEL)
    console.print(f"model ready in {time.perf_counter() - start:.1f} s: {path}")
    if not check:
        return 0
    answer = _ask(path, "What is the capital of France?")
    console.print(f"check: 'What is the capital of France?' -> {answer!r}")
    if (model or DEFAULT_MODEL) == DEFAULT_MODEL and "paris" not in answer.lower():
        console.print("[bold red]the default model did not answer 'Paris': it is not usable[/]")
        return 1
    return 0


def _prepare_random_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`--shape NAME --random`: an HF folder of that architecture with random weights."""
    from mint_rl.model_shapes import SHAPES, prepare_random_model

    if not args.random:
        parser.error("--shape builds random weights only; say so with --random")
    if args.model is not None or args.check:
        parser.error("--shape takes neither a model id nor --check (its answers are noise)")
    if args.shape not in SHAPES:
        parser.error(f"unknown --shape {args.shape!r}; known: {', '.join(SHAPES)}")
    start = time.perf_counter()
    with console.status(f"building {args.shape} with random weights"):
        path = prepare_random_model(args.shape, args.out)
    console.print(f"{args.shape} (random weights, source shape {SHAPES[args.shape].source}) "
                  f"ready in {time.perf_counter() - start:.1f} s: {path}")
    console.print(f"use it as --base-model {path}")
    return 0


def _ask(model_dir: Path, question: str, max_new_tokens: int = 16) -> str:
    """Greedy answer of a local chat model to one question (transformers, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        # transformers types generate()'s self as its GenerativePreTrainedModel protocol, which
        # PreTrainedModel does not satisfy (e.g. `device` is a property there): a stub bug.
        out = model.generate(  # pyright: ignore[reportAttributeAccessIssue]
            **prompt, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def _run_recipe(module: ModuleType, config: object, log_dir: Path, recipe: str) -> int:
    """Runs a recipe with third-party output in the run's log file and ours on the terminal."""
    from mint_rl.run.run_folder import write_run_info  # reads checkpoints: imports torch

    write_config(log_dir, config)
    write_run_info(log_dir, recipe)
    log_file = log_dir / THIRD_PARTY_LOG
    # `kill` (SIGTERM) stops a run the way Ctrl-C does: engines shut down, nothing orphaned.
    previous = signal.signal(signal.SIGTERM,
                             lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        with third_party_output_to(log_file):
            console.print(f"[dim]vLLM, transformers and torch output: {log_file}[/]")
            return int(module.main(config, log_dir) or 0)
    except KeyboardInterrupt:
        console.print(f"interrupted; engines shut down. Run folder: {log_dir}")
        return 130
    except SystemExit:
        raise
    except BaseException as e:
        console.print(traceback.format_exc(), markup=False, highlight=False, end="")
        failed = _learner_failure(e)
        if failed is not None:  # the run checkpointed its last step: say what to do, last
            console.print(f"[bold red]error:[/] {failed}", highlight=False)
            return 1
        if not isinstance(e, BadRequestError):  # a bad option needs no engine log
            console.print(f"[bold]last lines of {log_file}[/]:")
            console.print(tail(log_file), markup=False, highlight=False)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _learner_failure(error: BaseException) -> LearnerFailedError | None:
    """The LearnerFailedError in `error` (task groups wrap errors in ExceptionGroups)."""
    if isinstance(error, LearnerFailedError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _learner_failure(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())

"""`train`: a whole RL run on the actor pipeline. A recipe brings its environment, its dataset
and a config dataclass; this module owns everything recipes would otherwise repeat: the run
folder, resume, CPU placement, the actors, the live view, metrics, checkpoints and evaluation.

    tokenizer = load_tokenizer(config.base_model)
    train(config, MyDataset(tokenizer, config), log_dir, evaluate=my_evaluator(tokenizer))

For more than the defaults, open the run and compose (docs/composition.md):

    async with TrainingRun.open(config, log_dir) as run:
        judge = await run.spawn(RewardModel, name="reward-model")  # an actor of your own
        await run.train(dataset, stages=[judge.score])  # runs between sampler and advantages

A run folder holds `config.json`, `metrics.jsonl`, `samples.jsonl` (prompts, completions,
rewards and policy versions per step; `mint-rl show DIR`), `tensorboard/`, `curves.png`,
`checkpoints/step-*.json` (whole-run checkpoint manifests, mint_rl/run/checkpoints.py),
`startup.json` and `failures.jsonl` (one line per actor crash). Running again with the same
folder resumes from the newest intact checkpoint; the first Ctrl-C (or SIGTERM) ends the run
after the step in progress with a checkpoint, a second one stops at once.
"""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from mint_rl import types
from mint_rl.actors.advantage import AdvantageActor
from mint_rl.actors.learner import LearnerActor, LearnerConfig
from mint_rl.actors.pipeline import (
    ComputeAdvantages,
    Evaluate,
    GroupStage,
    PipelineConfig,
    PipelineState,
    RLPipeline,
)
from mint_rl.actors.reference import ReferenceActor
from mint_rl.actors.sampler import SamplerActor
from mint_rl.process_memory import engine_memory_metrics
from mint_rl.rl.types import RLDataset
from mint_rl.run.checkpoints import RunCheckpoints
from mint_rl.run.config import RLConfig, write_config
from mint_rl.run.display import RunDisplay
from mint_rl.run.metrics import MetricsLogger, peak_memory_line, plot_metrics, read_metrics
from mint_rl.run.samples import SampleLogger
from mint_rl.run.wandb_sink import check_sinks, metric_sinks
from mint_rl.runtime import (
    Actor,
    ActorSystem,
    FailureReport,
    RayBackend,
    Resources,
    RestartPolicy,
    open_system,
)
from mint_rl.terminal import StartupTimeline, console, startup_timeline

if TYPE_CHECKING:
    from mint_rl.placement import CpuPlacement
    from mint_rl.sampler import EngineConfig, SamplerEngines

A = TypeVar("A", bound=Actor)

# What a crash does, decided here for every actor of a run: the run stops (fail fast) and keeps
# what it completed: metrics, checkpoints, and the crash in failures.jsonl. Running the same
# command again resumes from the last checkpoint.
SUPERVISION = RestartPolicy.never()
# Samplers are the exception: a sampler whose engine died or whose env failed is replaced and
# the group sampled again (RLPipeline.rollout); a fourth crash within 10 minutes stops the run.
SAMPLER_SUPERVISION = RestartPolicy(max_restarts=3, window_s=600.0, backoff_s=1.0)

# Tokens of prompt the sampler's KV cache sizing allows per sample, beside max_tokens.
PROMPT_ALLOWANCE = 512

PLOTTED = ["eval/accuracy", "reward/mean", "kl/sampler_learner", "staleness/max", "time/step"]


def train(config: RLConfig, dataset: RLDataset, log_dir: Path, *,
          evaluate: Evaluate | None = None, stages: Sequence[GroupStage] = (),
          engines: SamplerEngines | None = None) -> PipelineState:
    """Trains `config.steps` steps on `dataset` (resuming from `log_dir` if it holds a run);
    `engines`: who holds the sampler engines (see `TrainingRun.open`)."""
    async def run_all() -> PipelineState:
        async with TrainingRun.open(config, log_dir, engines=engines) as run:
            return await run.train(dataset, evaluate=evaluate, stages=stages)

    return anyio.run(run_all)


def load_tokenizer(base_model: str) -> Any:
    """The model's tokenizer (loaded once per process; it pickles as the model's name). The
    first run after set-up may dequantize the bundled model here, which takes a while: the
    start-up timeline shows it."""
    from mint_rl.models import cached_tokenizer, tokenizer_cached

    timeline = startup_timeline()
    timeline.mark("imports done")
    if not tokenizer_cached(base_model):
        with timeline.waiting(f"resolving {base_model}"):
            cached_tokenizer(base_model)
        timeline.mark("model files and tokenizer ready")
    return cached_tokenizer(base_model)


def sampling_params(config: RLConfig, tokenizer: Any) -> types.SamplingParams:
    """How a run samples (and how its evaluation should, to measure the same policy)."""
    return types.SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature,
                                stop_token_ids=[tokenizer.eos_token_id])


class TrainingRun:
    """An open run: its folder, its actor system and actors, and the step it starts from."""

    def __init__(self, config: RLConfig, log_dir: Path, system: ActorSystem,
                 timeline: StartupTimeline, engines: SamplerEngines) -> None:
        self.config, self.log_dir, self.system, self.timeline = config, log_dir, system, timeline
        self.engines = engines
        self.checkpoints = RunCheckpoints(log_dir, keep_last=config.keep_checkpoints)
        latest = self.checkpoints.latest()
        self.resume_from = latest.state_path if latest else None
        self.start_step = latest.step if latest else 0
        self.interrupted = False
        self.samplers: list[SamplerActor] = []
        self.resources: dict[str, Resources] = {}  # per role, with --backend ray
        self.learner: LearnerActor | None = None
        self.advantage: AdvantageActor | None = None
        self.tokenizer: Any = None

    @classmethod
    @asynccontextmanager
    async def open(cls, config: RLConfig, log_dir: Path, *,
                   engines: SamplerEngines | None = None) -> AsyncIterator[TrainingRun]:
        """Starts the run's actors (unless every step is done); stops them when the block ends.

        The sampler actors take their vLLM engines from `engines`; None: the in-process API's
        (`mint_rl.sampler.IN_PROCESS`), so an engine already running there is reused (a second
        run in one process skips the 20-60 s start) and `SamplingClient`s share it.
        """
        from mint_rl.sampler import IN_PROCESS

        write_config(log_dir, config)  # also for runs started from Python, not `mint-rl run`
        check_sinks(config)  # a missing wandb stops the run here, not after the engines start
        timeline = startup_timeline()
        tokenizer = await anyio.to_thread.run_sync(load_tokenizer, config.base_model)
        # Shutting an engine down cleanly takes a few seconds (its processes exit in order).
        backend = RayBackend(config.ray_address) if config.backend == "ray" else None
        async with open_system(restart=SUPERVISION, teardown_timeout=60, backend=backend,
                               on_failure=functools.partial(_record_failure, log_dir)) as system:
            run = cls(config, log_dir, system, timeline,
                      engines if engines is not None else IN_PROCESS)
            run.tokenizer = tokenizer
            if run.start_step < config.steps:
                await run._start_actors()
            yield run
            with timeline.waiting("shutting down the sampler and the learner"):
                await system.shutdown()
        if run.interrupted:  # stopped at a step boundary, checkpointed: report as Ctrl-C
            raise KeyboardInterrupt

    async def spawn(self, actor_cls: Callable[..., A], *args: Any, **options: Any) -> A:
        """Starts an actor of your own in this run's system (stopped with the run)."""
        return await self.system.spawn(actor_cls, *args, **options)

    def sampling_params(self) -> types.SamplingParams:
        return sampling_params(self.config, self.tokenizer)

    async def _start_actors(self) -> None:
        """The vLLM sampler, the learner (and the reference model) load at the same time."""
        from mint_rl.placement import plan_cpus
        from mint_rl.sampler import EngineConfig

        cfg = self.config
        if self.resume_from:
            console.print(f"resuming from {self.resume_from} at step {self.start_step}")
        cpus = plan_cpus(cfg.max_steps_off_policy, cfg.cpus)
        # One vLLM engine per sampler actor (slot i: its own engine process), each on its share
        # of the sampler's cores; on a GPU they share it, each with 1/N of the memory one
        # engine would take (vLLM places them).
        # The KV cache holds a batch's samples at full length (a prompt allowance + max_tokens),
        # within its share of memory (mint_rl/sampler/config.py: kv_cache_size).
        base = EngineConfig(dtype=cfg.sampler_dtype, chunked_prefill=not cfg.reproducible,
                            sequences=cfg.groups_per_batch * cfg.group_size,
                            sequence_tokens=PROMPT_ALLOWANCE + cfg.max_tokens)
        engines = [replace(base, slot=i, cpu_cores=cores,
                           gpu_memory_utilization=base.gpu_memory_utilization / cfg.samplers)
                   for i, cores in enumerate(cpus.sampler_engine_cores(cfg.samplers))]
        settings = cfg.learner_settings(cpu_cores=cpus.learner_cores())
        learner = LearnerConfig(base_model=cfg.base_model, rank=cfg.rank, seed=cfg.seed,
                                loss=cfg.loss, learning_rate=cfg.lr, resume_from=self.resume_from,
                                settings=settings)
        samplers = [functools.partial(SamplerActor, cfg.base_model, self.sampling_params(), e,
                                      cfg.env_timeout_s, engines=self.engines) for e in engines]
        if self.system.backend is not None:
            self.resources = _ray_resources(cfg, cpus, engines)
        reference: ReferenceActor | None = None

        async def start_reference() -> None:
            nonlocal reference
            reference = await self._spawn("reference", functools.partial(
                ReferenceActor, cfg.base_model, settings), "learner", "reference model ready")

        with self.timeline.waiting("starting the vLLM sampler and the learner"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._start_samplers, samplers, engines)
                tg.start_soon(self._start_learner, learner)
                if cfg.kl_coef > 0:
                    tg.start_soon(start_reference)
        self.advantage = await self.system.spawn(functools.partial(
            AdvantageActor, kl_coef=cfg.kl_coef, reference=reference), name="advantage")

    async def _start_samplers(self, samplers: Sequence[Callable[[], SamplerActor]],
                              engines: Sequence[EngineConfig]) -> None:
        """Spawns the sampler actors, each starting its own vLLM engine (its slot)."""
        started: list[SamplerActor | None] = [None] * len(samplers)

        async def start(i: int) -> None:
            name = sampler_name(i)
            started[i] = await self._spawn(name, samplers[i], "sampler", f"vLLM {name} ready",
                                           restart=SAMPLER_SUPERVISION)

        if self._engines_start_together(engines):
            async with anyio.create_task_group() as tg:
                for i in range(len(samplers)):
                    tg.start_soon(start, i)
        else:
            for i in range(len(samplers)):
                await start(i)
        self.samplers.extend(s for s in started if s is not None)

    def _engines_start_together(self, engines: Sequence[EngineConfig]) -> bool:
        """vLLM sizes an engine's GPU memory from what is free while it starts, so engines that
        share a GPU start one at a time. CPU engines start together: as Ray actors they overlap
        (two starts took 30 s each, one after the other, on 2 cores: most of a start is a
        single-threaded import); in one process they still queue on the engine-start lock."""
        if self.system.backend is not None:  # Ray: what each sampler asked the cluster for
            return not any(self.resources[sampler_name(i)].num_gpus for i in range(len(engines)))
        return all(e.resolve().device == "cpu" for e in engines)

    async def _start_learner(self, learner: LearnerConfig) -> None:
        self.learner = await self._spawn(
            "learner", functools.partial(LearnerActor, learner), "learner",
            f"learner ready (LoRA r{learner.rank}, {self.config.learner_dtype})")

    async def _spawn(self, name: str, factory: Callable[[], A], device: str, done: str,
                     restart: RestartPolicy | None = None) -> A:
        actor = await self.system.spawn(factory, name=name, device=device, restart=restart,
                                        resources=self.resources.get(name))
        self.timeline.mark(done)
        return actor

    async def train(self, dataset: RLDataset, *, evaluate: Evaluate | None = None,
                    stages: Sequence[GroupStage] = (),
                    compute_advantages: ComputeAdvantages | None = None) -> PipelineState:
        """Runs the remaining steps: sampling, `stages` on each group, advantages (the advantage
        actor's unless `compute_advantages` is given), training, evaluation and checkpoints."""
        cfg = self.config
        if self.start_step >= cfg.steps:
            console.print(f"{self.log_dir} already holds all {cfg.steps} steps")
            return PipelineState(step=self.start_step)
        assert self.learner is not None and self.advantage is not None
        pipeline = RLPipeline(
            PipelineConfig(steps=cfg.steps, groups_per_batch=cfg.groups_per_batch,
                           max_steps_off_policy=cfg.max_steps_off_policy,
                           start_step=self.start_step, eval_every=cfg.eval_every,
                           save_every=cfg.save_every,
                           seed=cfg.seed if cfg.reproducible else None),
            dataset, self.samplers, self.learner,
            compute_advantages or self.advantage.build, stages=stages, evaluate=evaluate,
            on_checkpoint=self._record_checkpoint, timeline=self.timeline)
        logger = MetricsLogger(self.log_dir, start_step=self.start_step,
                               sinks=metric_sinks(cfg, self.log_dir))
        pipeline.on_groups = SampleLogger(self.log_dir, self.tokenizer,
                                          start_step=self.start_step).log
        title = (f"{self.log_dir.name} · {cfg.base_model} · loss={cfg.loss} · "
                 f"K={cfg.max_steps_off_policy}")
        with RunDisplay(title, cfg.steps, self.start_step) as display:
            pipeline.on_step = functools.partial(_log_step, logger, display, pipeline,
                                                 time.perf_counter())
            display.status("training")
            finished = False
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signals, pipeline, display, tg.cancel_scope)
                await pipeline.run()
                finished = True
                tg.cancel_scope.cancel()
        logger.close()
        if not finished:  # a second Ctrl-C: stopped at once, the last checkpoint stands
            self.interrupted = True
            return pipeline.state
        self.timeline.save(self.log_dir / "startup.json")
        if pipeline.state.stopped_early:
            self.interrupted = True
            console.print(f"stopped after step {pipeline.state.step}; checkpoint written. "
                          "Run the same command to resume.")
            return pipeline.state
        _summarize(self.log_dir, title)
        return pipeline.state

    def _record_checkpoint(self, step: int, path: str, pending_batches: list[int]) -> None:
        self.checkpoints.record(step, path, step, pending_batches)


def sampler_name(i: int) -> str:
    return "sampler" if i == 0 else f"sampler-{i}"


def _ray_resources(cfg: RLConfig, cpus: CpuPlacement, engines: Sequence[EngineConfig]
                   ) -> dict[str, Resources]:
    """Each role's Ray ask: its cores' share (mint_rl.placement.ray_resources) and, when the
    cluster has GPUs, one GPU split as the engines' memory is (vLLM's gpu_memory_utilization
    each; the learner and the reference model share the rest). A role asking for no GPU would
    see none: Ray hides them."""
    from mint_rl.placement import available_cores, parse_cores, ray_resources
    from mint_rl.runtime.ray_backend import cluster_gpus

    cores = {sampler_name(i): (parse_cores(e.cpu_cores, "cpus") if e.cpu_cores[0].isdigit()
                               else available_cores())  # "all", "auto", "nobind"
             for i, e in enumerate(engines)}
    cores["learner"] = cpus.learner
    if cfg.kl_coef > 0:
        cores["reference"] = cpus.learner
    gpus: dict[str, float] = {}
    if cluster_gpus() > 0:
        gpus = {sampler_name(i): e.gpu_memory_utilization for i, e in enumerate(engines)}
        rest = 1.0 - sum(gpus.values())
        for role in ("learner", "reference"):
            if role in cores:
                gpus[role] = rest / (2 if cfg.kl_coef > 0 else 1)
    return ray_resources(cores, gpus)


def _log_step(logger: MetricsLogger, display: RunDisplay, pipeline: RLPipeline, start: float,
              metrics: dict[str, Any]) -> None:
    metrics["time/elapsed"] = time.perf_counter() - start
    metrics |= engine_memory_metrics()  # the learner reports its own with its step
    logger.log(metrics)
    display.update(metrics, pipeline.state)


async def _stop_on_signals(pipeline: RLPipeline, display: RunDisplay,
                           training: anyio.CancelScope) -> None:
    """The first Ctrl-C (or SIGTERM) ends the run after the step in progress, with a
    checkpoint; a second one cancels `training` at once (engines still shut down in order)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach only the main thread; elsewhere the caller cancels instead
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if pipeline.stop_requested:
                training.cancel()
                return
            pipeline.request_stop()
            display.status("stopping after this step (checkpoint); Ctrl-C again to stop now")


async def _record_failure(log_dir: Path, report: FailureReport) -> None:
    console.print(f"[bold red]actor {report.actor} crashed in {report.endpoint}[/]: "
                  f"{report.error_type}: {report.message} ({report.action})")
    with (log_dir / "failures.jsonl").open("a") as f:
        f.write(json.dumps(asdict(report)) + "\n")


def _summarize(log_dir: Path, title: str) -> None:
    """The curves as a PNG, and eval accuracy by step on the terminal."""
    metrics = log_dir / "metrics.jsonl"
    plot = plot_metrics(metrics, log_dir / "curves.png", PLOTTED, title=title)
    rows = read_metrics(metrics)
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    if evals:
        console.print("eval accuracy by step: "
                      + ", ".join(f"{s}: {a:.2f}" for s, a in evals))
    memory = peak_memory_line(rows)
    if memory:
        console.print(memory)
    console.print(f"metrics: {metrics}  plot: {plot}  tensorboard: {log_dir / 'tensorboard'}")

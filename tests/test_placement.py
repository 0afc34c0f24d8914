"""CPU placement of sampler and learner: parsing, planning, and that pinning really applies."""

from __future__ import annotations

import os

import pytest

from mint_rl.errors import InvalidInputError
from mint_rl.learner.engine import LearnerSettings
from mint_rl.placement import available_cores, format_cores, parse_cores, plan_cpus
from mint_rl.sampler import EngineConfig


def test_core_lists_round_trip() -> None:
    assert format_cores([5, 0, 1, 2]) == "0-2,5"
    cores = available_cores()
    assert parse_cores(format_cores(cores), "cpu_cores") == cores
    assert parse_cores(list(cores), "cpu_cores") == cores


@pytest.mark.parametrize("spec", ["zero", "1-", "", "4096", [4096]])
def test_bad_core_lists_name_the_field(spec) -> None:
    with pytest.raises(InvalidInputError, match="cpu_cores"):
        parse_cores(spec, "cpu_cores")
    with pytest.raises(InvalidInputError, match="cpu_cores"):
        LearnerSettings(cpu_cores=spec if not isinstance(spec, str) else (4096,))
    if isinstance(spec, str):
        with pytest.raises(InvalidInputError, match="cpu_cores"):
            EngineConfig(cpu_cores=spec)


def test_several_sampler_engines_split_the_sampler_cores_or_share_them() -> None:
    eight = tuple(range(8))
    split = plan_cpus(1, cores=eight)  # sampler 0-3, learner 4-7
    assert split.sampler_engine_cores(1) == ["0-3"]
    assert split.sampler_engine_cores(2) == ["0-1", "2-3"]
    assert split.sampler_engine_cores(3) == ["0-1", "2", "3"]  # as equal as can be, disjoint
    assert split.sampler_engine_cores(4) == ["0", "1", "2", "3"]
    # Fewer cores than engines (the 2-core box at K >= 1: one sampler core): all share them.
    assert plan_cpus(1, cores=(0, 1)).sampler_engine_cores(2) == ["0", "0"]
    assert plan_cpus(0, cores=(0,)).sampler_engine_cores(3) == ["0"] * 3
    with pytest.raises(InvalidInputError, match="samplers"):
        split.sampler_engine_cores(0)


def test_plan_shares_cores_when_phases_alternate_and_splits_when_they_overlap() -> None:
    four = (0, 1, 2, 3)
    assert plan_cpus(0, cores=four).sampler == four == plan_cpus(0, cores=four).learner
    assert plan_cpus(0, cores=four).learner_cores() is None  # shared: torch keeps its threads
    split = plan_cpus(1, cores=four)
    assert (split.sampler, split.learner) == ((0, 1), (2, 3))
    assert split.sampler_cores() == "0-1" and split.learner_cores() == (2, 3)
    assert plan_cpus(2, "shared", cores=four).shared
    assert not plan_cpus(0, "split", cores=four).shared
    assert plan_cpus(1, cores=(0,)).shared  # one core: nothing to split
    with pytest.raises(InvalidInputError, match="cpus"):
        plan_cpus(1, "half")


def test_engine_config_turns_cores_into_vllm_binding() -> None:
    cores = format_cores(available_cores())
    cfg = EngineConfig(device="cpu").resolve()
    assert cfg.cpu_cores == cores
    # One engine process, confined to the cores, one OpenMP thread per core.
    assert cfg.vllm_environment() == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                      "OMP_NUM_THREADS": str(len(available_cores()))}
    assert cfg.engine_cores() == available_cores()
    auto = EngineConfig(device="cpu", cpu_cores="auto").resolve()  # vLLM's own binding
    assert auto.vllm_environment() == {} and auto.engine_cores() is None
    assert EngineConfig(device="cuda").resolve().vllm_environment() == {}


def test_learner_worker_thread_is_pinned(tiny_model) -> None:
    import torch

    import mint_rl as mint

    core = available_cores()[-1]
    before = os.sched_getaffinity(0)
    service = mint.ServiceClient(learner_settings=LearnerSettings(cpu_cores=(core,)))
    client = service.create_lora_training_client(str(tiny_model), rank=4, seed=0)
    try:
        seen = client._submit(lambda: (os.sched_getaffinity(0), torch.get_num_threads())).result()
    finally:
        client.close()
    assert seen == ({core}, 1)
    assert os.sched_getaffinity(0) == before  # only the learner's thread moved

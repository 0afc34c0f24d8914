"""The SDK surface beyond training and sampling, through the unmodified tinker SDK and
tinker-cookbook: run metadata, listings, weights info, TTLs, external weights and the cookbook's
`weights.download`, cancel_future."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from helpers import served
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mint_rl.errors import InvalidInputError
from mint_rl.models import hub_cache_entry
from mint_rl.server import ServerConfig, create_app, paths

tinker = pytest.importorskip("tinker")
download = pytest.importorskip("tinker_cookbook.weights").download
checkpoint_utils = pytest.importorskip("tinker_cookbook.checkpoint_utils")
from tinker import types as tt  # noqa: E402

KEY = "tml-rest"


ALIAS = "Qwen/Qwen3.5-9B"  # the cookbook's twenty_questions answerer, hard-coded


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[str]:
    """With an API key (download links must work without it) and a model alias."""
    config = ServerConfig(api_key=KEY, long_poll_s=1.0,
                          model_aliases=((ALIAS, str(tiny_model)),))
    with served(create_app(config)) as url:
        saved = os.environ.get("TINKER_API_KEY")
        os.environ["TINKER_API_KEY"] = KEY
        yield url
        if saved is None:
            os.environ.pop("TINKER_API_KEY", None)
        else:
            os.environ["TINKER_API_KEY"] = saved


@pytest.fixture(scope="module")
def service(server: str) -> Iterator[tinker.ServiceClient]:
    client = tinker.ServiceClient(base_url=server, user_metadata={"project": "rest-test"})
    yield client
    client.close("success").result()


@pytest.fixture(scope="module")
def trained(service, tiny_model: Path):
    """A client that took one step (so its adapter is not the initial one), with metadata."""
    client = service.create_lora_training_client(
        str(tiny_model), rank=4, seed=0, user_metadata={"renderer_name": "qwen3_instruct"}
    ).result()
    datum = tt.Datum(model_input=tt.ModelInput.from_ints([5, 6, 7, 8]),
                     loss_fn_inputs={"target_tokens": [6, 7, 8, 9], "weights": [1.0] * 4})
    client.forward_backward([datum], "cross_entropy").result()
    client.optim_step(tt.AdamParams(learning_rate=1e-2)).result()
    return client


def _adapter(client) -> dict[str, torch.Tensor]:
    """The client's LoRA tensors as the server holds them, through a save_weights_for_sampler."""
    path = client.save_weights_for_sampler("reference").result().path
    run, kind, name = paths.parse(path)
    return load_file(paths.folder(run, kind, name) / "adapter_model.safetensors")


def test_user_metadata_comes_back_where_the_cookbook_reads_it(service, server, trained) -> None:
    rest = service.create_rest_client()
    run = rest.get_training_run(trained.model_id).result()
    assert run.user_metadata == {"renderer_name": "qwen3_instruct"}
    state = trained.save_state("meta").result().path
    assert checkpoint_utils.get_renderer_name_from_checkpoint(service, state) == "qwen3_instruct"
    session = rest.get_session(service.holder.get_session_id()).result()
    assert session.user_metadata == {"project": "rest-test"}
    assert trained.model_id in session.training_run_ids


def test_runs_and_checkpoints_are_listed_in_pages(service, trained, tiny_model) -> None:
    other = service.create_lora_training_client(str(tiny_model), rank=2, seed=1).result()
    other.save_state("first").result()
    trained.save_state("listed").result()
    rest = service.create_rest_client()
    first = rest.list_training_runs(limit=1).result()
    assert len(first.training_runs) == 1 and first.cursor.total_count >= 2
    rest_of = rest.list_training_runs(limit=100, offset=1).result()
    ids = {r.training_run_id for r in first.training_runs + rest_of.training_runs}
    assert {trained.model_id, other.model_id} <= ids
    mine = rest.list_user_checkpoints(limit=1000).result()
    paths_listed = [c.tinker_path for c in mine.checkpoints]
    assert f"tinker://{trained.model_id}/weights/listed" in paths_listed
    times = [c.time for c in mine.checkpoints]
    assert times == sorted(times, reverse=True)  # newest first
    info = rest.get_weights_info_by_tinker_path(
        f"tinker://{other.model_id}/weights/first").result()
    assert (info.base_model, info.is_lora, info.lora_rank) == (str(tiny_model), True, 2)
    assert info.train_mlp and info.train_attn


def test_weights_download_of_external_weights_and_of_a_training_checkpoint(
        server, service, trained, tiny_model, tmp_path) -> None:
    reference = _adapter(trained)
    external = trained.save_weights_external("export").result().path
    assert external == f"tinker://{trained.model_id}/external_weights/export"
    state = trained.save_state("to-download").result().path
    for path, out in ((external, tmp_path / "external"), (state, tmp_path / "training")):
        download(tinker_path=path, output_dir=str(out), base_url=server)
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {
            f.name for f in out.iterdir()}
        got = load_file(out / "adapter_model.safetensors")
        assert got.keys() == reference.keys()
        assert all(torch.equal(got[k], reference[k]) for k in got)
    # the cookbook's training-checkpoint path exported an encrypted copy, then deleted it
    # what users do with it: peft loads it, `mint-rl export --merged` folds it into the base
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                      str(tmp_path / "training"))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    merged = subprocess.run([sys.executable, "-m", "mint_rl.cli", "export", "--merged",
                             str(tmp_path / "external"), str(tmp_path / "merged")],
                            capture_output=True, text=True, timeout=600)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    exports = [c for run in paths.list_runs() for c in paths.list_checkpoints(run)
               if c["checkpoint_id"] == "external_weights/download"]
    assert exports == []


def test_download_links_expire_and_cannot_be_altered(server, service, trained) -> None:
    path = trained.save_weights_external("links").result().path
    rest = service.create_rest_client()
    links = rest.get_external_weights_urls(path).result()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(links.urls)
    assert links.expires.tzinfo is not None
    url = links.urls["adapter_config.json"]
    assert httpx.get(url).status_code == 200  # no API key needed: the link is signed
    assert httpx.get(url.replace("adapter_config.json", "adapter_model.safetensors")
                     ).status_code == 400  # a link is good for its own file only
    assert httpx.get(url[:-4] + "0000").status_code == 400
    assert httpx.get(f"{server}/api/v1/training_runs").status_code == 401  # the API still is


def test_a_checkpoint_ttl_is_listed_and_kept(service, trained) -> None:
    path = trained.save_state("short-lived", ttl_seconds=3600).result().path
    rest = service.create_rest_client()
    listed = {c.tinker_path: c for c in
              rest.list_checkpoints(trained.model_id).result().checkpoints}
    assert listed[path].expires_at is not None
    rest.set_checkpoint_ttl_from_tinker_path(path, 1).result()
    time.sleep(1.5)
    assert path in paths.sweep_expired()
    listed = [c.tinker_path for c in rest.list_checkpoints(trained.model_id).result().checkpoints]
    assert path not in listed


def test_cancel_future_of_unknown_or_finished_requests_is_harmless(server) -> None:
    answer = httpx.post(f"{server}/api/v1/cancel_future", json={"request_id": "nope"},
                        headers={"X-API-Key": KEY})
    assert answer.status_code == 200 and answer.json() == {"cancelled": False}


def test_unsupported_routes_are_refused_by_name_not_404(server) -> None:
    headers = {"X-API-Key": KEY}
    for method, path in (("POST", "/copy_weights"), ("POST", "/retrieve_futures"),
                         ("POST", "/training_runs/r/checkpoints/weights/x/publish")):
        answer = httpx.request(method, f"{server}/api/v1{path}", headers=headers, json={})
        assert answer.status_code == 400 and "not supported" in answer.json()["detail"]
    unsupported = httpx.get(f"{server}/api/v1/get_server_capabilities",
                            headers=headers).json()["unsupported"]
    assert any("copy_weights" in u for u in unsupported)


def test_a_model_alias_serves_a_local_folder_under_a_hub_name(service, tiny_model,
                                                               tmp_path) -> None:
    client = service.create_lora_training_client(ALIAS, rank=2, seed=0).result()
    info = client.get_info()
    assert info.model_data.model_name == ALIAS
    assert info.model_data.tokenizer_id == str(tiny_model.resolve())
    assert client.get_tokenizer().vocab_size > 0
    rest = service.create_rest_client()
    assert rest.get_training_run(client.model_id).result().base_model == ALIAS
    # what `mint-rl serve --model-alias` also does: the name loads offline from the hub cache
    entry = hub_cache_entry(ALIAS, tiny_model, hf_home=tmp_path)
    assert hub_cache_entry(ALIAS, tiny_model, hf_home=tmp_path) == entry  # kept, not redone
    tokenizer = AutoTokenizer.from_pretrained(ALIAS, cache_dir=tmp_path / "hub",
                                              local_files_only=True)
    assert tokenizer.vocab_size == AutoTokenizer.from_pretrained(tiny_model).vocab_size
    with pytest.raises(InvalidInputError, match="model_aliases"):
        ServerConfig(model_aliases=(("x", str(tmp_path / "missing")),))

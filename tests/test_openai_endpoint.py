"""The OpenAI-compatible endpoint of `mint-rl serve` (/v1), over plain HTTP and the `openai`
client, serving the server's own sampler checkpoints.

Greedy replies are compared with mint_rl's SamplingClient on the same prompt tokens: the endpoint
must add nothing and lose nothing; streamed replies with the same request unstreamed. Refusals,
model names and the tool format are checked without an engine; sampling tests share the session's
vLLM engine (marked slow).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import served

import mint_rl as mint
from mint_rl.learner import checkpoint as ckpt
from mint_rl.models import DEFAULT_MODEL, mint_home
from mint_rl.sampler import chat_prompt
from mint_rl.server import ServerConfig, create_app, paths
from mint_rl.server import openai as endpoint
from mint_rl.server import openai_format as fmt
from mint_rl.server.openai_format import OpenAIError
from mint_rl.types import ModelInput, SamplingParams

KEY = "tml-openai-test"
BEARER = {"Authorization": f"Bearer {KEY}"}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "hi"}]
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
# A chat template with a tool format (Hermes, as Qwen's), small enough to read.
HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou may call these tools:\n<tools>"
    "{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\nAnswer a call as "
    "<tool_call>\n{\"name\": <name>, \"arguments\": <object>}\n</tool_call><|im_end|>\n"
    "{% endif %}{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}"
    "<|im_start|>assistant\n{% for c in m.tool_calls %}<tool_call>\n{\"name\": "
    "\"{{ c.function.name }}\", \"arguments\": {{ c.function.arguments | tojson }}}\n"
    "</tool_call>{% endfor %}<|im_end|>\n{% elif m.role == 'tool' %}<|im_start|>user\n"
    "<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n{% else %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _error(response: httpx.Response, status: int, param: str | None,
           code: str | None = None) -> dict[str, Any]:
    """The OpenAI error body, checked: its shape, status, the field it names, its code."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["message"].startswith(f"{param}:"), error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
def api() -> Iterator[TestClient]:
    with TestClient(create_app(ServerConfig(api_key=KEY, max_request_bytes=4096)),
                    headers=BEARER) as client:
        yield client


# --------------------------------------------------------------------------------------------
# Refusals (no engine: every one is answered before a model is loaded)

# An unknown model: a check that fails to trigger answers 404 for the model instead.
NOWHERE = "no-such-model"


@pytest.mark.parametrize("route, change, param, code", [
    (CHAT, {"stream": "yes"}, "stream", None),
    (CHAT, {"stream_options": {"include_usage": True}}, "stream_options", None),  # no stream
    (COMPLETIONS, {"stream": True, "stream_options": {"chunks": 2}}, "stream_options.chunks",
     "unsupported_parameter"),
    (COMPLETIONS, {"tools": WEATHER}, "tools", "unsupported_parameter"),
    (CHAT, {"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type", None),
    (CHAT, {"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", None),
    (CHAT, {"tools": WEATHER, "tool_choice": "required"}, "tool_choice",
     "unsupported_parameter"),
    (CHAT, {"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", None),
    (CHAT, {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]}]},
     "messages[0].tool_calls[0].function.arguments", None),
    (CHAT, {"frequency_penalty": 0.5}, "frequency_penalty", "unsupported_parameter"),
    (COMPLETIONS, {"echo": True}, "echo", "unsupported_parameter"),
    (CHAT, {"guided_json": {}}, "guided_json", "unsupported_parameter"),
    (CHAT, {"messages": [{"role": "function", "content": "x"}]}, "messages[0].role", None),
    (CHAT, {"messages": [{"role": "user", "content": "x", "audio": {"id": "a"}}]},
     "messages[0].audio", None),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]", None),
    (CHAT, {"messages": []}, "messages", None),
    (CHAT, {"top_logprobs": 2}, "top_logprobs", None),  # without logprobs: true
    (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs", None),
    (COMPLETIONS, {"logprobs": -1}, "logprobs", None),
    (CHAT, {"n": 0}, "n", None),
    (CHAT, {"n": 1025}, "n", None),
    (CHAT, {"temperature": 2.5}, "temperature", None),
    (CHAT, {"top_p": 0}, "top_p", None),
    (CHAT, {"max_tokens": 0}, "max_tokens", None),
    (CHAT, {"stop": [""]}, "stop", None),
    (CHAT, {"seed": "7"}, "seed", None),
])
def test_unsupported_fields_are_refused_by_name(api, route, change, param, code) -> None:
    base = {"model": NOWHERE, "messages": HELLO} if route == CHAT else {"model": NOWHERE,
                                                                        "prompt": "hi"}
    _error(api.post(route, json={**base, **change}), 400, param, code)


def test_fields_that_ask_for_nothing_are_accepted(api) -> None:
    harmless = {"stream": False, "presence_penalty": 0, "logit_bias": {}, "tool_choice": None,
                "user": "someone", "metadata": {"k": "v"}}
    for route, field in ((CHAT, {"messages": HELLO}), (COMPLETIONS, {"prompt": "hi"})):
        # they pass every check, up to the model (unknown here, so no engine starts)
        _error(api.post(route, json={"model": NOWHERE, **field, **harmless}), 404, "model")


def test_streams_and_tools_pass_the_checks_and_errors_stay_json(api) -> None:
    earlier = [*HELLO, {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "snow"}]
    streamed = {"stream": True, "stream_options": {"include_usage": True}}
    for route, field in ((CHAT, {"messages": earlier, "tools": WEATHER, "tool_choice": "auto"}),
                         (COMPLETIONS, {"prompt": "hi"})):
        # an error found before the stream starts is a plain OpenAI error, with its status
        response = api.post(route, json={"model": NOWHERE, **field, **streamed})
        assert response.headers["content-type"].startswith("application/json")
        _error(response, 404, "model")


@pytest.mark.parametrize("model, status", [
    (NOWHERE, 404),
    ("/etc", 404),  # a local folder is not a model id the server serves
    ("tinker://../../etc/sampler_weights/x", 400),
    ("tinker://run/sampler_weights/..", 400),
    ("tinker://.hidden/sampler_weights/x", 400),
    ("tinker://run/other_kind/x", 400),
    ("tinker://never-trained/sampler_weights/x", 404),
    (["not", "a", "string"], 400),
])
def test_unknown_models_and_path_escapes(api, model, status) -> None:
    for route, field in ((CHAT, {"messages": HELLO}), (COMPLETIONS, {"prompt": "hi"})):
        error = _error(api.post(route, json={"model": model, **field}), status, "model",
                       "model_not_found" if status == 404 else None)
        assert "Traceback" not in error["message"]


def test_a_link_out_of_the_storage_is_not_followed(api, tmp_path) -> None:
    outside = tmp_path / "outside" / "sampler_weights" / "x"
    outside.mkdir(parents=True)
    (outside / "adapter_model.safetensors").write_bytes(b"")
    link = paths.storage_root() / "escape"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path / "outside")
    try:
        _error(api.post(CHAT, json={"model": "tinker://escape/sampler_weights/x",
                                    "messages": HELLO}), 400, "model")
        listed = [m["id"] for m in api.get("/v1/models").json()["data"]]
        assert not any("escape" in m for m in listed)
    finally:
        link.unlink()


def test_bad_bodies_get_openai_errors(api) -> None:
    _error(api.post(CHAT, content=b"{not json"), 400, None)
    _error(api.post(CHAT, json=[1, 2]), 400, None)
    big = api.post(CHAT, json={"model": NOWHERE, "messages": [{"role": "user",
                                                                "content": "x" * 5000}]})
    assert _error(big, 413, None)["message"].endswith("4096 bytes")


def test_the_key_goes_as_bearer_or_x_api_key_on_v1_only(api) -> None:
    anonymous = {"Authorization": ""}
    _error(api.get("/v1/models", headers=anonymous), 401, None, "invalid_api_key")
    _error(api.get("/v1/models", headers={"Authorization": "Bearer tml-wrong"}), 401, None)
    _error(api.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}), 401, None)
    assert api.get("/v1/models").status_code == 200
    assert api.get("/v1/models", headers={"Authorization": "", "X-API-Key": KEY}
                   ).status_code == 200
    # the Tinker routes keep their own header
    body = {"tags": [], "user_metadata": None, "sdk_version": "0.38.0"}
    refused = api.post("/api/v1/create_session", json=body)
    assert refused.status_code == 401 and "detail" in refused.json()


def test_models_lists_sampler_checkpoints_and_base_models(api, tiny_model: Path) -> None:
    client = mint.ServiceClient().create_lora_training_client(str(tiny_model), rank=4, seed=0)
    try:
        sampler = paths.from_mint_path(client.save_weights_for_sampler("listed").result().path)
        state = paths.from_mint_path(client.save_state("not-servable").result().path)
    finally:
        client.close()
    listing = api.get("/v1/models").json()
    assert listing["object"] == "list"
    cards = {m["id"]: m for m in listing["data"]}
    assert cards[DEFAULT_MODEL]["parent"] is None
    card = cards[sampler]
    assert card["object"] == "model" and card["owned_by"] == "mint-rl"
    # its adapter config names the folder: listed by the folder's name, which is a model name
    assert card["parent"] == card["root"] == tiny_model.name and tiny_model.name in cards
    resolver = endpoint.ModelResolver(api.app.state.server)
    base, adapter = resolver.resolve(tiny_model.name)
    assert Path(base).resolve() == tiny_model.resolve() and adapter is None
    for shown in (c[k] for c in listing["data"] for k in ("id", "root", "parent")):
        assert shown is None or not (shown.startswith(("/", "~", ".")) or str(mint_home()) in shown
                                     or str(paths.storage_root()) in shown), shown
    assert state not in cards
    # a training checkpoint is no model to sample
    _error(api.post(CHAT, json={"model": state, "messages": HELLO}), 404, "model",
           "model_not_found")


def test_local_folders_are_named_without_their_path(tmp_path) -> None:
    bundled = mint_home() / "models" / DEFAULT_MODEL.rpartition("/")[2]
    snapshot = tmp_path / "hub" / "models--org--some-model" / "snapshots" / "abc123"
    twins = [tmp_path / "a" / "model-x", tmp_path / "b" / "model-x"]
    names = endpoint._public_names({DEFAULT_MODEL, str(bundled), str(snapshot), "org/other",
                                    "bare-name", *map(str, twins), str(tmp_path / "bare-name")})
    assert names[str(bundled)] == names[DEFAULT_MODEL] == DEFAULT_MODEL  # the same model
    assert names[str(snapshot)] == "org/some-model"
    assert names["org/other"] == "org/other" and names["bare-name"] == "bare-name"
    twin_names = [names[str(t)] for t in twins]  # one folder name, two folders: told apart
    assert len(set(twin_names)) == 2 and all(n.startswith("model-x-") for n in twin_names)
    assert names[str(tmp_path / "bare-name")].startswith("bare-name-")  # a name already taken
    assert not any(str(tmp_path) in n for n in names.values())


def test_tools_go_through_a_template_with_a_tool_format(tiny_model) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # its template renders no tools
    with pytest.raises(OpenAIError) as refused:
        fmt.check_tools(tokenizer, WEATHER, HELLO)
    assert refused.value.param == "tools" and "no tool format" in refused.value.message
    history = [{"role": "tool", "content": "snow", "tool_call_id": "c1"}]
    with pytest.raises(OpenAIError) as refused:
        fmt.check_tools(tokenizer, None, history)
    assert refused.value.param == "messages[0].role"
    fmt.check_tools(tokenizer, None, HELLO)  # no tools asked for: nothing to refuse

    tokenizer.chat_template = HERMES_TEMPLATE
    assert fmt.tool_format(tokenizer) == fmt.HERMES
    fmt.check_tools(tokenizer, WEATHER, history)
    prompt = tokenizer.decode(fmt.chat_tokens(tokenizer, HELLO, WEATHER))
    assert '"name": "get_weather"' in prompt and prompt.endswith("<|im_start|>assistant\n")
    tokenizer.chat_template = HERMES_TEMPLATE.replace("tool_call>", "call>")  # another format
    with pytest.raises(OpenAIError) as refused:
        fmt.check_tools(tokenizer, WEATHER, HELLO)
    assert refused.value.param == "tools" and "Hermes" in refused.value.message


@pytest.mark.parametrize("text, content, calls", [
    ('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>', None, [("f", {"x": 1})]),
    ('Let me look.<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
     '<tool_call>{"name": "g", "arguments": {"y": "z"}}</tool_call>', "Let me look.",
     [("f", {}), ("g", {"y": "z"})]),
    ("no call here", "no call here", []),
    ('<tool_call>{"name": "f", "argu', '<tool_call>{"name": "f", "argu', []),  # cut short
    ('<tool_call>{"name": f}</tool_call>', '<tool_call>{"name": f}</tool_call>', []),
])
def test_hermes_tool_calls_are_read_back(text, content, calls) -> None:
    got_content, got = fmt.hermes_tool_calls(text)
    assert got_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got] == calls
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in got)


# --------------------------------------------------------------------------------------------
# Sampling (vLLM; the session's shared engine)


@pytest.fixture(scope="module")
def server(sampler_engine) -> Iterator[str]:
    with served(create_app(ServerConfig(api_key=KEY))) as url:
        yield url


@pytest.fixture(scope="module")
def adapter(server) -> Iterator[tuple[str, Path]]:
    """A LoRA on the default model, trained through the tinker SDK and saved for sampling:
    (its tinker path, its folder)."""
    import tinker
    from tinker import types as tt

    saved = os.environ.get("TINKER_API_KEY")
    os.environ["TINKER_API_KEY"] = KEY
    service = tinker.ServiceClient(base_url=server)
    client = service.create_lora_training_client(DEFAULT_MODEL, rank=4, seed=0).result()
    ids = client.get_tokenizer().encode("The capital of France is Paris.")
    datum = tt.Datum(model_input=tt.ModelInput.from_ints(ids[:-1]),
                     loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)})
    for _ in range(2):
        client.forward_backward([datum], "cross_entropy")
        client.optim_step(tt.AdamParams(learning_rate=1e-2)).result()
    path = client.save_weights_for_sampler("openai").result().path
    yield path, ckpt.runs_dir() / client.model_id / "sampler_weights" / "openai"
    service.close("success").result()
    if saved is None:
        os.environ.pop("TINKER_API_KEY", None)
    else:
        os.environ["TINKER_API_KEY"] = saved


def _post(server: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server + route, json=body, headers=BEARER, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def _greedy(client: mint.SamplingClient, prompt: list[int], max_tokens: int,
            stop: list[str] | None = None) -> Any:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop)
    return client.sample(ModelInput.from_ints(prompt), 1, params).result().sequences[0]


@pytest.mark.slow
def test_chat_greedy_matches_the_sampling_client(server, adapter) -> None:
    path, folder = adapter
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = _post(server, CHAT, {"model": path, "messages": messages, "max_tokens": 8,
                                 "temperature": 0, "n": 2, "logprobs": True, "top_logprobs": 3})
    local_client = mint.SamplingClient(DEFAULT_MODEL, folder)
    tokenizer = local_client.get_tokenizer()
    prompt = chat_prompt(tokenizer, messages).to_ints()
    local = _greedy(local_client, prompt, 8)
    assert reply["object"] == "chat.completion" and reply["model"] == path
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    for choice in reply["choices"]:
        text = tokenizer.decode(local.tokens, skip_special_tokens=True)
        assert choice["message"] == {"role": "assistant", "content": text} and text
        content = choice["logprobs"]["content"]  # one entry per sampled token
        assert [e["token"] for e in content] == [tokenizer.decode([t]) for t in local.tokens]
        np.testing.assert_allclose([e["logprob"] for e in content], local.logprobs, atol=1e-4)
        assert choice["finish_reason"] == ("length" if local.stop_reason == "length" else "stop")
        for entry in content:  # greedy: the chosen token is the likeliest of the top 3
            top = [t["logprob"] for t in entry["top_logprobs"]]
            assert len(top) == 3 and top == sorted(top, reverse=True)
            assert entry["top_logprobs"][0]["token"] == entry["token"]
            assert top[0] == pytest.approx(entry["logprob"], abs=2e-3)
            assert entry["bytes"] == list(entry["token"].encode())
    assert reply["usage"] == {"prompt_tokens": len(prompt),
                              "completion_tokens": 2 * len(local.tokens),
                              "total_tokens": len(prompt) + 2 * len(local.tokens)}
    # the adapter answered, not the base model
    base = mint.SamplingClient(DEFAULT_MODEL).compute_logprobs(
        ModelInput.from_ints(prompt + local.tokens)).result()[len(prompt):]
    assert max(abs(b - lp) for b, lp in zip(base, local.logprobs, strict=True)) > 1e-2


@pytest.mark.slow
def test_completions_prompts_stop_and_logprobs(server) -> None:
    local_client = mint.SamplingClient(DEFAULT_MODEL)
    tokenizer = local_client.get_tokenizer()
    text = "The capital of France is"
    ids = tokenizer.encode(text)
    local = _greedy(local_client, ids, 8, stop=["."])
    decoded = tokenizer.decode(local.tokens, skip_special_tokens=True)
    body = {"model": DEFAULT_MODEL, "max_tokens": 8, "temperature": 0, "logprobs": 2,
            "stop": ["."]}
    by_text = _post(server, COMPLETIONS, {**body, "prompt": text})
    by_ids = _post(server, COMPLETIONS, {**body, "prompt": ids})
    assert by_text["choices"] == by_ids["choices"] and by_text["object"] == "text_completion"
    choice = by_text["choices"][0]
    assert "." in decoded and choice["text"] == decoded[:decoded.index(".")]  # cut, as OpenAI
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == [tokenizer.decode([t]) for t in local.tokens]
    np.testing.assert_allclose(logprobs["token_logprobs"], local.logprobs, atol=1e-4)
    assert logprobs["text_offset"] == [sum(map(len, logprobs["tokens"][:i]))
                                       for i in range(len(local.tokens))]
    for token, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                              logprobs["top_logprobs"], strict=True):
        assert 1 <= len(top) <= 2 and max(top.values()) == pytest.approx(lp, abs=2e-3)
        assert top[token] == pytest.approx(lp, abs=2e-3)
    assert by_text["usage"]["prompt_tokens"] == len(ids)
    assert by_text["usage"]["completion_tokens"] == len(local.tokens)


@pytest.mark.slow
def test_completions_batch_n_and_seed(server) -> None:
    tokenizer = mint.SamplingClient(DEFAULT_MODEL).get_tokenizer()
    prompts = ["1, 2, 3,", "Once upon a time"]
    body = {"model": DEFAULT_MODEL, "prompt": prompts, "max_tokens": 6, "temperature": 1.0,
            "n": 3, "seed": 7}
    first, again = _post(server, COMPLETIONS, body), _post(server, COMPLETIONS, body)
    assert [c["index"] for c in first["choices"]] == list(range(6))
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]
    assert all(c["logprobs"] is None for c in first["choices"])
    usage = first["usage"]
    assert usage["prompt_tokens"] == sum(len(tokenizer.encode(p)) for p in prompts)
    assert 6 <= usage["completion_tokens"] <= 6 * 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert {c["finish_reason"] for c in first["choices"]} <= {"stop", "length"}


@pytest.mark.slow
def test_the_openai_client(server, adapter) -> None:
    import openai
    path, folder = adapter
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    assert path in {m.id for m in client.models.list()}
    messages = [{"role": "user", "content": "Name a color."}]
    reply = client.chat.completions.create(model=path, messages=messages, max_tokens=5,
                                           temperature=0)
    local_client = mint.SamplingClient(DEFAULT_MODEL, folder)
    tokenizer = local_client.get_tokenizer()
    local = _greedy(local_client, chat_prompt(tokenizer, messages).to_ints(), 5)
    assert reply.choices[0].message.content == tokenizer.decode(local.tokens,
                                                                skip_special_tokens=True)
    assert reply.usage is not None and reply.usage.completion_tokens == len(local.tokens)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=NOWHERE, messages=messages)
    with pytest.raises(openai.NotFoundError):  # found out before the stream starts
        client.chat.completions.create(model=NOWHERE, messages=messages, stream=True)


@pytest.mark.slow
def test_a_streamed_chat_is_the_reply_in_chunks(server, adapter) -> None:
    import openai
    path, _ = adapter
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    ask = {"model": path, "messages": [{"role": "user", "content": "Name a fruit."}],
           "max_tokens": 6, "temperature": 0, "seed": 0, "logprobs": True}
    reply = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].model == path
    *parts, last = chunks
    assert last.choices == [] and last.usage == reply.usage  # the usage comes last, alone
    assert all(c.usage is None and len(c.choices) == 1 for c in parts)
    assert parts[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in parts)
    assert text == reply.choices[0].message.content and text
    tokens = [e.token for c in parts if c.choices[0].logprobs
              for e in c.choices[0].logprobs.content or []]
    assert reply.choices[0].logprobs and reply.choices[0].logprobs.content
    assert tokens == [e.token for e in reply.choices[0].logprobs.content]
    finished = [c.choices[0].finish_reason for c in parts if c.choices[0].finish_reason]
    assert finished == [reply.choices[0].finish_reason]


@pytest.mark.slow
def test_a_streamed_completion_with_two_choices(server) -> None:
    import openai
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    ask = {"model": DEFAULT_MODEL, "prompt": "Once upon a time", "max_tokens": 5, "n": 2,
           "temperature": 1.0, "seed": 7}
    reply = client.completions.create(**ask)
    chunks = list(client.completions.create(**ask, stream=True))
    assert all(c.object == "text_completion" and c.usage is None for c in chunks)
    for choice in reply.choices:
        mine = [c.choices[0] for c in chunks if c.choices[0].index == choice.index]
        assert "".join(c.text for c in mine) == choice.text
        assert [c.finish_reason for c in mine if c.finish_reason] == [choice.finish_reason]
    assert len({c.text for c in reply.choices}) == 2  # two samples (seed + i each)


@pytest.mark.slow
def test_tools_need_a_template_with_a_tool_format(server) -> None:
    import openai
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:  # SmolLM2's template has none
        client.chat.completions.create(model=DEFAULT_MODEL, messages=HELLO, tools=WEATHER,
                                       stream=True)
    assert refused.value.param == "tools" and "no tool format" in refused.value.message


def _tool_call(city: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [{
        "id": f"call_{city}", "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]}


@pytest.mark.slow
def test_tool_calls_are_read_out_of_the_reply(server, sampler_engine, monkeypatch) -> None:
    """The default model under a Hermes template (swapped into the engine's tokenizer for this
    test), shown two calls: greedily it calls the tool for a third city."""
    import openai
    monkeypatch.setattr(sampler_engine.tokenizer, "chat_template", HERMES_TEMPLATE)
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": "Weather in Paris?"}, _tool_call("Paris"),
                {"role": "user", "content": "Weather in Rome?"}, _tool_call("Rome"),
                {"role": "user", "content": "Weather in Oslo?"}]
    ask = {"model": DEFAULT_MODEL, "messages": messages, "tools": WEATHER, "max_tokens": 40,
           "temperature": 0}
    choice = client.chat.completions.create(**ask).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})]
    streamed = [c.choices[0] for c in client.chat.completions.create(**ask, stream=True)]
    deltas = [call for c in streamed for call in c.delta.tool_calls or []]
    assert [(d.index, d.function and d.function.name) for d in deltas] == [(0, "get_weather")]
    assert deltas[0].function and deltas[0].function.arguments == calls[0].function.arguments
    assert streamed[-1].finish_reason == "tool_calls"

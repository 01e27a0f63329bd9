"""The serving app through the official ``openai`` client, on a real uvicorn (127.0.0.1, a free
port), the tiny model and a real SQLite feedback store."""

from __future__ import annotations

import json

import pytest
import torch

openai = pytest.importorskip("openai", reason="the openai client is not installed (rlft[dev])")
httpx = pytest.importorskip("httpx", reason="the feedback extra is not installed")
pytest.importorskip("fastapi", reason="the feedback extra is not installed")
pytest.importorskip("peft", reason="per-user adapters need peft (rlft[scale])")

from rlft.feedback.live import LiveFeedback  # noqa: E402
from rlft.feedback.server import BackgroundServer  # noqa: E402
from rlft.feedback.store import Store  # noqa: E402
from rlft.serving.app import create_serving_app  # noqa: E402
from rlft.serving.chat import chat_prompt  # noqa: E402
from rlft.serving.host import ModelHost  # noqa: E402

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """(server url, host, store, {name: token}); alice and bob consented, carol did not."""
    store = Store(tmp_path_factory.mktemp("serving") / "feedback.db")
    tokens = {name: store.add_annotator(name, consent=name != "carol") for name in ("alice", "bob", "carol")}
    host = ModelHost.from_folder(tiny_model_dir, adapter_r=4, max_wait_ms=20)
    with host, BackgroundServer(create_serving_app(host, store, model_name="tiny")) as server:
        yield server.url, host, store, tokens
    store.close()


def _client(served, name="alice"):
    url, _, _, tokens = served
    return openai.OpenAI(base_url=url + "/v1", api_key=tokens.get(name, name), max_retries=0)


def _feedback(served, name, body):
    url, _, _, tokens = served
    return httpx.post(url + "/v1/feedback", headers={"Authorization": f"Bearer {tokens[name]}"}, json=body)


def test_chat_completion_is_answered_counted_and_recorded(served):
    _, host, store, _ = served
    out = _client(served).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=7, seed=3)
    choice = out.choices[0]
    assert out.id.startswith("resp-") and len(out.id) == 37
    assert (out.object, out.model, out.system_fingerprint) == ("chat.completion", "tiny", "rlft-v1")
    assert (out.model_extra["model_version"], out.model_extra["adapter"]) == (1, None)
    assert choice.finish_reason in ("stop", "length") and choice.message.role == "assistant"
    usage = out.usage
    prompt = chat_prompt(host.tokenizer, MESSAGES)
    assert usage.prompt_tokens == len(host.tokenizer(prompt).input_ids)
    assert usage.completion_tokens == 7 if choice.finish_reason == "length" else usage.completion_tokens <= 7
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    row = LiveFeedback(store).response(out.id)
    assert (row["annotator"], row["prompt"], row["completion"], row["model_version"]) == (
        "alice", prompt, choice.message.content, 1
    )


def test_a_streamed_chat_carries_the_same_answer_in_openai_chunks(served):
    client = _client(served)
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, seed=11)
    chunks = list(client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=12, seed=11, stream=True, stream_options={"include_usage": True}
    ))  # fmt: skip
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert chunks[0].id != whole.id  # each answer its own response id


def test_text_completions_n_and_stream(served):
    _, _, store, _ = served
    client = _client(served)
    out = client.completions.create(model="tiny", prompt="4+4=", max_tokens=5, n=3, seed=2)
    ids = [c.model_extra["response_id"] for c in out.choices]
    assert out.object == "text_completion" and [c.index for c in out.choices] == [0, 1, 2]
    assert len(set(ids)) == 3 and ids[0] == out.id
    stopped_at_length = sum(c.finish_reason == "length" for c in out.choices)
    assert 5 * stopped_at_length <= out.usage.completion_tokens <= 15
    live = LiveFeedback(store)
    assert [live.response(i)["completion"] for i in ids] == [c.text for c in out.choices]
    streamed = list(client.completions.create(model="tiny", prompt="4+4=", max_tokens=5, n=3, seed=2, stream=True))
    for index, choice in enumerate(out.choices):
        parts = [c.choices[0].text for c in streamed if c.choices and c.choices[0].index == index]
        assert "".join(parts) == choice.text
    many = client.completions.create(model="tiny", prompt=["1+1=", "2+2=", "3+3="], max_tokens=4, seed=5)
    assert [c.index for c in many.choices] == [0, 1, 2]
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=4, seed=5) for p in ("1+1=", "2+2=", "3+3=")]
    assert [c.text for c in many.choices] == [a.choices[0].text for a in alone]
    assert many.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone) == 12


def test_models_lists_the_served_model(served):
    [model] = _client(served).models.list().data
    assert (model.id, model.owned_by, model.model_extra["model_version"]) == ("tiny", "rlft", 1)


def test_feedback_on_answers_is_stored_once_per_question(served):
    _, _, store, _ = served
    client = _client(served)
    a = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
    b = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
    live = LiveFeedback(store)
    before = live.count()
    first = _feedback(served, "alice", {"response_id": a.id, "rating": "up"})
    assert (first.status_code, first.json()["created"]) == (201, True)
    again = _feedback(served, "alice", {"response_id": a.id, "rating": "up"})
    assert (again.status_code, again.json()) == (200, {**first.json(), "created": False, "duplicate": True})
    changed = _feedback(served, "alice", {"response_id": a.id, "rating": "down"})
    assert (changed.status_code, changed.json()["replaced"], changed.json()["id"]) == (200, True, first.json()["id"])
    pair = _feedback(served, "alice", {"response_ids": [a.id, b.id], "preferred": b.id})
    assert pair.status_code == 201
    assert live.count() == before + 2
    rating, preference = live.judgements(after_id=first.json()["id"] - 1)[-2:]
    assert (rating.kind, rating.desirable, rating.response_ids) == ("rating", False, (a.id,))
    assert (preference.kind, preference.response_ids) == ("pair", (b.id, a.id))
    assert (preference.completion, preference.rejected) == (b.choices[0].message.content, a.choices[0].message.content)


def test_feedback_refusals(served):
    alice_answer = _client(served).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert _feedback(served, "bob", {"response_id": alice_answer.id, "rating": "up"}).status_code == 403
    assert _feedback(served, "alice", {"response_id": "resp-" + "0" * 32, "rating": "up"}).status_code == 404
    for bad in ({"response_id": alice_answer.id}, {"response_id": alice_answer.id, "rating": "meh"},
                {"response_ids": [alice_answer.id], "preferred": alice_answer.id}, {"rating": "up", "extra": 1},
                {"response_id": alice_answer.id, "rating": "up", "preferred": alice_answer.id}):  # fmt: skip
        assert _feedback(served, "alice", bad).status_code == 422, bad
    # carol never consented: she is answered, nothing is stored, and her feedback is refused
    carol = _client(served, "carol").chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert carol.model_extra["recorded"] is False
    assert LiveFeedback(served[2]).response(carol.id) is None
    assert _feedback(served, "carol", {"response_id": carol.id, "rating": "up"}).status_code == 403


def test_bad_token_other_user_other_model_and_bad_values(served):
    with pytest.raises(openai.AuthenticationError):
        _client(served, "rlft_not-a-token").chat.completions.create(model="tiny", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError, match="belongs to 'alice'"):
        _client(served).chat.completions.create(model="tiny", messages=MESSAGES, user="bob")
    ok = _client(served).chat.completions.create(model="tiny", messages=MESSAGES, user="alice", max_tokens=2)
    assert ok.choices[0].message.content is not None
    with pytest.raises(openai.NotFoundError, match="serves the model 'tiny'"):
        _client(served).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    for kwargs, says in (({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 100_000}, "context window"),
                         ({"temperature": -1}, "temperature"), ({"n": 40}, "n must be"),
                         ({"stop": ["\n"]}, "stop is not supported")):  # fmt: skip
        with pytest.raises(openai.BadRequestError, match=says):
            _client(served).chat.completions.create(model="tiny", messages=MESSAGES, **kwargs)
    for messages in ([], [{"role": "wizard", "content": "hi"}]):
        with pytest.raises(openai.BadRequestError, match="messages"):
            _client(served).chat.completions.create(model="tiny", messages=messages)


def test_a_stream_cut_by_the_client_is_recorded_and_the_server_serves_on(served):
    url, _, store, tokens = served
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 40, "n": 4, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {tokens['alice']}"}) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
    cut_id = json.loads(first[len("data: "):])["id"]
    after = _client(served).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert after.choices[0].message.content is not None
    assert LiveFeedback(store).response(cut_id) is not None


def test_a_users_adapter_serves_that_user_and_swaps_reach_the_answers(served):
    url, host, store, tokens = served
    from peft import get_peft_model_state_dict

    g = torch.Generator().manual_seed(0)
    host.set_adapter("alice", {k: 0.3 * torch.randn(v.shape, generator=g) for k, v in get_peft_model_state_dict(host.model).items()})
    try:
        alice = _client(served).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, seed=4)
        bob = _client(served, "bob").chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, seed=4)
        assert (alice.model_extra["adapter"], bob.model_extra["adapter"]) == ("alice", None)
        assert alice.choices[0].message.content != bob.choices[0].message.content
        me = httpx.get(url + "/v1/me", headers={"Authorization": f"Bearer {tokens['alice']}"}).json()
        assert (me["name"], me["adapter"], me["consented"]) == ("alice", "alice", True)
        assert LiveFeedback(store).response(alice.id)["adapter"] == "alice"
    finally:
        host.set_adapter("alice", None)
    v1 = host.base_state_dict()
    host.swap(2, v1)
    try:
        out = _client(served, "bob").chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
        assert (out.system_fingerprint, out.model_extra["model_version"]) == ("rlft-v2", 2)
        assert LiveFeedback(store).response(out.id)["model_version"] == 2
    finally:
        host.swap(1, v1)


def test_page_health_and_consent(served):
    url, _, _, tokens = served
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "rlft chat" in page.text and "Another answer" in page.text
    assert httpx.get(url + "/health").json() == {"ok": True, "model_version": 1}
    headers = {"Authorization": f"Bearer {tokens['carol']}"}
    assert httpx.get(url + "/v1/me", headers=headers).json()["consented"] is False
    assert httpx.post(url + "/v1/consent", headers=headers).status_code == 204
    assert httpx.get(url + "/v1/me", headers=headers).json()["consented"] is True
    assert httpx.get(url + "/v1/models").status_code == 401


def _post(served, path, body, name="alice", **kw):
    url, _, _, tokens = served
    return httpx.post(url + path, headers={"Authorization": f"Bearer {tokens.get(name, name)}"}, json=body, **kw)


def _openai_error(response, status):
    """The body of an error answer: OpenAI's {"error": {message, type, param, code}}."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", True), ("max_tokens", "8"), ("max_tokens", 8.0), ("n", True), ("seed", "1"),
     ("temperature", "0.5"), ("temperature", False), ("max_completion_tokens", "4"), ("stream", 1)],
)  # fmt: skip
def test_values_of_the_wrong_type_are_refused_not_converted(served, field, value):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, field: value}
    error = _openai_error(_post(served, "/v1/chat/completions", body), 422)
    assert error["param"] == field and field in error["message"]
    if field != "max_completion_tokens":  # a chat field
        with pytest.raises(openai.UnprocessableEntityError, match=field):
            _client(served).completions.create(model="tiny", prompt="1+1=", extra_body={field: value})


def test_every_error_is_in_openais_shape(served):
    url, _, _, tokens = served
    chat = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}
    too_big = _post(served, "/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": "x" * 300_000}]})
    assert "over 262144 bytes" in _openai_error(too_big, 413)["message"]
    not_json = httpx.post(url + "/v1/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {tokens['alice']}", "Content-Type": "application/json"})  # fmt: skip
    assert _openai_error(not_json, 422)["type"] == "invalid_request_error"
    assert _openai_error(_post(served, "/v1/chat/completions", {"messages": MESSAGES}), 422)["param"] == "model"
    assert _openai_error(_post(served, "/v1/chat/completions", {**chat, "stop": "\n"}), 400)["param"] == "stop"
    assert _openai_error(_post(served, "/v1/chat/completions", chat, name="rlft_nobody"), 401)["type"] == "authentication_error"
    assert _openai_error(_post(served, "/v1/chat/completions", {**chat, "user": "bob"}), 403)["type"] == "permission_error"
    assert _openai_error(_post(served, "/v1/chat/completions", {**chat, "model": "gpt-4o"}), 404)["type"] == "not_found_error"
    assert _openai_error(_post(served, "/v1/feedback", {"rating": "up"}), 422)["code"] == 422


def test_a_request_for_too_many_answers_is_refused_naming_the_limit(served):
    prompts = [f"{i}+1=" for i in range(16)]
    with pytest.raises(openai.BadRequestError, match=r"128 answers.*at most 64 per request.*--max-rows-per-request"):
        _client(served).completions.create(model="tiny", prompt=prompts, n=8, max_tokens=1)
    error = _openai_error(_post(served, "/v1/completions", {"model": "tiny", "prompt": prompts, "n": 8}), 400)
    assert error["param"] == "n"
    at_the_limit = _client(served).completions.create(model="tiny", prompt=prompts, n=4, max_tokens=1)
    assert len(at_the_limit.choices) == 64


def test_chat_answers_of_a_model_without_a_chat_template_carry_a_warning(served, tiny_model_dir, tmp_path):
    _, host, _, _ = served
    assert not host.tokenizer.chat_template, "the tiny model has no chat template"
    client = _client(served)
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert "no chat template" in chat.model_extra["warning"] and "/v1/completions" in chat.model_extra["warning"]
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, stream=True))
    assert all(c.model_extra["warning"] == chat.model_extra["warning"] for c in chunks)
    text = client.completions.create(model="tiny", prompt="1+1=", max_tokens=2)
    assert "warning" not in text.model_extra

    templated = ModelHost.from_folder(tiny_model_dir)
    templated.tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    store = Store(tmp_path / "feedback.db")
    token = store.add_annotator("dora")
    with templated, BackgroundServer(create_serving_app(templated, store, model_name="tiny")) as server:
        answer = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0).chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=2
        )
    store.close()
    assert "warning" not in answer.model_extra

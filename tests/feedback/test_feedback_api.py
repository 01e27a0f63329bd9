"""The web app's API over real HTTP (uvicorn on 127.0.0.1, a free port) against a real SQLite file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the feedback extra is not installed")


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _body(**overrides):
    return {"item_id": "i1", "choice": "A", "idempotency_key": "key-0001", **overrides}


def test_unknown_or_missing_token_gets_401(live):
    server, store = live
    for headers in ({}, _auth("rlft_not-a-token"), {"Authorization": "Basic abc"}):
        res = httpx.get(server.url + "/api/next", headers=headers)
        assert res.status_code == 401
        assert res.headers["www-authenticate"] == "Bearer"
    assert httpx.post(server.url + "/api/judgements", json=_body()).status_code == 401
    assert httpx.get(server.url + "/api/health").json() == {"ok": True}
    assert "rlft human feedback" in httpx.get(server.url + "/").text
    assert store.counts()["judgements"] == 0


def test_consent_is_required_before_judging(live):
    server, store = live
    token = store.add_annotator("new")
    me = httpx.get(server.url + "/api/me", headers=_auth(token)).json()
    assert me["consented"] is False and me["mode"] == "pair"
    assert (
        httpx.post(server.url + "/api/judgements", headers=_auth(token), json=_body()).status_code
        == 403
    )
    assert httpx.post(server.url + "/api/consent", headers=_auth(token)).status_code == 204
    assert (
        httpx.post(server.url + "/api/judgements", headers=_auth(token), json=_body()).status_code
        == 201
    )


def test_submit_repeat_conflict_and_unknown_item(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    first = httpx.post(server.url + "/api/judgements", headers=h, json=_body(comment="clear win"))
    repeat = httpx.post(server.url + "/api/judgements", headers=h, json=_body(comment="clear win"))
    assert (first.status_code, first.json()["stored"]) == (201, True)
    assert (repeat.status_code, repeat.json()) == (
        200,
        {"id": first.json()["id"], "stored": False, "duplicate": True},
    )
    assert (
        httpx.post(server.url + "/api/judgements", headers=h, json=_body(choice="B")).status_code
        == 409
    )
    unknown = httpx.post(
        server.url + "/api/judgements",
        headers=h,
        json=_body(item_id="zz", idempotency_key="k-zz-0001"),
    )
    assert unknown.status_code == 404
    [row] = store.judgements()
    assert (row["annotator"], row["choice"], row["comment"]) == ("a", "A", "clear win")


@pytest.mark.parametrize(
    "body",
    [
        _body(choice="C"),
        _body(idempotency_key="short"),
        _body(idempotency_key="has spaces in it"),
        _body(side="A"),  # a pair has no side
        _body(kind="rating", choice="up"),  # a rating needs a side
        _body(comment="x" * 2001),
        _body(extra="field"),
        {"choice": "A", "idempotency_key": "key-0001"},
    ],
)
def test_invalid_bodies_get_422(live, body):
    server, store = live
    res = httpx.post(
        server.url + "/api/judgements",
        headers=_auth(store.add_annotator("a", consent=True)),
        json=body,
    )
    assert res.status_code == 422
    assert store.counts()["judgements"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"item_id": "i1", "choice": "A", "idempotency_key": "key-0001", "comment": "\\ud800"}',
        '{"item_id": "\\ud800", "choice": "A", "idempotency_key": "key-0001"}',
        '{"item_id": "i1", "choice": "\\udfff", "idempotency_key": "key-0001"}',
        '{"item_id": "i1", "choice": "A", "idempotency_key": "key-0001", "\\ud800": 1}',
    ],
)
def test_a_lone_surrogate_in_any_field_gets_422_not_500(live, raw):
    server, store = live
    headers = {**_auth(store.add_annotator("a", consent=True)), "Content-Type": "application/json"}
    res = httpx.post(server.url + "/api/judgements", headers=headers, content=raw)
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["loc"][0] == "body"
    assert store.counts()["judgements"] == 0


def test_item_ids_follow_the_items_files_rule(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    for item_id in ("x" * 129, " i1", ""):
        res = httpx.post(server.url + "/api/judgements", headers=h, json=_body(item_id=item_id))
        assert res.status_code == 422, item_id
    assert httpx.post(server.url + "/api/judgements", headers=h, json=_body()).status_code == 201


def test_many_keys_from_one_annotator_on_one_item_are_one_vote(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    answers = [
        httpx.post(
            server.url + "/api/judgements", headers=h, json=_body(idempotency_key=f"stuff-{n:04d}")
        ).json()
        for n in range(50)
    ]
    assert [a["replaced"] for a in answers] == [False] + [True] * 49
    assert store.counts()["judgements"] == 1


def test_the_api_schema_needs_a_token(live):
    server, store = live
    assert httpx.get(server.url + "/openapi.json").status_code == 401
    schema = httpx.get(server.url + "/openapi.json", headers=_auth(store.add_annotator("a")))
    assert schema.status_code == 200 and "/api/judgements" in schema.json()["paths"]
    for path in ("/docs", "/redoc"):
        assert httpx.get(server.url + path).status_code == 404


def test_oversized_bodies_get_413_declared_or_streamed(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    big = json.dumps(_body(comment="x" * 20_000)).encode()
    assert httpx.post(server.url + "/api/judgements", headers=h, content=big).status_code == 413

    def chunks():  # no Content-Length: the limit must hold on the streamed body too
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    assert (
        httpx.post(server.url + "/api/judgements", headers=h, content=chunks()).status_code == 413
    )
    assert store.counts()["judgements"] == 0


def test_sql_in_fields_is_stored_as_text(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    evil = "x'); DROP TABLE judgements; --"
    assert (
        httpx.post(server.url + "/api/judgements", headers=h, json=_body(comment=evil)).status_code
        == 201
    )
    assert store.judgements()[0]["comment"] == evil


def test_next_walks_every_item_once_then_204(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    seen = []
    while (res := httpx.get(server.url + "/api/next", headers=h)).status_code == 200:
        item = res.json()
        assert {o["side"] for o in item["options"]} == {"A", "B"}
        seen.append(item["item_id"])
        key = f"walk-key-{item['item_id']}"
        assert (
            httpx.post(
                server.url + "/api/judgements",
                headers=h,
                json=_body(item_id=item["item_id"], idempotency_key=key),
            ).status_code
            == 201
        )
    assert res.status_code == 204
    assert sorted(seen) == ["i1", "i2", "i3"]  # "solo" has one completion: rating only
    rating = httpx.get(server.url + "/api/next?kind=rating", headers=h).json()
    assert rating["kind"] == "rating" and len(rating["options"]) == 1


def test_concurrent_requests_with_one_key_store_once(live):
    server, store = live
    h = _auth(store.add_annotator("a", consent=True))
    codes, barrier = [], threading.Barrier(12)

    def client():
        with httpx.Client() as c:
            barrier.wait()
            codes.append(
                c.post(
                    server.url + "/api/judgements",
                    headers=h,
                    json=_body(idempotency_key="double-click"),
                ).status_code
            )

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 11 + [201]
    assert store.counts()["judgements"] == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_add_annotator_and_export(tmp_path):
    """The commands as a user runs them: add-annotator, serve (a real process), export."""
    rlft = [sys.executable, "-m", "rlft.cli.main"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    db, items, pairs = tmp_path / "fb.db", tmp_path / "items.jsonl", tmp_path / "pairs.jsonl"
    items.write_text(
        json.dumps({"id": "q1", "prompt": "1+1=", "completion_a": "2", "completion_b": "3"}) + "\n"
    )
    added = subprocess.run([*rlft, "feedback", "add-annotator", "ann", "--db", str(db), "--consent"],
                           capture_output=True, text=True, env=env, check=True)  # fmt: skip
    token = added.stdout.strip()
    assert "shown only this once" in added.stderr and token.startswith("rlft_")
    port = _free_port()
    proc = subprocess.Popen([*rlft, "feedback", "serve", "--db", str(db), "--items", str(items), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/api/health")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        res = httpx.post(
            url + "/api/judgements", headers=_auth(token), json=_body(item_id="q1", choice="B")
        )
        assert res.status_code == 201
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    done = subprocess.run([*rlft, "feedback", "export", "--db", str(db), "--out", str(pairs)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(pairs).read_text()) == {
        "prompt": "1+1=",
        "chosen": "3",
        "rejected": "2",
        "item_id": "q1",
        "votes": [1, 0],
    }
    empty = subprocess.run([*rlft, "feedback", "export", "--db", str(tmp_path / "empty.db"), "--out", str(pairs), "--force"],
                           capture_output=True, text=True, env=env)  # fmt: skip
    assert empty.returncode == 2 and "no A/B judgements" in empty.stderr

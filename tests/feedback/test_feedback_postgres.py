"""The same store on a real PostgreSQL server: a throwaway cluster (initdb + pg_ctl) in a temp
folder on a free localhost port, run as the ``postgres`` user when the tests run as root."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

from rlft.feedback.exchange import preference_pairs
from rlft.feedback.live import (
    FeedbackResult,
    FeedbackRuleError,
    LiveFeedback,
    NotYourResponseError,
    new_response_id,
)
from rlft.feedback.store import AddedItems, Item, Judgement, Store


def _pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg", reason="psycopg is not installed (rlft[feedback])")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed; apt-get install postgresql"
        )
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        if (
            shutil.which("runuser") is None
            or subprocess.run(["id", "postgres"], capture_output=True).returncode
        ):
            pytest.skip("running as root without a 'postgres' user to start the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = tempfile.mkdtemp(prefix="rlft-pg-")
    data, port = os.path.join(root, "data"), _free_port()
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    run(pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_store(pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "DROP TABLE IF EXISTS response_feedback, responses, judgements, annotators, items"
        )
    store = Store(pg_url)
    store.add_items([Item("i1", "2+2=", "4", "5"), Item("i2", "hi", "hello", "bye")])
    yield store
    store.close()


def test_postgres_store_round_trip(pg_store):
    who = pg_store.annotator_for_token(pg_store.add_annotator("pg", consent=True))
    assert pg_store.add_items([Item("i1", "2+2=", "4", "5")]) == AddedItems(0, 1)
    assert pg_store.add_items([Item("i1", "2+2=", "4", "6")]) == AddedItems(0, 0, ("i1",))
    first = pg_store.submit(
        Judgement("pg-key-0001", "i1", who.id, "pair", "B", comment="it's 4? no")
    )
    again = pg_store.submit(Judgement("pg-key-0001", "i1", who.id, "pair", "B"))
    assert first.created and not again.created and again.id == first.id
    assert pg_store.submit(Judgement("pg-key-0001", "i1", who.id, "pair", "A")).conflict
    item, side = pg_store.next_item(who.id, "pair")
    assert (item.id, side) == ("i2", None)
    assert pg_store.next_item(who.id, "rating")[1] == "A"
    assert preference_pairs(pg_store) == [
        {"prompt": "2+2=", "chosen": "5", "rejected": "4", "item_id": "i1", "votes": [1, 0]}
    ]


def test_postgres_concurrent_same_key_stores_once(pg_store, pg_url):
    who = pg_store.annotator_for_token(pg_store.add_annotator("pg2", consent=True))
    results, barrier = [], threading.Barrier(8)
    shared = Store(pg_url)  # one Store, one connection per thread

    def worker():
        barrier.wait()
        results.append(shared.submit(Judgement("pg-same-key", "i2", who.id, "pair", "A")))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    assert sum(r.created for r in results) == 1
    assert pg_store.counts()["judgements"] == 1


def test_postgres_app_over_http(pg_store):
    httpx = pytest.importorskip("httpx")
    from rlft.feedback.server import BackgroundServer, create_app

    token = pg_store.add_annotator("web", consent=True)
    with BackgroundServer(create_app(pg_store)) as server:
        h = {"Authorization": f"Bearer {token}"}
        body = {"item_id": "i1", "choice": "tie", "idempotency_key": "http-pg-key"}
        assert httpx.post(server.url + "/api/judgements", headers=h, json=body).status_code == 201
        assert httpx.post(server.url + "/api/judgements", headers=h, json=body).status_code == 200
        assert (
            httpx.get(server.url + "/api/me", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
    assert pg_store.judgements()[0]["choice"] == "tie"


def test_postgres_forget_annotator(pg_store):
    alice_token = pg_store.add_annotator("alice", consent=True)
    alice = pg_store.annotator_for_token(alice_token)
    bob = pg_store.annotator_for_token(pg_store.add_annotator("bob", consent=True))
    pg_store.submit(Judgement("pg-forget-a", "i1", alice.id, "pair", "A", comment="alice's note"))
    pg_store.submit(Judgement("pg-forget-b", "i1", bob.id, "pair", "B"))
    assert pg_store.forget_annotator("alice") == 1
    assert pg_store.annotator_for_token(alice_token) is None
    assert [j["annotator"] for j in pg_store.judgements()] == ["bob"]
    assert preference_pairs(pg_store, "all") == [
        {"prompt": "2+2=", "chosen": "5", "rejected": "4", "item_id": "i1", "votes": [1, 0]}
    ]


def test_postgres_one_vote_per_annotator_and_item(pg_store, pg_url):
    """Fifty keys from one annotator on one item, from concurrent connections: one row, the
    rule held by the database's unique index (read committed lets both transactions insert)."""
    who = pg_store.annotator_for_token(pg_store.add_annotator("stuffer", consent=True))
    other = pg_store.annotator_for_token(pg_store.add_annotator("other", consent=True))
    pg_store.submit(Judgement("pg-other-key", "i1", other.id, "pair", "B"))
    shared, barrier = Store(pg_url), threading.Barrier(5)
    results = []

    def worker(w):
        barrier.wait()
        for n in range(10):
            results.append(shared.submit(Judgement(f"pg-stuff-{w}-{n}", "i1", who.id, "pair", "A")))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    assert len(results) == 50 and all(r.created for r in results)
    assert sum(not r.replaced for r in results) == 1
    assert pg_store.counts()["judgements"] == 2
    assert pg_store.submit(Judgement("pg-stuff-last", "i1", who.id, "pair", "B")).replaced
    assert preference_pairs(pg_store) == [
        {"prompt": "2+2=", "chosen": "5", "rejected": "4", "item_id": "i1", "votes": [2, 0]}
    ]


def test_postgres_live_feedback_and_forget(pg_store, pg_url):
    """Answers and votes on them (rlft.feedback.live) on PostgreSQL: the rules, the last vote
    winning, 8 concurrent identical votes storing one row, and forget removing the user's rows."""
    live = LiveFeedback(pg_store)
    alice, bob = (
        pg_store.annotator_for_token(pg_store.add_annotator(name, consent=True))
        for name in ("alice", "bob")
    )
    answers = {}
    for who in (alice, bob):
        for text in ("Hello!", "Go away."):
            answers[who.name, text] = new_response_id()
            stored = live.record_response(
                answers[who.name, text], who, "Mail me at a@b.org. Say hi.", text, 2, None
            )
            assert stored
    a, b = answers["alice", "Hello!"], answers["alice", "Go away."]
    assert live.response(a)["prompt"] == "Mail me at [EMAIL]. Say hi."
    first = live.rate(alice, a, "up")
    assert live.rate(alice, a, "down") == FeedbackResult(first.id, False, True, False)
    with pytest.raises(NotYourResponseError):
        live.rate(bob, a, "up")
    with pytest.raises(FeedbackRuleError, match="twice"):
        live.prefer(alice, (a, a), a)
    shared, barrier, results = LiveFeedback(Store(pg_url)), threading.Barrier(8), []

    def worker():
        barrier.wait()
        results.append(shared.prefer(alice, (b, a), a))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.store.close()
    assert sum(r.created for r in results) == 1 and sum(r.duplicate for r in results) == 7
    live.rate(bob, answers["bob", "Hello!"], "up")
    rating, pair, bobs = live.judgements()
    assert (rating.user, rating.desirable, rating.model_version) == ("alice", False, 2)
    assert (pair.completion, pair.rejected, pair.response_ids) == ("Hello!", "Go away.", (a, b))
    assert bobs.user == "bob" and live.judgements(after_id=pair.id) == [bobs]
    assert pg_store.forget_annotator("alice") == 2
    assert live.response(a) is None and live.count() == 1
    assert [j.user for j in live.judgements()] == ["bob"]
    assert live.response(answers["bob", "Go away."]) is not None

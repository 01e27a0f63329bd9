"""The feedback store on a real SQLite file: WAL, idempotency, concurrency, busy retries, export."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from rlft.errors import RlftError
from rlft.feedback.exchange import load_items, preference_pairs, ratings
from rlft.feedback.store import Judgement, Store, UnknownItemError


def _vote(store, annotator_id, item_id, choice, key, kind="pair", side=None):
    return store.submit(Judgement(key, item_id, annotator_id, kind, choice, side))


def test_sqlite_file_is_in_wal_mode(store, tmp_path):
    conn = sqlite3.connect(tmp_path / "feedback.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_tokens_are_stored_hashed(store, tmp_path):
    token = store.add_annotator("alice")
    assert token.startswith("rlft_") and len(token) > 40
    assert store.annotator_for_token(token).name == "alice"
    assert store.annotator_for_token(token + "x") is None
    assert token.encode() not in (tmp_path / "feedback.db").read_bytes()
    with pytest.raises(RlftError, match="already exists"):
        store.add_annotator("alice")


def test_consent_is_recorded(store):
    token = store.add_annotator("bob")
    who = store.annotator_for_token(token)
    assert not who.consented
    store.record_consent(who.id)
    assert store.annotator_for_token(token).consented


def test_a_repeated_key_stores_once_and_a_reused_key_conflicts(store):
    who = store.annotator_for_token(store.add_annotator("a", consent=True))
    first = _vote(store, who.id, "i1", "A", "key-00001")
    again = _vote(store, who.id, "i1", "A", "key-00001")
    other = _vote(store, who.id, "i1", "B", "key-00001")
    assert (first.created, again.created, again.id, again.conflict) == (
        True,
        False,
        first.id,
        False,
    )
    assert other.conflict and not other.created
    assert store.counts()["judgements"] == 1


def test_unknown_items_and_pairs_on_single_completions_are_refused(store):
    who = store.annotator_for_token(store.add_annotator("a", consent=True))
    with pytest.raises(UnknownItemError, match="No item"):
        _vote(store, who.id, "nope", "A", "key-00002")
    with pytest.raises(UnknownItemError, match="only completion A"):
        _vote(store, who.id, "solo", "A", "key-00003")
    assert _vote(store, who.id, "solo", "up", "key-00004", kind="rating", side="A").created


def test_concurrent_submissions_with_one_key_store_once(store, tmp_path):
    who = store.annotator_for_token(store.add_annotator("a", consent=True))
    stores = [Store(tmp_path / "feedback.db") for _ in range(8)]  # separate connections
    results, barrier = [], threading.Barrier(len(stores))

    def worker(s):
        barrier.wait()
        results.append(_vote(s, who.id, "i2", "B", "same-key-123"))

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.created for r in results) == 1
    assert len({r.id for r in results}) == 1
    assert store.counts()["judgements"] == 1


def test_concurrent_writers_lose_nothing(tmp_path, store):
    who = store.annotator_for_token(store.add_annotator("a", consent=True))

    def worker(w):
        s = Store(tmp_path / "feedback.db")
        for n in range(25):
            _vote(s, who.id, "i3", "A", f"w{w}-n{n}-key")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts()["judgements"] == 200


def test_a_busy_database_is_retried_not_dropped(tmp_path, store):
    who = store.annotator_for_token(store.add_annotator("a", consent=True))
    impatient = Store(tmp_path / "feedback.db", busy_timeout_s=0.01, max_retries=12)
    blocker = sqlite3.connect(
        tmp_path / "feedback.db", isolation_level=None, check_same_thread=False
    )
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    releaser = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    releaser.start()
    result = _vote(impatient, who.id, "i1", "tie", "busy-key-1")
    releaser.join()
    assert result.created
    assert store.counts()["judgements"] == 1


def test_export_majority_and_all(store):
    ids = [store.annotator_for_token(store.add_annotator(n, consent=True)).id for n in "abc"]
    for who, choice in zip(ids, "ABA", strict=True):
        _vote(store, who, "i1", choice, f"i1-{who}-key")
    _vote(store, ids[0], "i2", "A", "i2-a-key-1")
    _vote(store, ids[1], "i2", "B", "i2-b-key-1")  # 1:1 -> no majority
    _vote(store, ids[0], "i3", "tie", "i3-a-key-1")  # ties make no pairs
    _vote(store, ids[0], "solo", "down", "solo-key-1", kind="rating", side="A")
    majority = preference_pairs(store, "majority")
    assert majority == [
        {"prompt": "2+2=", "chosen": "4", "rejected": "5", "item_id": "i1", "votes": [2, 1]}
    ]
    everything = preference_pairs(store, "all")
    assert [(p["item_id"], p["chosen"]) for p in everything] == [
        ("i1", "4"), ("i1", "5"), ("i1", "4"), ("i2", "Hello!"), ("i2", "Go away."),
    ]  # fmt: skip
    assert ratings(store)[0]["rating"] == -1


def test_items_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"prompt": "p", "completion_a": "a", "completion_b": "b"}\n\n{"prompt": "p"}\n'
    )
    with pytest.raises(
        RlftError, match=r"items.jsonl:3: 'completion_a' must be a non-empty string"
    ):
        load_items(path)
    path.write_text('{"prompt": "p", "completions": ["a", "b"]}\nnot json\n')
    with pytest.raises(RlftError, match=r"items.jsonl:2: not valid JSON"):
        load_items(path)
    path.write_text(
        '{"prompt": "p", "completions": ["a", "b"]}\n{"id": 7, "prompt": "q", "completion_a": "x"}\n'
    )
    first, second = load_items(path)
    assert (first.completion_b, second.id, second.completion_b) == ("b", "7", None)
    assert first.id == load_items(path)[0].id  # content hash: stable across loads


PII_EMAIL, PII_PHONE = "jane.doe@example.org", "+44 20 7946 0958"


@pytest.mark.parametrize("scrub", [True, False])
def test_items_and_comments_are_scrubbed_before_they_reach_the_database(tmp_path, scrub):
    store = Store(tmp_path / "pii.db", scrub_pii=scrub)
    items = load_items(_items_file(tmp_path, [{"prompt": f"Write to {PII_EMAIL} about the bill.",
                                               "completion_a": "Dear Jane,", "completion_b": f"Call {PII_PHONE}."}]))
    assert store.add_items(items) == 1
    who = store.annotator_for_token(store.add_annotator("ann", consent=True))
    (item, _), = [store.next_item(who.id, "pair")]
    store.submit(Judgement("k1", item.id, who.id, "pair", "A", comment=f"my number is {PII_PHONE}"))
    store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("pii.db*"))
    exported = str(preference_pairs(Store(tmp_path / "pii.db")))
    leaked = [v for v in (PII_EMAIL, PII_PHONE) if v.encode() in stored or v in exported]
    if scrub:
        assert leaked == [] and "[EMAIL]" in exported and "[PHONE]" in exported
        assert store.pii_removed == {"EMAIL": 1, "PHONE": 2}
        assert item.id not in items[0].id  # the content-hash id is recomputed from scrubbed text
    else:  # the control: the check above can fail
        assert leaked == [PII_EMAIL, PII_PHONE]


def _items_file(tmp_path, records):
    import json

    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path

"""The feedback store on a real SQLite file: WAL, idempotency, concurrency, busy retries, export."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from rlft.errors import RlftError
from rlft.feedback.exchange import load_items, preference_pairs, ratings
from rlft.feedback.store import AddedItems, Item, Judgement, Store, UnknownItemError


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
    store.add_items(Item(f"c{n}", f"q{n}", "a", "b") for n in range(25))
    ids = [
        store.annotator_for_token(store.add_annotator(f"w{w}", consent=True)).id for w in range(8)
    ]

    def worker(w):
        s = Store(tmp_path / "feedback.db")
        for n in range(25):
            _vote(s, ids[w], f"c{n}", "A", f"w{w}-n{n}-key")

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
    items = load_items(
        _items_file(
            tmp_path,
            [
                {
                    "prompt": f"Write to {PII_EMAIL} about the bill.",
                    "completion_a": "Dear Jane,",
                    "completion_b": f"Call {PII_PHONE}.",
                }
            ],
        )
    )
    assert store.add_items(items).added == 1
    who = store.annotator_for_token(store.add_annotator("ann", consent=True))
    ((item, _),) = [store.next_item(who.id, "pair")]
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


def test_one_vote_per_annotator_item_and_kind(store):
    """Fifty keys from one annotator on one item store one row, the latest choice; the export's
    majority counts that annotator once."""
    alice, bob = (
        store.annotator_for_token(store.add_annotator(n, consent=True)).id for n in ("alice", "bob")
    )
    _vote(store, bob, "i1", "B", "bob-key-1")
    results = [_vote(store, alice, "i1", "A", f"stuffing-key-{n:02d}") for n in range(50)]
    assert (
        all(r.created for r in results) and [r.replaced for r in results] == [False] + [True] * 49
    )
    last = _vote(store, alice, "i1", "tie", "alice-changed-her-mind")
    assert last.replaced and last.id == results[0].id
    assert (
        _vote(store, alice, "i1", "tie", "alice-changed-her-mind").created is False
    )  # still a repeat
    assert [(j["annotator"], j["choice"]) for j in store.judgements()] == [
        ("bob", "B"),
        ("alice", "tie"),
    ]
    assert preference_pairs(store) == [
        {"prompt": "2+2=", "chosen": "5", "rejected": "4", "item_id": "i1", "votes": [1, 0]}
    ]
    # Ratings: one vote per side; a pair and a rating of the same item are different questions.
    for side in "AB":
        _vote(store, alice, "i1", "up", f"rate-{side}-1", kind="rating", side=side)
        _vote(store, alice, "i1", "down", f"rate-{side}-2", kind="rating", side=side)
    assert [(r["completion"], r["rating"]) for r in ratings(store)] == [("4", -1), ("5", -1)]
    assert store.counts()["judgements"] == 4


def test_a_database_from_before_the_one_vote_rule_keeps_each_latest_vote(tmp_path):
    path = tmp_path / "old.db"
    store = Store(path)
    store.add_items([Item("i1", "2+2=", "4", "5")])
    who = store.annotator_for_token(store.add_annotator("a", consent=True)).id
    store.close()
    conn = sqlite3.connect(path)  # as an older rlft left it: no one-vote index, repeated votes
    conn.execute("DROP INDEX judgements_one_vote")
    for n, choice in enumerate("AAB"):
        conn.execute(
            "INSERT INTO judgements (idempotency_key, item_id, annotator_id, kind, choice, created_at) "
            "VALUES (?, 'i1', ?, 'pair', ?, 'then')", (f"old-key-{n}", who, choice),
        )  # fmt: skip
    conn.commit()
    conn.close()
    reopened = Store(path)
    assert [(j["idempotency_key"], j["choice"]) for j in reopened.judgements()] == [
        ("old-key-2", "B")
    ]
    assert _vote(reopened, who, "i1", "A", "new-key-1").replaced


def test_item_ids_are_checked_when_loaded_with_the_apis_rule(tmp_path):
    path = tmp_path / "items.jsonl"
    ok, long = "x" * 128, "x" * 129
    path.write_text(f'{{"id": "{ok}", "prompt": "p", "completion_a": "a"}}\n'
                    f'{{"id": "{long}", "prompt": "p", "completion_a": "a"}}\n')  # fmt: skip
    with pytest.raises(
        RlftError, match=r"items.jsonl:2: 'id' must be at most 128 characters, got 129"
    ):
        load_items(path)
    for bad, why in [(" q1", "surrounding whitespace|start or end"), ("", "empty"), ("a\\nb", "control"),
                     ("\\ud800", "lone surrogate"), ("[1]", "must be a string")]:  # fmt: skip
        value = bad if bad == "[1]" else f'"{bad}"'
        path.write_text(f'{{"id": {value}, "prompt": "p", "completion_a": "a"}}\n')
        with pytest.raises(RlftError, match=why):
            load_items(path)
    with pytest.raises(RlftError, match="must be at most 128"):  # the library path too
        Store(tmp_path / "s.db").add_items([Item(long, "p", "a")])


def test_an_items_file_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    from rlft.cli.main import main

    path = tmp_path / "items.jsonl"
    path.write_bytes(
        b'{"prompt": "ok", "completion_a": "a"}\n{"prompt": "caf\xe9", "completion_a": "a"}\n'
    )
    code = main(["feedback", "serve", "--db", str(tmp_path / "fb.db"), "--items", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "items.jsonl:2: not UTF-8 text (byte 0xe9 at column 16)" in err
    path.write_text('{"prompt": "\\udc80", "completion_a": "a"}\n')  # a JSON escape, not bytes
    with pytest.raises(RlftError, match="items.jsonl:1: 'prompt' contains a lone surrogate"):
        load_items(path)
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "p", "completion_a": "a"}\n')  # a BOM is UTF-8 too
    assert load_items(path)[0].prompt == "p"


def test_item_ids_with_personal_data_are_refused_unless_pii_is_kept(tmp_path):
    items = [Item("ticket-jane.doe@example.org", "p", "a"), Item("q2", "p", "b")]
    with pytest.raises(
        RlftError, match=r"1 item\(s\) refused: item id contains personal data \(EMAIL"
    ):
        Store(tmp_path / "scrubbed.db").add_items(items)
    assert Store(tmp_path / "scrubbed.db").counts()["items"] == 0  # nothing half-loaded
    assert Store(tmp_path / "kept.db", scrub_pii=False).add_items(items).added == 2


def test_empty_annotator_names_are_refused(store, tmp_path, capsys):
    from rlft.cli.main import main

    for name in ("", "   ", " alice", "x" * 129):
        with pytest.raises(RlftError, match="annotator name"):
            store.add_annotator(name)
    assert main(["feedback", "add-annotator", "", "--db", str(tmp_path / "feedback.db")]) == 2
    assert "an annotator name must not be empty" in capsys.readouterr().err
    assert store.counts()["annotators"] == 0


def test_a_reused_id_with_different_content_is_named(tmp_path, capsys, monkeypatch):
    from rlft.cli.main import main

    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "q1", "prompt": "p", "completion_a": "a"}\n{"id": "q1", "prompt": "p", "completion_a": "a"}\n'
                    '{"id": "q1", "prompt": "p", "completion_a": "CHANGED"}\n')  # fmt: skip
    with pytest.raises(RlftError, match=r"items.jsonl:3: id 'q1' is also used at .*items.jsonl:1"):
        load_items(path)
    path.write_text(
        '{"id": "q1", "prompt": "p", "completion_a": "a"}\n{"id": "q1", "prompt": "p", "completion_a": "a"}\n'
    )
    assert len(load_items(path)) == 1  # an exact repeat is loaded once
    db = tmp_path / "fb.db"
    Store(db).add_items([Item("q1", "p", "old"), Item("q2", "p", "b")])
    assert Store(db).add_items(
        [Item("q1", "p", "a"), Item("q2", "p", "b"), Item("q3", "p", "c")]
    ) == AddedItems(added=1, unchanged=1, conflicting=("q1",))
    monkeypatch.setattr(
        "rlft.feedback.server.serve", lambda *args: None
    )  # load, report, don't block
    path.write_text(
        '{"id": "q1", "prompt": "p", "completion_a": "newer"}\n{"id": "q4", "prompt": "p", "completion_a": "d"}\n'
    )
    assert main(["feedback", "serve", "--db", str(db), "--items", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "loaded 1 new items of 2" in out
    assert "warning: 1 items not loaded" in err and "'q1'" in err

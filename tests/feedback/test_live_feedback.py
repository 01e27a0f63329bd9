"""Feedback on live answers (rlft.feedback.live) on a real SQLite file: consent, ownership, the
pair rules, one vote per question (duplicates stored once, the last vote wins), concurrency,
PII scrubbing and forgetting a user."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest

from rlft.errors import RlftError
from rlft.feedback.live import (
    ConsentRequiredError,
    FeedbackResult,
    FeedbackRuleError,
    LiveFeedback,
    LiveJudgement,
    NotYourResponseError,
    UnknownResponseError,
    new_response_id,
)
from rlft.feedback.store import Annotator, Item, Judgement, Store

EMAIL = "jane.doe@example.com"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "live.db"


@pytest.fixture
def feedback(db):
    store = Store(db)
    yield LiveFeedback(store)
    store.close()


def _user(feedback: LiveFeedback, name: str, consent: bool = True) -> Annotator:
    store = feedback.store
    return store.annotator_for_token(store.add_annotator(name, consent=consent))


def _answer(feedback, who, prompt="2+2=", completion="4", version=1, adapter=None) -> str:
    response_id = new_response_id()
    assert feedback.record_response(response_id, who, prompt, completion, version, adapter)
    return response_id


def _rows(db, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_response_ids_are_fresh_uuids():
    ids = {new_response_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"resp-[0-9a-f]{32}", i) for i in ids)


def test_nothing_is_stored_before_consent(feedback, db):
    who = _user(feedback, "newcomer", consent=False)
    response_id = new_response_id()
    assert not feedback.record_response(response_id, who, f"I am {EMAIL}", "hi", 1, None)
    assert feedback.response(response_id) is None
    assert _rows(db, "SELECT COUNT(*) FROM responses") == [(0,)]
    assert not feedback.store.pii_removed  # text that is not stored is not scrubbed either
    with pytest.raises(ConsentRequiredError, match="has not consented"):
        feedback.rate(who, response_id, "up")
    feedback.store.record_consent(who.id)
    assert feedback.record_response(response_id, who, "hi", "hello", 1, None)
    assert feedback.rate(who, response_id, "up").created
    assert feedback.count() == 1


def test_a_rating_becomes_a_desirable_or_undesirable_example(feedback):
    alice = _user(feedback, "alice")
    response_id = _answer(
        feedback, alice, "Capital of France?", "Paris", version=3, adapter="alice"
    )
    stored = feedback.response(response_id)
    assert (stored["annotator"], stored["model_version"], stored["adapter"]) == (
        "alice",
        3,
        "alice",
    )
    result = feedback.rate(alice, response_id, "down")
    assert result == FeedbackResult(result.id, created=True, replaced=False, duplicate=False)
    [judgement] = feedback.judgements()
    assert judgement == LiveJudgement(
        id=result.id,
        user="alice",
        kind="rating",
        prompt="Capital of France?",
        completion="Paris",
        rejected=None,
        desirable=False,
        model_version=3,
        response_ids=(response_id,),
        created_at=judgement.created_at,
        personal=True,  # answered by alice's adapter
    )
    assert feedback.judgements(after_id=result.id) == []


def test_unknown_or_malformed_response_ids_are_refused(feedback):
    alice = _user(feedback, "alice")
    with pytest.raises(UnknownResponseError, match="No response with id 'resp-nope'"):
        feedback.rate(alice, "resp-nope", "up")
    with pytest.raises(UnknownResponseError, match="resp-nope"):
        feedback.prefer(alice, (_answer(feedback, alice), "resp-nope"), "resp-nope")
    for bad in ("", "resp-\ud800", "x" * 200, 17):
        with pytest.raises(FeedbackRuleError, match="a response id"):
            feedback.rate(alice, bad, "up")
    with pytest.raises(FeedbackRuleError, match="'up' or 'down'"):
        feedback.rate(alice, _answer(feedback, alice), "meh")
    assert feedback.count() == 0


def test_feedback_on_another_users_answer_is_refused(feedback):
    alice, bob = _user(feedback, "alice"), _user(feedback, "bob")
    alices, bobs = _answer(feedback, alice), _answer(feedback, bob)
    with pytest.raises(NotYourResponseError, match="another user"):
        feedback.rate(bob, alices, "down")
    with pytest.raises(NotYourResponseError, match="another user"):
        feedback.prefer(bob, (bobs, alices), bobs)
    assert feedback.count() == 0


def test_a_pair_is_two_different_answers_to_one_prompt_with_one_preferred(feedback):
    alice = _user(feedback, "alice")
    a, b = _answer(feedback, alice, "Say hi.", "Hello!"), _answer(feedback, alice, "Say hi.", "Hi")
    other_prompt = _answer(feedback, alice, "Say bye.", "Bye")
    with pytest.raises(FeedbackRuleError, match=f"two different answers, got {a!r} twice"):
        feedback.prefer(alice, (a, a), a)
    with pytest.raises(FeedbackRuleError, match="preferred must be one of the two"):
        feedback.prefer(alice, (a, b), other_prompt)
    with pytest.raises(FeedbackRuleError, match="different prompts"):
        feedback.prefer(alice, (a, other_prompt), a)
    with pytest.raises(FeedbackRuleError, match="exactly two response ids"):
        feedback.prefer(alice, (a, b, other_prompt), a)  # type: ignore[arg-type]
    assert feedback.count() == 0


def test_a_pair_becomes_chosen_and_rejected(feedback):
    alice = _user(feedback, "alice")
    a = _answer(feedback, alice, "Say hi.", "Hello!", version=1)
    b = _answer(feedback, alice, "Say hi.", "Go away.", version=2)
    result = feedback.prefer(alice, [b, a], a)  # a list, as it arrives from JSON
    [judgement] = feedback.judgements()
    assert (judgement.id, judgement.kind, judgement.prompt) == (result.id, "pair", "Say hi.")
    assert (judgement.completion, judgement.rejected) == ("Hello!", "Go away.")
    assert (judgement.response_ids, judgement.model_version, judgement.desirable) == (
        (a, b),
        1,
        None,
    )


def test_the_same_vote_again_is_stored_once_and_a_different_one_replaces_it(feedback, db):
    alice = _user(feedback, "alice")
    a = _answer(feedback, alice, "Say hi.", "Hello!", version=1)
    b = _answer(feedback, alice, "Say hi.", "Go away.", version=2)
    first = feedback.rate(alice, a, "up")
    again = feedback.rate(alice, a, "up")
    changed = feedback.rate(alice, a, "down")
    assert again == FeedbackResult(first.id, created=False, replaced=False, duplicate=True)
    assert changed == FeedbackResult(first.id, created=False, replaced=True, duplicate=False)
    pair = feedback.prefer(alice, (a, b), a)
    assert feedback.prefer(alice, (b, a), a).duplicate  # either order is the same question
    flipped = feedback.prefer(alice, (b, a), b)
    assert flipped == FeedbackResult(pair.id, created=False, replaced=True, duplicate=False)
    # A rating and a pair on the same answer are separate questions: two rows, the last votes.
    assert _rows(db, "SELECT id, kind, choice FROM response_feedback ORDER BY id") == [
        (first.id, "rating", "down"),
        (pair.id, "pair", b),
    ]
    rating, preference = feedback.judgements()
    assert rating.desirable is False
    assert (preference.completion, preference.rejected, preference.model_version) == (
        "Go away.",
        "Hello!",
        2,
    )


def test_concurrent_identical_votes_store_one_row(feedback, db):
    alice = _user(feedback, "alice")
    response_id = _answer(feedback, alice)
    barrier, results = threading.Barrier(20), []

    def vote() -> None:
        barrier.wait()
        results.append(feedback.rate(alice, response_id, "up"))

    threads = [threading.Thread(target=vote) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and len({r.id for r in results}) == 1
    assert sum(r.created for r in results) == 1 and sum(r.duplicate for r in results) == 19
    assert _rows(db, "SELECT COUNT(*), MIN(choice) FROM response_feedback") == [(1, "up")]


def test_personal_data_is_scrubbed_before_it_is_written(feedback, db):
    alice = _user(feedback, "alice")
    response_id = _answer(feedback, alice, f"I am {EMAIL}. What is 2+2?", "2+2=4", 1)
    arithmetic = _answer(feedback, alice, "99999*99999=", "99999*99999=9999800001", 1)
    assert feedback.response(response_id)["prompt"] == "I am [EMAIL]. What is 2+2?"
    assert feedback.response(response_id)["completion"] == "2+2=4"
    assert feedback.response(arithmetic)["completion"] == "99999*99999=9999800001"
    assert feedback.store.pii_removed == {"EMAIL": 1}
    feedback.rate(alice, response_id, "up")
    assert feedback.judgements()[0].prompt == "I am [EMAIL]. What is 2+2?"
    feedback.store.close()
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    assert EMAIL.encode() not in raw and b"jane.doe" not in raw
    assert b"2+2=4" in raw and b"9999800001" in raw


def test_a_store_without_scrubbing_keeps_text_as_given(tmp_path):
    store = Store(tmp_path / "raw.db", scrub_pii=False)
    feedback = LiveFeedback(store)
    alice = _user(feedback, "alice")
    response_id = _answer(feedback, alice, f"I am {EMAIL}", "ok")
    assert feedback.response(response_id)["prompt"] == f"I am {EMAIL}"
    store.close()


def test_recording_an_answer_twice_is_a_no_op_and_other_content_is_refused(feedback, db):
    alice = _user(feedback, "alice")
    response_id = _answer(feedback, alice, "2+2=", "4")
    assert feedback.record_response(response_id, alice, "2+2=", "4", 1, None)
    assert _rows(db, "SELECT COUNT(*) FROM responses") == [(1,)]
    with pytest.raises(RlftError, match="already stored with other content"):
        feedback.record_response(response_id, alice, "2+2=", "5", 1, None)
    with pytest.raises(RlftError, match="model_version must be an integer >= 0"):
        feedback.record_response(new_response_id(), alice, "2+2=", "4", -1, None)
    with pytest.raises(RlftError, match="completion must be a string"):
        feedback.record_response(new_response_id(), alice, "2+2=", None, 1, None)  # type: ignore[arg-type]


def test_the_database_refuses_rows_that_break_the_rules(feedback, db):
    alice = _user(feedback, "alice")
    a, b = _answer(feedback, alice), _answer(feedback, alice)
    insert = (
        "INSERT INTO response_feedback (annotator_id, kind, response_id, other_response_id, "
        "choice, created_at) VALUES (?, ?, ?, ?, ?, 'now')"
    )
    for row in (
        ("rating", a, None, "maybe"),
        ("rating", a, b, "up"),
        ("pair", a, None, a),
        ("pair", a, a, a),
        ("pair", a, b, "up"),
        ("pair", a, "resp-missing", a),  # foreign key
    ):
        with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(insert, (alice.id, *row))


def test_forget_deletes_every_row_of_the_user_and_only_theirs(feedback, db):
    feedback.store.add_items([Item("i1", "2+2=", "4", "5")])
    alice, bob = _user(feedback, "alice"), _user(feedback, "bob")
    secret = "alice-live-secret-5521"
    for who in (alice, bob):
        a = _answer(feedback, who, f"{who.name}: {secret if who is alice else 'hi'}", "one")
        b = _answer(feedback, who, f"{who.name}: {secret if who is alice else 'hi'}", "two")
        feedback.rate(who, a, "up")
        feedback.prefer(who, (a, b), b)
        feedback.store.submit(Judgement(f"key-{who.name}", "i1", who.id, "pair", "A"))
    bobs_before = [
        _rows(db, f"SELECT * FROM {table} WHERE annotator_id = ? ORDER BY id", bob.id)
        for table in ("responses", "response_feedback", "judgements")
    ]
    assert feedback.store.forget_annotator("alice") == 3  # one judgement and two live votes
    for table in ("responses", "response_feedback", "judgements"):
        assert _rows(db, f"SELECT COUNT(*) FROM {table} WHERE annotator_id = ?", alice.id) == [(0,)]
    assert _rows(db, "SELECT name FROM annotators") == [("bob",)]
    assert bobs_before == [
        _rows(db, f"SELECT * FROM {table} WHERE annotator_id = ? ORDER BY id", bob.id)
        for table in ("responses", "response_feedback", "judgements")
    ]
    assert {j.user for j in feedback.judgements()} == {"bob"} and feedback.count() == 2
    with pytest.raises(ConsentRequiredError, match="not registered"):
        feedback.rate(alice, bobs_before[0][0][0], "up")
    feedback.store.close()
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    assert secret.encode() not in raw


def test_a_database_from_before_live_feedback_gains_the_tables(db):
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.executescript("DROP TABLE response_feedback; DROP TABLE responses;")
    store = Store(db)
    feedback = LiveFeedback(store)
    alice = _user(feedback, "alice")
    assert feedback.rate(alice, _answer(feedback, alice), "up").created
    store.close()


def test_a_vote_says_whether_its_answer_came_from_a_personal_adapter(feedback):
    ann = _user(feedback, "ann")
    shared = _answer(feedback, ann, completion="4")
    personal = _answer(feedback, ann, completion="four", adapter="ann")
    feedback.rate(ann, shared, "up")
    feedback.rate(ann, personal, "down")
    feedback.prefer(ann, (shared, personal), shared)
    assert [(j.kind, j.personal) for j in feedback.judgements()] == [
        ("rating", False), ("rating", True), ("pair", True)
    ]

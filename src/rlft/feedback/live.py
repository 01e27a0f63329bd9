"""Feedback on the served model's live answers: thumbs up/down on one answer, or the better of
two answers to the same prompt, kept in the same store (SQLite or PostgreSQL) as the annotation
app's judgements.

The serving app records every answer it gives (:meth:`LiveFeedback.record_response`) under the
id it sends back, and the user votes on that id. The rules, each enforced inside one write
transaction (retried whole when the database is busy):

- nothing of a user is stored before they consent: their answers are not recorded and their
  votes are refused (:class:`ConsentRequiredError`);
- prompts and completions pass through the store's PII scrubber before they are written;
- a user votes only on answers given to them (:class:`NotYourResponseError`); an unknown id is
  :class:`UnknownResponseError`; a pair must be two different answers to the same prompt, with
  the preferred one among them (:class:`FeedbackRuleError`);
- one vote per user and question: the same vote again is a duplicate (stored once), a different
  one replaces the earlier vote in its row (the last one wins). A unique index holds the rule, so
  concurrent identical submissions store one row on both databases.

The votes become training data through :meth:`LiveFeedback.judgements`: ratings are unpaired
desirable/undesirable examples (KTO, Ethayarajh et al. 2024), pairs are chosen/rejected
preferences (DPO, Rafailov et al. 2023).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from rlft.errors import RlftError
from rlft.feedback.database import Cursor, Retry
from rlft.feedback.records import Annotator, label_problem, text_problem
from rlft.feedback.store import Store

__all__ = [
    "ConsentRequiredError",
    "FeedbackResult",
    "FeedbackRuleError",
    "LiveFeedback",
    "LiveJudgement",
    "NotYourResponseError",
    "UnknownResponseError",
    "new_response_id",
]

RATINGS = ("up", "down")


class UnknownResponseError(RlftError):
    """Feedback names a response id the store does not hold (HTTP 404)."""


class NotYourResponseError(RlftError):
    """Feedback on an answer that was given to another user (HTTP 403)."""


class FeedbackRuleError(RlftError):
    """Feedback that breaks a rule: a bad rating, a pair of different prompts, the same answer
    twice, a preferred id that is not one of the two (HTTP 422)."""


class ConsentRequiredError(RlftError):
    """The user has not consented to their feedback being stored (HTTP 403)."""


def new_response_id() -> str:
    """A fresh response id: ``"resp-"`` and 32 hex digits (a random UUID)."""
    return "resp-" + uuid.uuid4().hex


@dataclass(frozen=True)
class LiveJudgement:
    """One stored vote, ready for training."""

    id: int  # row id; a changed vote keeps its row
    user: str  # annotator name
    kind: Literal["rating", "pair"]
    prompt: str  # as stored (scrubbed)
    completion: str  # rating: the rated answer; pair: the preferred answer
    rejected: str | None  # pair: the other answer; rating: None
    desirable: bool | None  # rating: up -> True, down -> False; pair: None
    model_version: int  # the version that produced ``completion``
    response_ids: tuple[str, ...]  # (rated,) or (preferred, other)
    created_at: str  # when the vote now standing was cast
    personal: bool = False  # an answer came from the user's personal adapter, not the shared model


@dataclass(frozen=True)
class FeedbackResult:
    """``created``: a new row. ``replaced``: this user's earlier, different vote on the same
    answer(s) was replaced (the last one wins). ``duplicate``: the same vote again; nothing
    changed. Exactly one of the three is true; ``id`` is the vote's row either way."""

    id: int
    created: bool
    replaced: bool
    duplicate: bool


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _check_id(response_id: object) -> str:
    problem = label_problem(response_id, "a response id")
    if problem is not None:
        raise FeedbackRuleError(
            f"{problem}; send the id of an answer you received (the 'id' or 'response_id' field)."
        )
    assert isinstance(response_id, str)
    return response_id


def _require_consent(cur: Cursor, annotator: Annotator) -> None:
    cur.execute("SELECT consent_at FROM annotators WHERE id = ?", (annotator.id,))
    row = cur.fetchone()
    if row is None:
        raise ConsentRequiredError(
            f"User {annotator.name!r} is not registered (forgotten?); register and consent again."
        )
    if row[0] is None:
        raise ConsentRequiredError(
            f"User {annotator.name!r} has not consented to feedback being stored; "
            "consent first (POST /v1/consent), then send the feedback again."
        )


def _own_response(cur: Cursor, annotator: Annotator, response_id: str) -> str:
    """The prompt of ``response_id``, checked to exist and to belong to ``annotator``."""
    cur.execute("SELECT annotator_id, prompt FROM responses WHERE id = ?", (response_id,))
    row = cur.fetchone()
    if row is None:
        raise UnknownResponseError(
            f"No response with id {response_id!r}; feedback needs the id of an answer the "
            "server gave you (answers are kept only after consent)."
        )
    if int(row[0]) != annotator.id:
        raise NotYourResponseError(
            f"Response {response_id!r} was given to another user; you can only give feedback "
            "on your own answers."
        )
    return str(row[1])


def _vote(
    cur: Cursor, annotator_id: int, kind: str, ids: tuple[str, str | None], choice: str
) -> FeedbackResult:
    """Insert the vote, or find this user's vote on the same question and keep or replace it."""
    now = _now()
    # No conflict target: the one-vote index is an expression index, which both databases match.
    cur.execute(
        "INSERT INTO response_feedback (annotator_id, kind, response_id, other_response_id, "
        "choice, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
        (annotator_id, kind, ids[0], ids[1], choice, now),
    )
    row = cur.fetchone()
    if row is not None:
        return FeedbackResult(int(row[0]), created=True, replaced=False, duplicate=False)
    cur.execute(
        "SELECT id, choice FROM response_feedback WHERE annotator_id = ? AND kind = ? "
        "AND response_id = ? AND COALESCE(other_response_id, '') = ?",
        (annotator_id, kind, ids[0], ids[1] or ""),
    )
    earlier = cur.fetchone()
    if earlier is None:
        raise Retry  # the earlier vote was deleted between the two statements
    if earlier[1] == choice:
        return FeedbackResult(int(earlier[0]), created=False, replaced=False, duplicate=True)
    cur.execute(
        "UPDATE response_feedback SET choice = ?, created_at = ? WHERE id = ?",
        (choice, now, earlier[0]),
    )
    return FeedbackResult(int(earlier[0]), created=False, replaced=True, duplicate=False)


class LiveFeedback:
    """Answers and the votes on them, in ``store``'s database; safe to share between threads.

    Text is scrubbed with the store's own scrubber, so a store opened with ``scrub_pii=False``
    keeps it as given, and the store's ``pii_removed`` counts what was replaced.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._db = store._db

    def record_response(
        self,
        response_id: str,
        annotator: Annotator,
        prompt: str,
        completion: str,
        model_version: int,
        adapter: str | None,
    ) -> bool:
        """Keep an answer so its user can vote on it; returns whether it was stored.

        Only answers to users who consented are stored (``False`` otherwise, and nothing is
        written). Recording the same id again with the same content is a no-op that returns
        ``True``; the same id with other content is an error.
        """
        response_id = _check_id(response_id)
        texts = {"prompt": prompt, "completion": completion, "adapter": adapter or ""}
        for name, text in texts.items():
            if not isinstance(text, str):
                raise RlftError(
                    f"The response's {name} must be a string, got {type(text).__name__}."
                )
            problem = text_problem(text)
            if problem is not None:
                raise RlftError(f"The response's {name} {problem}.")
        if type(model_version) is not int or model_version < 0:
            raise RlftError(f"model_version must be an integer >= 0, got {model_version!r}.")
        if not self._consented(annotator.id):
            return False  # checked before scrubbing, so pii_removed counts only stored text
        row = (
            response_id,
            annotator.id,
            model_version,
            adapter,
            self.store._scrub(prompt),
            self.store._scrub(completion),
        )

        def op(cur: Cursor) -> bool:
            if not self._consented_in(cur, annotator.id):
                return False  # forgotten since the first check
            cur.execute(
                "INSERT INTO responses (id, annotator_id, model_version, adapter, prompt, "
                "completion, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                (*row, _now()),
            )
            if cur.fetchone() is not None:
                return True
            cur.execute(
                "SELECT id, annotator_id, model_version, adapter, prompt, completion "
                "FROM responses WHERE id = ?",
                (response_id,),
            )
            stored = cur.fetchone()
            if stored is None:
                raise Retry
            if (stored[0], int(stored[1]), int(stored[2]), *stored[3:]) != row:
                raise RlftError(
                    f"Response id {response_id!r} is already stored with other content; "
                    "give each answer a new id (rlft.feedback.live.new_response_id())."
                )
            return True

        return self._db.run(op, write=True)

    def rate(
        self, annotator: Annotator, response_id: str, rating: Literal["up", "down"]
    ) -> FeedbackResult:
        """Thumbs up or down on one of the user's answers."""
        response_id = _check_id(response_id)
        if rating not in RATINGS:
            raise FeedbackRuleError(f"rating must be 'up' or 'down', got {rating!r}.")

        def op(cur: Cursor) -> FeedbackResult:
            _require_consent(cur, annotator)
            _own_response(cur, annotator, response_id)
            return _vote(cur, annotator.id, "rating", (response_id, None), rating)

        return self._db.run(op, write=True)

    def prefer(
        self, annotator: Annotator, response_ids: tuple[str, str], preferred: str
    ) -> FeedbackResult:
        """The better of two of the user's answers to the same prompt."""
        pair = _check_pair(response_ids, preferred)
        first, second = sorted(pair)

        def op(cur: Cursor) -> FeedbackResult:
            _require_consent(cur, annotator)
            prompts = [_own_response(cur, annotator, i) for i in pair]
            if prompts[0] != prompts[1]:
                raise FeedbackRuleError(
                    f"Responses {pair[0]!r} and {pair[1]!r} answer different prompts; a pair "
                    "must be two answers to the same prompt (ask for another answer to compare)."
                )
            return _vote(cur, annotator.id, "pair", (first, second), preferred)

        return self._db.run(op, write=True)

    def judgements(self, after_id: int = 0) -> list[LiveJudgement]:
        """Every vote with a row id above ``after_id``, oldest first, joined with its answers."""

        def op(cur: Cursor) -> list[Any]:
            cur.execute(
                "SELECT f.id, a.name, f.kind, f.choice, f.response_id, f.other_response_id, "
                "f.created_at, r.prompt, r.completion, r.model_version, o.completion, "
                "o.model_version, r.adapter, o.adapter FROM response_feedback f "
                "JOIN annotators a ON a.id = f.annotator_id "
                "JOIN responses r ON r.id = f.response_id "
                "LEFT JOIN responses o ON o.id = f.other_response_id "
                "WHERE f.id > ? ORDER BY f.id",
                (after_id,),
            )
            return cur.fetchall()

        return [_judgement(row) for row in self._db.run(op)]

    def count(self) -> int:
        """How many votes are stored now."""

        def op(cur: Cursor) -> int:
            cur.execute("SELECT COUNT(*) FROM response_feedback")
            return int(cur.fetchone()[0])

        return self._db.run(op)

    def response(self, response_id: str) -> dict[str, Any] | None:
        """The stored answer (text as stored), or None."""

        def op(cur: Cursor) -> dict[str, Any] | None:
            cur.execute(
                "SELECT r.id, r.annotator_id, a.name, r.model_version, r.adapter, r.prompt, "
                "r.completion, r.created_at FROM responses r "
                "JOIN annotators a ON a.id = r.annotator_id WHERE r.id = ?",
                (response_id,),
            )
            row = cur.fetchone()
            keys = ("id", "annotator_id", "annotator", "model_version", "adapter", "prompt",
                    "completion", "created_at")  # fmt: skip
            return None if row is None else dict(zip(keys, row, strict=True))

        return self._db.run(op)

    def _consented(self, annotator_id: int) -> bool:
        return self._db.run(lambda cur: self._consented_in(cur, annotator_id))

    @staticmethod
    def _consented_in(cur: Cursor, annotator_id: int) -> bool:
        cur.execute("SELECT consent_at FROM annotators WHERE id = ?", (annotator_id,))
        row = cur.fetchone()
        return row is not None and row[0] is not None


def _check_pair(response_ids: Sequence[str], preferred: str) -> tuple[str, str]:
    valid = "send response_ids [a, b] (two answers to the same prompt) and preferred = a or b"
    if isinstance(response_ids, str) or len(response_ids) != 2:
        raise FeedbackRuleError(f"A pair needs exactly two response ids; {valid}.")
    pair = (_check_id(response_ids[0]), _check_id(response_ids[1]))
    if pair[0] == pair[1]:
        raise FeedbackRuleError(
            f"A pair needs two different answers, got {pair[0]!r} twice; {valid}."
        )
    if preferred not in pair:
        raise FeedbackRuleError(
            f"preferred must be one of the two response ids {list(pair)}, got {preferred!r:.60}."
        )
    return pair


def _judgement(row: Sequence[Any]) -> LiveJudgement:
    (vote_id, user, kind, choice, response_id, other_id, created_at,
     prompt, completion, version, other_completion, other_version, adapter, other_adapter) = row  # fmt: skip
    personal = adapter is not None or other_adapter is not None
    if kind == "rating":
        return LiveJudgement(
            int(vote_id), user, "rating", prompt, completion, None, choice == "up",
            int(version), (response_id,), created_at, personal,
        )  # fmt: skip
    if choice != response_id:  # stored sorted; put the preferred answer first
        response_id, other_id = other_id, response_id
        completion, other_completion = other_completion, completion
        version = other_version
    return LiveJudgement(
        int(vote_id), user, "pair", prompt, completion, other_completion, None,
        int(version), (response_id, other_id), created_at, personal,
    )  # fmt: skip

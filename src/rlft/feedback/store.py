"""Where human feedback is kept: SQLite (default, a file in WAL mode) or PostgreSQL (a URL).

The connections, the SQL dialects and the retries are in :mod:`rlft.feedback.database`, the tables
in :mod:`rlft.feedback.schema`, and the records and their text rules in
:mod:`rlft.feedback.records`; the names are importable from here too.

Feedback is never dropped: every write runs in its own transaction, a busy or locked database and
a lost PostgreSQL connection are retried with backoff, and SQLite runs with ``synchronous=FULL``
so a committed judgement survives a power cut. The idempotency key is ``UNIQUE`` in the database,
so a double click or a client retry stores one row however the requests interleave.

One vote per annotator: a unique index on (annotator, item, kind, side) keeps one judgement per
annotator per item (per side for ratings); a new judgement with a new key replaces the old one, so
one annotator cannot outvote the others by submitting many keys.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlft.errors import RlftError
from rlft.feedback.database import Cursor, Database, Retry, database_files, files_in_use
from rlft.feedback.records import (
    MAX_LABEL_CHARS,
    AddedItems,
    Annotator,
    Item,
    Judgement,
    SubmitResult,
    UnknownItemError,
    item_id_for,
    label_problem,
    text_problem,
)
from rlft.feedback.schema import create_schema
from rlft.responsible.pii import PiiScrubber

__all__ = [
    "MAX_LABEL_CHARS",
    "AddedItems",
    "Annotator",
    "Item",
    "Judgement",
    "Store",
    "SubmitResult",
    "UnknownItemError",
    "database_files",
    "files_in_use",
    "hash_token",
    "item_id_for",
    "label_problem",
    "text_problem",
]


def _is_content_hash(item: Item) -> bool:
    return item.id == item_id_for(item.prompt, item.completion_a, item.completion_b)


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Store:
    """Items, annotators and judgements in SQLite or PostgreSQL; safe to share between threads.

    ``target`` is a file path (SQLite) or a ``postgresql://`` URL. Each thread gets its own
    connection. A transaction that finds the database busy is retried whole, up to
    ``max_retries`` times with exponential backoff, after SQLite's own wait of ``busy_timeout_s``.
    """

    def __init__(
        self,
        target: str | Path,
        max_retries: int = 8,
        busy_timeout_s: float = 10.0,
        scrub_pii: bool = True,
    ) -> None:
        target = str(target)
        # Items and comments are scrubbed on the way in, so the database never holds the PII
        # (and no export, reward model or log downstream can leak it). Counts only are kept.
        self._pii = PiiScrubber() if scrub_pii else None
        self.pii_removed: Counter[str] = Counter()
        self._lock = threading.Lock()  # guards pii_removed
        self._db = Database(target, max_retries, busy_timeout_s)
        self._db.run(lambda cur: create_schema(cur, self._db.dialect), write=True)

    def close(self) -> None:
        self._db.close()

    # -- items ------------------------------------------------------------------------------------

    def add_items(self, items: Iterable[Item]) -> AddedItems:
        """Insert items. One already present with the same id is skipped: counted as unchanged
        when its content is the same, listed in ``conflicting`` when it differs (the stored item
        keeps its judgements). An invalid id, or one holding personal data while PII is
        scrubbed, is an error naming each such id; nothing is added then."""
        items = list(items)
        self._check_ids(items)
        items = [self._scrub_item(i) for i in items]
        rows = [(i.id, i.prompt, i.completion_a, i.completion_b, i.source, _now()) for i in items]

        def op(cur: Cursor) -> AddedItems:
            added, unchanged, conflicting = 0, 0, []
            for row in rows:
                cur.execute(
                    "INSERT INTO items (id, prompt, completion_a, completion_b, source, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                    row,
                )
                if cur.fetchone() is not None:
                    added += 1
                    continue
                cur.execute(
                    "SELECT prompt, completion_a, completion_b FROM items WHERE id = ?", (row[0],)
                )
                if tuple(cur.fetchone()) == row[1:4]:
                    unchanged += 1
                elif row[0] not in conflicting:
                    conflicting.append(row[0])
            return AddedItems(added, unchanged, tuple(conflicting))

        return self._db.run(op, write=True)

    def _check_ids(self, items: list[Item]) -> None:
        bad = []
        for item in items:
            problem = self._item_problem(item)
            if problem is not None:
                where = f"{item.source}: " if item.source else ""
                bad.append(f"{where}{problem}: {item.id!r:.60}")
        if bad:
            shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise RlftError(
                f"{len(bad)} item(s) refused: {shown}. Fix them, or give such items other ids "
                "(or drop 'id' to use a content hash)."
            )

    def _item_problem(self, item: Item) -> str | None:
        texts = {
            "prompt": item.prompt,
            "completion_a": item.completion_a,
            "completion_b": item.completion_b,
        }
        for name, text in texts.items():
            problem = text_problem(text) if isinstance(text, str) else None
            if problem is not None:
                return f"{name} {problem}"
        problem = label_problem(item.id)
        if problem is None and self._pii is not None and not _is_content_hash(item):
            # Refused rather than scrubbed: "[EMAIL]" in place of two different addresses would
            # merge two items, and the caller could no longer find theirs by id.
            kinds = sorted({span.type for span in self._pii.find(item.id)})
            if kinds:
                problem = (
                    f"item id contains personal data ({', '.join(kinds)}; --keep-pii allows it)"
                )
        return problem

    def _scrub_item(self, item: Item) -> Item:
        if self._pii is None:
            return item
        prompt, a = self._scrub(item.prompt), self._scrub(item.completion_a)
        b = self._scrub(item.completion_b) if item.completion_b is not None else None
        item_id = item.id
        if _is_content_hash(item):
            item_id = item_id_for(prompt, a, b)  # a content hash must not be a hash of the PII
        return Item(item_id, prompt, a, b, item.source)

    def _scrub(self, text: str) -> str:
        if self._pii is None:
            return text
        result = self._pii.scrub(text)
        if result.counts:
            with self._lock:
                self.pii_removed.update(result.counts)
        return result.text

    def next_item(self, annotator_id: int, kind: str) -> tuple[Item, str | None] | None:
        """The next item this annotator has not judged, least-judged first; for ratings, also the side."""
        if kind == "pair":
            sql = (
                "SELECT i.id, i.prompt, i.completion_a, i.completion_b, NULL FROM items i "
                "WHERE i.completion_b IS NOT NULL AND NOT EXISTS (SELECT 1 FROM judgements j "
                "WHERE j.item_id = i.id AND j.annotator_id = ? AND j.kind = 'pair') "
                "ORDER BY (SELECT COUNT(*) FROM judgements k WHERE k.item_id = i.id AND k.kind = 'pair'), i.id "
                "LIMIT 1"
            )
        else:
            sql = (
                "SELECT i.id, i.prompt, i.completion_a, i.completion_b, s.side FROM items i "
                "CROSS JOIN (SELECT 'A' AS side UNION ALL SELECT 'B' AS side) s "
                "WHERE (s.side = 'A' OR i.completion_b IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM "
                "judgements j WHERE j.item_id = i.id AND j.annotator_id = ? AND j.kind = 'rating' "
                "AND j.side = s.side) ORDER BY i.id, s.side LIMIT 1"
            )

        def op(cur: Cursor) -> tuple[Item, str | None] | None:
            cur.execute(sql, (annotator_id,))
            row = cur.fetchone()
            return None if row is None else (Item(row[0], row[1], row[2], row[3]), row[4])

        return self._db.run(op)

    # -- annotators -------------------------------------------------------------------------------

    def add_annotator(self, name: str, consent: bool = False) -> str:
        """Register an annotator and return their bearer token (only its hash is stored)."""
        problem = label_problem(name, "an annotator name")
        if problem is not None:
            raise RlftError(f"{problem}: {name!r:.60}; give a name such as 'alice'.")
        token = "rlft_" + secrets.token_urlsafe(32)

        def op(cur: Cursor) -> None:
            cur.execute("SELECT 1 FROM annotators WHERE name = ?", (name,))
            if cur.fetchone() is not None:
                raise RlftError(f"An annotator named {name!r} already exists; choose another name.")
            cur.execute(
                "INSERT INTO annotators (name, token_hash, consent_at, created_at) VALUES (?, ?, ?, ?)",
                (name, hash_token(token), _now() if consent else None, _now()),
            )

        self._db.run(op, write=True)
        return token

    def annotator_for_token(self, token: str) -> Annotator | None:
        def op(cur: Cursor) -> Annotator | None:
            cur.execute(
                "SELECT id, name, consent_at FROM annotators WHERE token_hash = ?",
                (hash_token(token),),
            )
            row = cur.fetchone()
            return None if row is None else Annotator(int(row[0]), row[1], row[2] is not None)

        return self._db.run(op)

    def record_consent(self, annotator_id: int) -> None:
        def op(cur: Cursor) -> None:
            cur.execute(
                "UPDATE annotators SET consent_at = ? WHERE id = ? AND consent_at IS NULL",
                (_now(), annotator_id),
            )

        self._db.run(op, write=True)

    def forget_annotator(self, name: str) -> int:
        """Delete an annotator's judgements (with their comments), the live answers they were
        given and their votes on them (:mod:`rlft.feedback.live`), and their identity (name,
        token hash, consent); returns how many judgements and live votes were deleted, together.
        Items stay: they are not the annotator's. Later exports cannot include them, and their
        token no longer signs in."""

        def op(cur: Cursor) -> int:
            cur.execute("SELECT id FROM annotators WHERE name = ?", (name,))
            row = cur.fetchone()
            if row is None:
                raise RlftError(f"No annotator named {name!r}; `rlft feedback status` counts them.")
            who = row[0]
            # Votes first: they reference the responses (foreign keys). Votes are only ever on
            # one's own answers, but a vote of anyone on these answers goes too, so none is left
            # pointing at a deleted answer.
            votes = (
                "FROM response_feedback WHERE annotator_id = ? OR response_id IN (SELECT id FROM "
                "responses WHERE annotator_id = ?) OR other_response_id IN (SELECT id FROM "
                "responses WHERE annotator_id = ?)"
            )
            cur.execute(f"SELECT COUNT(*) {votes}", (who, who, who))  # `votes` is a constant
            deleted = int(cur.fetchone()[0])
            cur.execute(f"DELETE {votes}", (who, who, who))
            cur.execute("DELETE FROM responses WHERE annotator_id = ?", (who,))
            cur.execute("SELECT COUNT(*) FROM judgements WHERE annotator_id = ?", (who,))
            deleted += int(cur.fetchone()[0])
            cur.execute("DELETE FROM judgements WHERE annotator_id = ?", (who,))
            cur.execute("DELETE FROM annotators WHERE id = ?", (who,))
            return deleted

        deleted = self._db.run(op, write=True)
        self._db.purge()
        return deleted

    # -- judgements -------------------------------------------------------------------------------

    def submit(self, j: Judgement) -> SubmitResult:
        """Store a judgement once per idempotency key; a repeat returns the first row's id.

        One vote per (annotator, item, kind, side): a judgement with a new key on an item this
        annotator already judged replaces the earlier one (the latest submission wins).
        """
        for field_name in ("item_id", "idempotency_key", "comment"):
            value = getattr(j, field_name)
            problem = text_problem(value) if isinstance(value, str) else None
            if problem is not None:
                raise RlftError(f"The judgement's {field_name} {problem}.")
        comment = self._scrub(j.comment) if j.comment else j.comment

        def op(cur: Cursor) -> SubmitResult:
            cur.execute("SELECT completion_b FROM items WHERE id = ?", (j.item_id,))
            item = cur.fetchone()
            if item is None:
                raise UnknownItemError(f"No item with id {j.item_id!r}.")
            if item[0] is None and (j.kind == "pair" or j.side == "B"):
                raise UnknownItemError(f"Item {j.item_id!r} has only completion A.")
            now = _now()
            # No conflict target: either unique index (the key, or the one-vote rule) may refuse it.
            cur.execute(
                "INSERT INTO judgements (idempotency_key, item_id, annotator_id, kind, choice, side, "
                "comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (
                    j.idempotency_key,
                    j.item_id,
                    j.annotator_id,
                    j.kind,
                    j.choice,
                    j.side,
                    comment,
                    now,
                ),
            )
            row = cur.fetchone()
            if row is not None:
                return SubmitResult(int(row[0]), created=True)
            cur.execute(
                "SELECT id, item_id, annotator_id, kind, choice, side FROM judgements WHERE idempotency_key = ?",
                (j.idempotency_key,),
            )
            first = cur.fetchone()
            if first is not None:
                same = tuple(first[1:]) == (j.item_id, j.annotator_id, j.kind, j.choice, j.side)
                return SubmitResult(int(first[0]), created=False, conflict=not same)
            # A new key on an item this annotator already judged: the new vote replaces the old.
            cur.execute(
                "UPDATE judgements SET idempotency_key = ?, choice = ?, comment = ?, created_at = ? "
                "WHERE annotator_id = ? AND item_id = ? AND kind = ? AND COALESCE(side, '') = ? RETURNING id",
                (
                    j.idempotency_key,
                    j.choice,
                    comment,
                    now,
                    j.annotator_id,
                    j.item_id,
                    j.kind,
                    j.side or "",
                ),
            )
            row = cur.fetchone()
            if row is None:
                raise Retry  # the earlier vote was deleted between the two statements
            return SubmitResult(int(row[0]), created=True, replaced=True)

        return self._db.run(op, write=True)

    def judgements(self) -> list[dict[str, Any]]:
        """Every judgement joined with its item and annotator, oldest first."""

        def op(cur: Cursor) -> list[dict[str, Any]]:
            cur.execute(
                "SELECT j.id, j.idempotency_key, j.item_id, a.name, j.kind, j.choice, j.side, j.comment, "
                "j.created_at, i.prompt, i.completion_a, i.completion_b FROM judgements j "
                "JOIN items i ON i.id = j.item_id JOIN annotators a ON a.id = j.annotator_id ORDER BY j.id"
            )
            keys = ("id", "idempotency_key", "item_id", "annotator", "kind", "choice", "side", "comment",
                    "created_at", "prompt", "completion_a", "completion_b")  # fmt: skip
            return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

        return self._db.run(op)

    def counts(self) -> dict[str, int]:
        def op(cur: Cursor) -> dict[str, int]:
            out = {}
            for table in ("items", "annotators", "judgements"):
                cur.execute(f"SELECT COUNT(*) FROM {table}")  # table names are constants
                out[table] = int(cur.fetchone()[0])
            return out

        return self._db.run(op)

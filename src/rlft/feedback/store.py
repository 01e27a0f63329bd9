"""Where human feedback is kept: SQLite (default, a file in WAL mode) or PostgreSQL (a URL).

Both go through the same few SQL statements on plain DB-API connections (``sqlite3`` and
``psycopg`` 3). The statements are written once with ``?`` placeholders; the PostgreSQL dialect
rewrites them to ``%s``. We chose this over SQLAlchemy Core because the schema is three tables
and a dozen statements that both databases understand as written (``ON CONFLICT ... DO NOTHING``,
``RETURNING``), so an ORM layer would add a dependency and hide the SQL without removing any
code. Values always travel as query parameters, never in the SQL text.

Feedback is never dropped: every write runs in its own transaction (SQLite: ``BEGIN IMMEDIATE``,
so writers queue instead of failing mid-transaction), a busy or locked database and a lost
PostgreSQL connection are retried with backoff, and SQLite runs with ``synchronous=FULL`` so a
committed judgement survives a power cut. The idempotency key is ``UNIQUE`` in the database, so
a double click or a client retry stores one row however the requests interleave.

One vote per annotator: a unique index on (annotator, item, kind, side) keeps one judgement per
annotator per item (per side for ratings); a new judgement with a new key replaces the old one, so
one annotator cannot outvote the others by submitting many keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from rlft.errors import RlftError
from rlft.responsible.pii import PiiScrubber

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT,
    source TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotators (
    id {id_pk},
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    consent_at TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgements (
    id {id_pk},
    idempotency_key TEXT NOT NULL UNIQUE,
    item_id TEXT NOT NULL REFERENCES items (id),
    annotator_id BIGINT NOT NULL REFERENCES annotators (id),
    kind TEXT NOT NULL,
    choice TEXT NOT NULL,
    side TEXT,
    comment TEXT,
    created_at TEXT NOT NULL,
    CHECK ((kind = 'pair' AND choice IN ('A', 'B', 'tie') AND side IS NULL)
        OR (kind = 'rating' AND choice IN ('up', 'down') AND side IN ('A', 'B')))
);
CREATE INDEX IF NOT EXISTS judgements_item ON judgements (item_id);
CREATE INDEX IF NOT EXISTS judgements_annotator ON judgements (annotator_id)
"""

# The one-vote rule. NULL sides (pairs) compare as distinct in a UNIQUE constraint on both
# databases, hence the expression.
ONE_VOTE_INDEX = "judgements_one_vote"
ONE_VOTE_SQL = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS {ONE_VOTE_INDEX} "
    "ON judgements (annotator_id, item_id, kind, COALESCE(side, ''))"
)
# A database written before the rule may hold several votes per annotator; the latest stays.
KEEP_LATEST_VOTE_SQL = (
    "DELETE FROM judgements WHERE id NOT IN (SELECT MAX(id) FROM judgements "
    "GROUP BY annotator_id, item_id, kind, COALESCE(side, ''))"
)

MAX_LABEL_CHARS = 128  # item ids and annotator names


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None. JSON may carry a lone surrogate (``"\\ud800"``),
    which is not Unicode text: no UTF-8 database or file can hold it."""
    if any(unicodedata.category(c) == "Cs" for c in text):
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def label_problem(value: object, what: str = "an item id") -> str | None:
    """Why ``value`` is not a valid item id (or annotator name), or None.

    The one rule for the items file, :meth:`Store.add_items`, :meth:`Store.add_annotator` and the
    API's ``item_id``: 1 to 128 characters, no control characters, no surrounding whitespace.
    """
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not value.strip():
        return f"{what} must not be empty"
    if len(value) > MAX_LABEL_CHARS:
        return f"{what} must be at most {MAX_LABEL_CHARS} characters, got {len(value)}"
    if value != value.strip():
        return f"{what} must not start or end with whitespace"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return f"{what} must not contain control characters"
    problem = text_problem(value)
    return f"{what} {problem}" if problem else None


# SQLite files held open by a Store in this process, so an export never writes over one.
_files_in_use: Counter[Path] = Counter()
_files_lock = threading.Lock()


def database_files(path: str | Path) -> list[Path]:
    """A SQLite database and the files SQLite keeps beside it, with links resolved."""
    main = Path(path).expanduser().resolve()
    return [main] + [main.with_name(main.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def files_in_use() -> set[Path]:
    """Every file of every SQLite database a :class:`Store` in this process has open."""
    with _files_lock:
        return {f for db, n in _files_in_use.items() if n > 0 for f in database_files(db)}


@dataclass(frozen=True)
class Item:
    """A prompt with one completion (rating only) or two (pairwise comparison)."""

    id: str
    prompt: str
    completion_a: str
    completion_b: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    consented: bool


@dataclass(frozen=True)
class Judgement:
    """One submission. ``kind='pair'``: choice A/B/tie. ``kind='rating'``: choice up/down on ``side``."""

    idempotency_key: str
    item_id: str
    annotator_id: int
    kind: str
    choice: str
    side: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    """``created``: this call stored the row. ``conflict``: the key was already used for another
    judgement. ``replaced``: the row replaced this annotator's earlier judgement of the item."""

    id: int
    created: bool
    conflict: bool = False
    replaced: bool = False


@dataclass(frozen=True)
class AddedItems:
    """What :meth:`Store.add_items` did: ``added`` new items; ``conflicting``: ids already in the
    store with different content (the stored item is kept, these were not loaded)."""

    added: int
    unchanged: int
    conflicting: tuple[str, ...] = ()


class UnknownItemError(RlftError):
    """A judgement names an item that is not in the store (or has no completion B for a pair)."""


class _Retry(Exception):
    """A concurrent writer changed the rows this transaction read; run it again."""


def item_id_for(prompt: str, completion_a: str, completion_b: str | None) -> str:
    """A stable id from the content, so loading the same file twice adds nothing."""
    digest = hashlib.sha256("\x00".join([prompt, completion_a, completion_b or ""]).encode())
    return digest.hexdigest()[:16]


def _is_content_hash(item: Item) -> bool:
    return item.id == item_id_for(item.prompt, item.completion_a, item.completion_b)


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class _SQLite:
    name = "sqlite"
    id_pk = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)

    def connect(self) -> Any:
        # isolation_level=None: we issue BEGIN ourselves; timeout is SQLite's busy handler.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, so `rlft feedback forget` leaves no trace in the file.
        conn.execute("PRAGMA secure_delete=ON")
        return conn

    def purge(self, conn: Any) -> None:
        """Move every committed page into the main file and empty the WAL, so frames that still
        hold deleted rows are gone too (a no-op while another connection is reading)."""
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def sql(self, statement: str) -> str:
        return statement

    def has_index(self, cur: Any, name: str) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,))
        return cur.fetchone() is not None

    def retryable(self, exc: BaseException) -> tuple[bool, bool]:
        """(retry?, reconnect first?)"""
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in text or "busy" in text
        ), False


class _Postgres:
    name = "postgresql"
    id_pk = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise RlftError("PostgreSQL needs psycopg 3: pip install 'rlft[feedback]'.") from None
        self.psycopg = psycopg
        self.url = url

    def connect(self) -> Any:
        try:
            return self.psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        except self.psycopg.OperationalError as exc:
            raise RlftError(f"Cannot connect to PostgreSQL at {_redact(self.url)}: {exc}") from None

    def begin(self, conn: Any, write: bool) -> None:
        pass  # psycopg opens a transaction at the first statement

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def has_index(self, cur: Any, name: str) -> bool:
        cur.execute("SELECT 1 FROM pg_indexes WHERE indexname = ?", (name,))
        return cur.fetchone() is not None

    def purge(self, conn: Any) -> None:
        pass  # dead tuples are PostgreSQL's to vacuum; they are invisible to every query

    def retryable(self, exc: BaseException) -> tuple[bool, bool]:
        errors = self.psycopg.errors
        # UniqueViolation: a concurrent transaction took the same idempotency key between our
        # statements (read committed); the retry finds it and answers as a repeat.
        if isinstance(
            exc, (errors.SerializationFailure, errors.DeadlockDetected, errors.UniqueViolation)
        ):
            return True, False
        if isinstance(exc, self.psycopg.OperationalError):
            return True, True
        return False, False


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


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
        is_pg = target.startswith(("postgresql://", "postgres://"))
        self.dialect: Any = _Postgres(target) if is_pg else _SQLite(target, busy_timeout_s)
        self.max_retries = max_retries
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._file = None if is_pg else database_files(target)[0]
        self._registered = False
        self._run(self._create_schema, write=True)

    # -- plumbing -------------------------------------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._register(True)
            conn = self.dialect.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _register(self, in_use: bool) -> None:
        with _files_lock:
            if self._file is not None and self._registered != in_use:
                _files_in_use[self._file] += 1 if in_use else -1
                self._registered = in_use

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, fn: Callable[[_Cursor], T], write: bool = False) -> T:
        """Run ``fn`` in one transaction; retry it whole when the database is busy."""
        delay = 0.005
        for attempt in range(self.max_retries + 1):
            try:
                conn = self._connection()
                self.dialect.begin(conn, write)
                result = fn(_Cursor(conn.cursor(), self.dialect))
                conn.commit()
                return result
            except Exception as exc:
                self._rollback()
                retry, reconnect = (
                    (True, False) if isinstance(exc, _Retry) else self.dialect.retryable(exc)
                )
                if not retry or attempt == self.max_retries:
                    raise
                if reconnect:
                    self._drop_connection()
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _rollback(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            self._drop_connection()  # a connection that cannot roll back is not reused

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()
        self._register(False)

    def _create_schema(self, cur: _Cursor) -> None:
        for statement in SCHEMA.format(id_pk=self.dialect.id_pk).split(";"):
            if statement.strip():
                cur.execute(statement)
        if not self.dialect.has_index(cur, ONE_VOTE_INDEX):
            cur.execute(KEEP_LATEST_VOTE_SQL)
            cur.execute(ONE_VOTE_SQL)

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

        def op(cur: _Cursor) -> AddedItems:
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

        return self._run(op, write=True)

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

        def op(cur: _Cursor) -> tuple[Item, str | None] | None:
            cur.execute(sql, (annotator_id,))
            row = cur.fetchone()
            return None if row is None else (Item(row[0], row[1], row[2], row[3]), row[4])

        return self._run(op)

    # -- annotators -------------------------------------------------------------------------------

    def add_annotator(self, name: str, consent: bool = False) -> str:
        """Register an annotator and return their bearer token (only its hash is stored)."""
        problem = label_problem(name, "an annotator name")
        if problem is not None:
            raise RlftError(f"{problem}: {name!r:.60}; give a name such as 'alice'.")
        token = "rlft_" + secrets.token_urlsafe(32)

        def op(cur: _Cursor) -> None:
            cur.execute("SELECT 1 FROM annotators WHERE name = ?", (name,))
            if cur.fetchone() is not None:
                raise RlftError(f"An annotator named {name!r} already exists; choose another name.")
            cur.execute(
                "INSERT INTO annotators (name, token_hash, consent_at, created_at) VALUES (?, ?, ?, ?)",
                (name, hash_token(token), _now() if consent else None, _now()),
            )

        self._run(op, write=True)
        return token

    def annotator_for_token(self, token: str) -> Annotator | None:
        def op(cur: _Cursor) -> Annotator | None:
            cur.execute(
                "SELECT id, name, consent_at FROM annotators WHERE token_hash = ?",
                (hash_token(token),),
            )
            row = cur.fetchone()
            return None if row is None else Annotator(int(row[0]), row[1], row[2] is not None)

        return self._run(op)

    def record_consent(self, annotator_id: int) -> None:
        def op(cur: _Cursor) -> None:
            cur.execute(
                "UPDATE annotators SET consent_at = ? WHERE id = ? AND consent_at IS NULL",
                (_now(), annotator_id),
            )

        self._run(op, write=True)

    def forget_annotator(self, name: str) -> int:
        """Delete an annotator's judgements (with their comments) and their identity (name, token
        hash, consent); returns how many judgements were deleted. Items stay: they are not the
        annotator's. Later exports cannot include them, and their token no longer signs in."""

        def op(cur: _Cursor) -> int:
            cur.execute("SELECT id FROM annotators WHERE name = ?", (name,))
            row = cur.fetchone()
            if row is None:
                raise RlftError(f"No annotator named {name!r}; `rlft feedback status` counts them.")
            cur.execute("SELECT COUNT(*) FROM judgements WHERE annotator_id = ?", (row[0],))
            deleted = int(cur.fetchone()[0])
            cur.execute("DELETE FROM judgements WHERE annotator_id = ?", (row[0],))
            cur.execute("DELETE FROM annotators WHERE id = ?", (row[0],))
            return deleted

        deleted = self._run(op, write=True)
        self.dialect.purge(self._connection())
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

        def op(cur: _Cursor) -> SubmitResult:
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
                raise _Retry  # the earlier vote was deleted between the two statements
            return SubmitResult(int(row[0]), created=True, replaced=True)

        return self._run(op, write=True)

    def judgements(self) -> list[dict[str, Any]]:
        """Every judgement joined with its item and annotator, oldest first."""

        def op(cur: _Cursor) -> list[dict[str, Any]]:
            cur.execute(
                "SELECT j.id, j.idempotency_key, j.item_id, a.name, j.kind, j.choice, j.side, j.comment, "
                "j.created_at, i.prompt, i.completion_a, i.completion_b FROM judgements j "
                "JOIN items i ON i.id = j.item_id JOIN annotators a ON a.id = j.annotator_id ORDER BY j.id"
            )
            keys = ("id", "idempotency_key", "item_id", "annotator", "kind", "choice", "side", "comment",
                    "created_at", "prompt", "completion_a", "completion_b")  # fmt: skip
            return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

        return self._run(op)

    def counts(self) -> dict[str, int]:
        def op(cur: _Cursor) -> dict[str, int]:
            out = {}
            for table in ("items", "annotators", "judgements"):
                cur.execute(f"SELECT COUNT(*) FROM {table}")  # table names are constants
                out[table] = int(cur.fetchone()[0])
            return out

        return self._run(op)


class _Cursor:
    """A DB-API cursor that speaks the ``?`` placeholder style on both dialects."""

    def __init__(self, cursor: Any, dialect: Any) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        self._cursor.execute(self._dialect.sql(statement), params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

"""Connections to the feedback database: SQLite (a file in WAL mode) or PostgreSQL (a URL).

Both go through the same few SQL statements on plain DB-API connections (``sqlite3`` and
``psycopg`` 3). The statements are written once with ``?`` placeholders; the PostgreSQL dialect
rewrites them to ``%s``. We chose this over SQLAlchemy Core because the schema is three tables
and a dozen statements that both databases understand as written (``ON CONFLICT ... DO NOTHING``,
``RETURNING``), so an ORM layer would add a dependency and hide the SQL without removing any
code. Values always travel as query parameters, never in the SQL text.

Every write runs in its own transaction (SQLite: ``BEGIN IMMEDIATE``, so writers queue instead of
failing mid-transaction); a busy or locked database and a lost PostgreSQL connection are retried
with backoff, and SQLite runs with ``synchronous=FULL`` so a committed write survives a power cut.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rlft.errors import RlftError

T = TypeVar("T")

# SQLite files held open by a Database in this process, so an export never writes over one.
_files_in_use: Counter[Path] = Counter()
_files_lock = threading.Lock()


def database_files(path: str | Path) -> list[Path]:
    """A SQLite database and the files SQLite keeps beside it, with links resolved."""
    main = Path(path).expanduser().resolve()
    return [main] + [main.with_name(main.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def files_in_use() -> set[Path]:
    """Every file of every SQLite database a :class:`~rlft.feedback.store.Store` in this process
    has open."""
    with _files_lock:
        return {f for db, n in _files_in_use.items() if n > 0 for f in database_files(db)}


class Retry(Exception):
    """A concurrent writer changed the rows this transaction read; run it again."""


class Dialect(Protocol):
    """What differs between SQLite and PostgreSQL, and nothing else."""

    name: str
    id_pk: str  # the identity column's type in the schema

    def connect(self) -> Any: ...
    def begin(self, conn: Any, write: bool) -> None: ...
    def sql(self, statement: str) -> str: ...  # from the ``?`` placeholder style
    def has_index(self, cur: Cursor, name: str) -> bool: ...
    def purge(self, conn: Any) -> None: ...  # make deleted rows unrecoverable, where it can
    def retryable(self, exc: BaseException) -> tuple[bool, bool]: ...  # (retry?, reconnect?)


class SQLite:
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

    def has_index(self, cur: Cursor, name: str) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,))
        return cur.fetchone() is not None

    def retryable(self, exc: BaseException) -> tuple[bool, bool]:
        """(retry?, reconnect first?)"""
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in text or "busy" in text
        ), False


class Postgres:
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
            raise RlftError(f"Cannot connect to PostgreSQL at {redact(self.url)}: {exc}") from None

    def begin(self, conn: Any, write: bool) -> None:
        pass  # psycopg opens a transaction at the first statement

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def has_index(self, cur: Cursor, name: str) -> bool:
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


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


class Cursor:
    """A DB-API cursor that speaks the ``?`` placeholder style on both dialects."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        self._cursor.execute(self._dialect.sql(statement), params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())


class Database:
    """One SQLite file or PostgreSQL database, shared between threads: each thread gets its own
    connection, and :meth:`run` runs a function in one transaction, retried whole when the
    database is busy (up to ``max_retries`` times with exponential backoff, after SQLite's own
    wait of ``busy_timeout_s``)."""

    def __init__(self, target: str, max_retries: int, busy_timeout_s: float) -> None:
        is_pg = target.startswith(("postgresql://", "postgres://"))
        self.dialect: Dialect = Postgres(target) if is_pg else SQLite(target, busy_timeout_s)
        self.max_retries = max_retries
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._file = None if is_pg else database_files(target)[0]
        self._registered = False

    def run(self, fn: Callable[[Cursor], T], write: bool = False) -> T:
        """Run ``fn`` in one transaction; retry it whole when the database is busy."""
        delay = 0.005
        for attempt in range(self.max_retries + 1):
            try:
                conn = self._connection()
                self.dialect.begin(conn, write)
                result = fn(Cursor(conn.cursor(), self.dialect))
                conn.commit()
                return result
            except Exception as exc:
                self._rollback()
                retry, reconnect = (
                    (True, False) if isinstance(exc, Retry) else self.dialect.retryable(exc)
                )
                if not retry or attempt == self.max_retries:
                    raise
                if reconnect:
                    self._drop_connection()
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def purge(self) -> None:
        """Make deleted rows unrecoverable from the database's files, where the dialect can."""
        self.dialect.purge(self._connection())

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()
        self._register(False)

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

    def _rollback(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            self._drop_connection()  # a connection that cannot roll back is not reused

"""A hash-chained, append-only audit log of a run: ``RUN/audit.jsonl``.

Each line is one record::

    {"seq": 3, "time": "2024-06-01T12:00:00+00:00", "event": "checkpoint", "fields": {...},
     "prev": "<hash of record 2>", "hash": "<sha256 of this record>", "hmac": "<optional>"}

``hash`` is the SHA-256 of the record's canonical JSON (sorted keys, no spaces, UTF-8) without
``hash`` and ``hmac``; ``prev`` is the previous record's hash (64 zeros for the first). Editing a
record breaks its hash; deleting or reordering records breaks ``seq`` and the ``prev`` links.
Deleting the last records leaves a valid chain, so every append also rewrites ``audit.head``
(the last seq and hash) atomically; a log shorter than its head was truncated. A missing head
fails verification too (deleting it along with the last records would otherwise hide the
truncation); ``allow_missing_head`` accepts it for an unsigned log, never for a signed one.

Without a key, the chain catches accidents and naive edits, but someone who rewrites every hash
(and the head) after an edit goes unnoticed. With a key (``RLFT_AUDIT_KEY`` holding the key, or
``RLFT_AUDIT_KEY_FILE`` naming a file that does) each record and the head also carry an
HMAC-SHA256 of the hash, which cannot be recomputed without the key.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlft.common.strict_json import finite_only
from rlft.errors import RlftError

LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
GENESIS = "0" * 64
KEY_ENV = "RLFT_AUDIT_KEY"
KEY_FILE_ENV = "RLFT_AUDIT_KEY_FILE"


def canonical_json(value: Any) -> bytes:
    """The bytes that are hashed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a record without its ``hash`` and ``hmac`` fields."""
    body = {k: v for k, v in record.items() if k not in ("hash", "hmac")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def load_key(key_file: str | Path | None = None) -> bytes | None:
    """The HMAC key: from ``key_file``, else ``$RLFT_AUDIT_KEY``, else the file in
    ``$RLFT_AUDIT_KEY_FILE``; None when there is none."""
    if key_file is None and os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    key_file = key_file or os.environ.get(KEY_FILE_ENV)
    if not key_file:
        return None
    path = Path(key_file).expanduser()
    if not path.is_file():
        raise RlftError(f"Audit key file {path} does not exist.")
    key = path.read_bytes().strip()
    if not key:
        raise RlftError(f"Audit key file {path} is empty.")
    return key


def _sign(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


class AuditLog:
    """Append records to ``RUN/audit.jsonl``; ``verify()`` checks the whole chain."""

    def __init__(self, run_dir: str | Path, key: bytes | None = None, key_from_env: bool = True) -> None:
        self.root = Path(run_dir)
        self.path = self.root / LOG_NAME
        self.head_path = self.root / HEAD_NAME
        self.key = key if key is not None or not key_from_env else load_key()

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record and return it. ``fields`` must be JSON-serialisable (others are
        written with ``str``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        last = self._last_record()
        record: dict[str, Any] = {
            "seq": last["seq"] + 1 if last else 0,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "event": event,
            # inf/NaN (a diverged metric in a summary) become null: the log stays JSON (strict_json).
            "fields": json.loads(canonical_json(finite_only(fields)[0])),
            "prev": last["hash"] if last else GENESIS,
        }
        record["hash"] = record_hash(record)
        if self.key:
            record["hmac"] = _sign(self.key, record["hash"])
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._write_head(record)
        return record

    def records(self) -> list[dict[str, Any]]:
        """All records that parse (for reading the log, not for checking it)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def _last_record(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            return None
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            raise RlftError(
                f"{self.path}: the last line is not valid JSON; run `rlft audit verify {self.root}`."
            ) from None

    def _write_head(self, record: dict[str, Any]) -> None:
        head = {"seq": record["seq"], "hash": record["hash"]}
        if self.key:
            head["hmac"] = _sign(self.key, f"{record['seq']}:{record['hash']}")
        tmp = self.head_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(head) + "\n")
        os.replace(tmp, self.head_path)

    def verify(self, allow_missing_head: bool = False) -> VerifyResult:
        return verify_log(self.path, self.head_path, self.key, allow_missing_head)


@dataclass
class VerifyResult:
    """Outcome of :func:`verify_log`. ``problem`` names the first bad record; None when intact."""

    ok: bool
    records: int
    signed: bool
    problem: str | None = None
    bad_line: int | None = None
    warning: str | None = None


def verify_log(
    path: Path, head_path: Path | None = None, key: bytes | None = None, allow_missing_head: bool = False
) -> VerifyResult:
    """Check every record of a log, in order; stop at the first problem and name it.

    ``head_path`` (``audit.head``) must exist for a non-empty log: without it, deleting the last
    records and the head together leaves a valid chain. ``allow_missing_head`` accepts a missing
    head (with a warning) for an unsigned log only; a signed log's head always carries an HMAC,
    so its absence is never innocent.
    """
    if not path.exists():
        return VerifyResult(False, 0, False, f"{path} does not exist: this run has no audit log.")
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed: list[dict[str, Any] | None] = []
    for line in lines:
        try:
            value = json.loads(line)
            parsed.append(value if isinstance(value, dict) else None)
        except json.JSONDecodeError:
            parsed.append(None)
    seqs = [r.get("seq") if r else None for r in parsed]
    signed = any(r and "hmac" in r for r in parsed)

    def bad(i: int, message: str) -> VerifyResult:
        return VerifyResult(False, i, signed, f"line {i + 1}: {message}", i + 1)

    prev_hash = GENESIS
    for i, record in enumerate(parsed):
        if record is None:
            return bad(i, "is not a valid JSON record (edited, or a torn write).")
        name = f"record {record.get('seq')} ({record.get('event')!r})"
        if record.get("hash") != record_hash(record):
            return bad(i, f"{name} was edited: its content does not match its hash.")
        if key is not None and record.get("hmac") != _sign(key, record["hash"]):
            return bad(i, f"{name} has a missing or wrong HMAC signature (edited, or signed with another key).")
        if record.get("seq") != i:
            if i in seqs[i + 1 :]:
                return bad(i, f"records are out of order: {name} stands where record {i} should be "
                              f"(record {i} is at line {seqs.index(i, i + 1) + 1}).")
            return bad(i, f"record {i} is missing (deleted): line {i + 1} holds {name}.")
        if record.get("prev") != prev_hash:
            return bad(i, f"{name} does not link to the record before it (a record was deleted or replaced).")
        prev_hash = record["hash"]
    n = len(parsed)
    warning = None
    if signed and key is None:
        warning = "the log is signed but no key was given, so signatures were not checked."
    if head_path is not None and head_path.exists():
        try:
            head = json.loads(head_path.read_text())
        except json.JSONDecodeError:
            return VerifyResult(False, n, signed, f"{head_path} is not valid JSON.")
        if key is not None and head.get("hmac") != _sign(key, f"{head.get('seq')}:{head.get('hash')}"):
            return VerifyResult(False, n, signed, f"{head_path} has a missing or wrong HMAC signature.")
        if head.get("seq", -1) >= n:
            return VerifyResult(
                False, n, signed,
                f"the log was truncated: it ends at record {n - 1} but {head_path.name} says record "
                f"{head['seq']} was written; records {n}..{head['seq']} were deleted.", n + 1,
            )
        if head.get("seq") != n - 1 or head.get("hash") != prev_hash:
            return VerifyResult(False, n, signed, f"{head_path.name} does not match the last record of the log.")
    elif head_path is not None and n:
        name = head_path.name
        if signed:
            return VerifyResult(
                False, n, signed,
                f"{name} is missing: the log is signed, so its head was written with every record; "
                "without it the last records may have been deleted (truncation cannot be ruled out).",
            )
        if not allow_missing_head:
            return VerifyResult(
                False, n, signed,
                f"{name} is missing, so deleting the last records cannot be ruled out. If the head "
                "was never written (a log copied without it), check again with --allow-missing-head.",
            )
        warning = f"{name} is missing (allowed), so deleting the last records could not be detected."
    return VerifyResult(True, n, signed, None, None, warning)


def _git_revision() -> dict[str, Any] | None:
    source = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def run_provenance() -> dict[str, Any]:
    """Who ran what where: rlft version, git revision of rlft (if a checkout), host, user,
    Python, torch and transformers versions, platform."""
    from importlib.metadata import PackageNotFoundError, version

    from rlft.version import __version__

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return {
        "rlft_version": __version__,
        "git": _git_revision(),
        "host": socket.gethostname(),
        "user": user,
        "python": platform.python_version(),
        "torch": pkg("torch"),
        "transformers": pkg("transformers"),
        "platform": platform.platform(),
    }

"""One process per folder: an OS lock held for the whole life of a run (or of an ``rlft online``
loop), so that two processes never write one folder.

:meth:`FolderLock.acquire` takes ``fcntl.flock(LOCK_EX)`` on ``FOLDER/.lock`` and then writes the
holder's pid, host, start time and command into that file. The operating system releases a flock
when the process ends, however it ends (an exception, Ctrl-C, SIGKILL, out of memory), so a lock
file left behind by a dead process is harmless: the next process simply takes the lock. Whether a
folder is in use is therefore asked of the OS (:func:`lock_holder`), never read from the text; the
text only names the holder in the error a second process gets and in ``rlft runs``.

The file is opened close-on-exec, and a process forked from the holder (a worker, a reward
subprocess) closes its inherited copy, so a child that outlives the holder cannot keep the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rlft.errors import RlftError

LOCK_NAME = ".lock"
# A look by `rlft runs` holds the lock (shared) for a moment: a process that finds it taken tries
# again for this long before it concludes that another process holds it.
CONTENDED_SECONDS = 1.0

_HELD: dict[int, FolderLock] = {}  # fd -> lock: closed in forked children


class FolderInUseError(RlftError):
    """Another process holds the folder's lock."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


class FolderLock:
    """The held lock of one folder; :meth:`release` (or the end of the process) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, folder: str | Path, busy: str) -> FolderLock:
        """Take ``folder``'s lock (creating the folder and ``.lock``), or raise
        :class:`FolderInUseError` with ``busy`` formatted with ``{folder}``, ``{holder}`` (pid,
        host, since when, command) and ``{pid}``. An ``OSError`` creating the file is raised as it
        is (the caller knows what the folder is for)."""
        path = Path(folder) / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not O_TRUNC: truncating before holding the lock would erase the holder's record.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + CONTENDED_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = read_holder(path)
                    raise FolderInUseError(
                        busy.format(folder=path.parent, holder=describe(holder), pid=holder.get("pid", "?")), holder
                    ) from None
                time.sleep(0.02)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        lock = cls(path, fd)
        _HELD[fd] = lock
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Free the lock (the file stays: the next holder writes its own record into it)."""
        fd, self._fd = self._fd, None  # type: ignore[assignment]
        if fd is not None:
            _HELD.pop(fd, None)
            os.close(fd)  # closing the only descriptor releases the flock

    @contextlib.contextmanager
    def released_on_error(self) -> Iterator[FolderLock]:
        """Release the lock if the block raises (opening the folder failed); keep it otherwise."""
        try:
            yield self
        except BaseException:
            self.release()
            raise


def _close_in_child() -> None:
    # A forked child shares the holder's open file description; closing its descriptor (never
    # LOCK_UN, which would free the parent's lock) lets the lock die with the parent.
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
        _HELD[fd]._fd = None  # type: ignore[assignment]
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def read_holder(path: Path) -> dict[str, Any]:
    """The record the holder wrote into the lock file ({} when unreadable: informative only)."""
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host box since 2025-12-02 03:20 (rlft train r.yaml)', as much as is known."""
    words = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host"):
        words.append(f"on host {holder['host']}")
    if isinstance(holder.get("started"), (int, float)):
        words.append(f"since {datetime.fromtimestamp(holder['started']).strftime('%Y-%m-%d %H:%M')}")
    if holder.get("command"):
        words.append(f"({holder['command']})")
    return " ".join(words)


def lock_holder(folder: str | Path) -> dict[str, Any] | None:
    """The holder's record when a process (this one included) holds ``folder``'s lock, else None
    (no lock file, or one left by a process that has ended). Writes nothing: the lock is tried,
    shared, for an instant and let go."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return read_holder(path)
        return None
    finally:
        os.close(fd)
    return None

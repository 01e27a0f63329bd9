"""A bounded pool of sandboxed programs: at most ``workers`` run at once, results in order."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any

from rlft.sandbox.config import SandboxConfig
from rlft.sandbox.isolation import Isolation, SandboxError, isolation_for
from rlft.sandbox.process import (
    STATUSES,
    Program,
    SandboxResult,
    remove_stale_workdirs,
    run_program,
)
from rlft.schema import build

_TOTALS = {"runs": 0.0, "seconds": 0.0}
_TOTALS_LOCK = threading.Lock()


def totals() -> dict[str, float]:
    """Programs run by every :class:`Sandbox` of this process, the seconds spent in ``run_many``
    and their ratio (``runs_per_s``): what a benchmark reports of a run whose reward ran them."""
    with _TOTALS_LOCK:
        runs, seconds = _TOTALS["runs"], _TOTALS["seconds"]
    return {"runs": runs, "seconds": seconds, "runs_per_s": runs / seconds if seconds else 0.0}


class Sandbox:
    """Runs untrusted programs, ``workers`` at a time, each within the limits of ``config``.

    ::

        with Sandbox(workers=4, timeout=5) as sandbox:
            results = sandbox.run_many([Program(code="print(6 * 7)"), Program(code="while True: pass")])
        [r.status for r in results]   # ['passed', 'timeout']

    Threads of the caller may share one sandbox. :meth:`close` (or leaving the ``with`` block, or
    the interpreter exiting) kills every program still running; a program it killed ends as
    ``crashed``, one still waiting never starts. How programs are isolated is decided on first use
    (:attr:`isolation`); see docs/sandbox.md.
    """

    def __init__(self, config: SandboxConfig | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError("Give a SandboxConfig or keyword settings, not both.")
        self.config = config if config is not None else build(SandboxConfig, settings, "sandbox")
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.runs = 0
        self.wall_seconds = 0.0  # time spent inside run_many (for runs per second)
        self.statuses: Counter[str] = Counter()
        self._finalizer = weakref.finalize(self, _kill_all, self._running, self._lock)

    @property
    def isolation(self) -> Isolation:
        """How programs are isolated here (probed once per process and configuration)."""
        return isolation_for(self.config.isolation, self.config.python)

    def run(self, program: Program) -> SandboxResult:
        """Run one program."""
        return self.run_many([program])[0]

    def run_many(self, programs: Sequence[Program]) -> list[SandboxResult]:
        """Run ``programs``, ``workers`` at a time; one result per program, in order."""
        if self._closed:
            raise SandboxError("This sandbox was closed; make a new Sandbox to run more programs.")
        isolation = self.isolation  # probe (and warn) in the caller's thread, before any run
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="rlft-sandbox")
                if isolation.kind == "rlimits":
                    remove_stale_workdirs()
            executor = self._executor
        started = time.monotonic()
        futures = [executor.submit(self._run_one, program, isolation) for program in programs]
        results = []
        for future in futures:
            try:
                results.append(future.result())
            except CancelledError:
                results.append(_closed_result())
        elapsed = time.monotonic() - started
        with self._lock:
            self.wall_seconds += elapsed
        with _TOTALS_LOCK:
            _TOTALS["runs"] += len(programs)
            _TOTALS["seconds"] += elapsed
        return results

    def stats(self) -> dict[str, Any]:
        """Programs run so far, how they ended, and runs per second of :meth:`run_many`."""
        with self._lock:
            return {
                "runs": self.runs,
                "runs_per_s": self.runs / self.wall_seconds if self.wall_seconds else 0.0,
                "isolation": self.isolation.kind,
                **{f"status/{s}": self.statuses[s] for s in STATUSES},
            }

    def close(self) -> None:
        """Kill every program still running and stop the pool; idempotent."""
        self._closed = True
        _kill_all(self._running, self._lock)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_one(self, program: Program, isolation: Isolation) -> SandboxResult:
        if self._closed:
            return _closed_result()
        current: list[subprocess.Popen[bytes]] = []

        def track(proc: subprocess.Popen[bytes] | None) -> None:
            with self._lock:
                if proc is not None:
                    current.append(proc)
                    self._running.add(proc)
                elif current:
                    self._running.discard(current[0])
            if proc is not None and self._closed:  # closed while this one was starting
                _kill(proc)

        result = run_program(program, self.config, isolation, track)
        with self._lock:
            self.runs += 1
            self.statuses[result.status] += 1
        return result


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is not None:  # reaped already: its pid may belong to another process now
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _kill_all(running: set[subprocess.Popen[bytes]], lock: threading.Lock) -> None:
    with lock:
        procs = list(running)
    for proc in procs:
        _kill(proc)


def _closed_result() -> SandboxResult:
    return SandboxResult("crashed", None, None, "", "The sandbox was closed before this program ran.", 0.0)

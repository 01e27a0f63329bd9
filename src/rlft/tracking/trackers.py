"""The trackers a recipe names (``log.report_to``), started together and driven as one.

:func:`start_trackers` starts each tracker before any training, so that one that cannot start
(its library missing, a bad MLflow URI, no W&B credentials) stops the run with one
:class:`~rlft.errors.RlftError` naming the fix. :class:`Trackers` then forwards each step:

- a tracker that raises mid-run is reported once (stderr and the audit log) and skipped from then
  on; training and the other trackers go on;
- ``RUN/trackers.json`` keeps each tracker's run id and the last step it received, written
  atomically after every step. A resumed run continues the same tracker runs, and since the harness
  recomputes the steps after the last checkpoint bit-exactly, it skips the steps a tracker already has.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlft.common.run_folder import write_json_atomic
from rlft.config import LogConfig
from rlft.errors import RlftError
from rlft.tracking.base import Tracker, TrackerKind, TrackerStart, scalar_metrics
from rlft.tracking.mlflow import MlflowTracker
from rlft.tracking.tensorboard import TensorBoardTracker
from rlft.tracking.trackio import TrackioTracker
from rlft.tracking.wandb import WandbTracker

# log.report_to -> tracker class. "jsonl" is metrics.jsonl, which the harness always writes.
JSONL = "jsonl"
TRACKERS: dict[str, TrackerKind] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "mlflow": MlflowTracker,
    "trackio": TrackioTracker,
}
STATE_FILE = "trackers.json"
INSTALL = "pip install 'rlft[tracking]'"


class Trackers:
    """The run's trackers as the harness drives them; empty for ranks other than 0 and for
    recipes without a ``log:`` section (every call is then a no-op)."""

    def __init__(self, trackers: dict[str, Tracker] | None = None, path: Path | None = None,
                 state: dict[str, dict[str, Any]] | None = None) -> None:
        self.trackers = dict(trackers or {})
        self.path = path
        self.state = state or {}
        self.audit: Any = None  # the run's AuditLog once the session has opened it
        self.closed = False
        if self.trackers:  # a run that dies before run_trainer still ends its tracker runs
            atexit.register(self.close, failed=True)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """A metrics.jsonl row (or the base evaluation at step 0) to every tracker that does not
        have ``step`` yet."""
        if not self.trackers:
            return
        values = scalar_metrics(metrics)
        for name, tracker in list(self.trackers.items()):
            if step > self.last_step(name) and self.call(name, step, tracker.log, values, step):
                self.state[name]["last_step"] = step
        self.save()

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        """An evaluation's sample completions, logged before that step's metrics."""
        for name, tracker in list(self.trackers.items()):
            if samples and step > self.last_step(name):
                self.call(name, step, tracker.log_samples, samples, step)

    def close(self, failed: bool = False) -> None:
        """End every tracker run (``failed``: the run stopped with an error); idempotent."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.close(failed=failed)
            except Exception as exc:  # the run is over either way: say so, do not raise
                self.report(name, self.last_step(name), exc)
        self.trackers.clear()

    def last_step(self, name: str) -> int:
        return int(self.state.get(name, {}).get("last_step", -1))

    def call(self, name: str, step: int, method: Callable[..., None], *args: Any) -> bool:
        """``method(*args)``; a tracker that raises is reported once, closed and dropped."""
        try:
            method(*args)
            return True
        except Exception as exc:  # no failure of a tracker library may stop training
            tracker = self.trackers.pop(name)
            self.report(name, step, exc)
            with contextlib.suppress(Exception):  # already broken: its close may fail too
                tracker.close(failed=True)
            return False

    def report(self, name: str, step: int, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        print(f"rlft: the {name} tracker failed at step {step} and is skipped for the rest of this run "
              f"({error}). metrics.jsonl and the other trackers still get every step.", file=sys.stderr)
        self.state.setdefault(name, {})["error"] = f"step {step}: {error}"
        try:
            if self.audit is not None:
                self.audit.append("tracker_failed", tracker=name, step=step, error=error)
            self.save()
        except OSError:  # at interpreter exit the run folder may be gone; stderr has it
            pass

    def save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, self.state)


def check_installed(log: LogConfig) -> None:
    """Before the run folder is touched: every named tracker's library is installed."""
    for name in tracker_names(log):
        library = TRACKERS[name].library
        if importlib.util.find_spec(library) is None:
            raise RlftError(not_installed(name, library))


def start_trackers(log: LogConfig, run_dir: Path, params: dict[str, Any]) -> Trackers:
    """Start the trackers ``log.report_to`` names, each continuing its run of ``RUN/trackers.json``
    when there is one. One that cannot start raises an RlftError after the others are closed and
    what they had created in the run folder is removed."""
    names = tracker_names(log)
    if not names:
        return Trackers()
    path = run_dir / STATE_FILE
    saved: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    created = {p for name in names for p in TRACKERS[name].creates if not (run_dir / p).exists()}
    if not path.exists():
        created.add(STATE_FILE)
    started: dict[str, Tracker] = {}
    try:
        for name in names:
            how = TrackerStart(run_dir, log, log.run_name or run_dir.resolve().name, params, saved.get(name, {}))
            started[name] = start_one(name, how)
    except BaseException:
        for tracker in started.values():
            tracker.close(failed=True)
        for leftover in created:  # only what this attempt created: a fixed recipe can start again
            target = run_dir / leftover
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        raise
    state = {name: {**saved.get(name, {}), **tracker.state()} for name, tracker in started.items()}
    for name in state:
        state[name].pop("error", None)
    trackers = Trackers(started, path, state)
    trackers.save()
    for name, tracker in started.items():
        print(f"rlft: logging to {name}: {tracker.where}", file=sys.stderr)
    return trackers


def start_one(name: str, how: TrackerStart) -> Tracker:
    kind = TRACKERS[name]
    try:
        return kind.start(how)
    except RlftError:
        raise
    except ImportError as exc:
        raise RlftError(f"{not_installed(name, kind.library)} ({exc})") from None
    except Exception as exc:
        raise RlftError(
            f"The {name} tracker could not start ({type(exc).__name__}: {exc}). {kind.fix} "
            f"Or remove {name} from log.report_to."
        ) from None


def tracker_names(log: LogConfig) -> list[str]:
    """The trackers to start, in the recipe's order, each once."""
    return [name for name in dict.fromkeys(log.report_to) if name != JSONL]


def not_installed(name: str, library: str) -> str:
    return (f"log.report_to names {name}, but the {library} package is not installed. Install the trackers "
            f"with `{INSTALL}`, or remove {name} from log.report_to.")

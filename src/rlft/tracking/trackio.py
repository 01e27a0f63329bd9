"""Trackio: a local SQLite database, no network; ``RUN/trackio`` unless ``TRACKIO_DIR`` says where
(view it with ``TRACKIO_DIR=RUN/trackio trackio show --project PROJECT``)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from rlft.tracking.base import TrackerStart, sample_table

FOLDER = "trackio"


def import_trackio(folder: Path) -> Any:
    """trackio, storing in ``folder``. Trackio reads ``TRACKIO_DIR`` once, when it is first
    imported: the user's ``TRACKIO_DIR`` wins; a process that imported trackio before (a second
    run in one Python session) keeps the folder of that import."""
    if "trackio" in sys.modules or os.environ.get("TRACKIO_DIR"):
        import trackio

        return trackio
    os.environ["TRACKIO_DIR"] = str(folder.resolve())
    try:
        import trackio
    finally:
        del os.environ["TRACKIO_DIR"]
    return trackio


class TrackioTracker:
    """Metrics with their step, the recipe as the run's config, sample completions as a table
    (``eval/samples``); a resumed run continues the run of the same name in the same database.
    Trackio writes from a background thread: a run killed with SIGKILL may lose its last steps."""

    library: ClassVar[str] = "trackio"
    fix: ClassVar[str] = "Check TRACKIO_DIR, TRACKIO_SPACE_ID and TRACKIO_SERVER_URL in the environment (rlft logs locally)."
    creates: ClassVar[tuple[str, ...]] = (FOLDER,)

    def __init__(self, run: Any, trackio: Any, where: str) -> None:
        self.run, self.trackio, self.where = run, trackio, where

    @classmethod
    def start(cls, how: TrackerStart) -> TrackioTracker:
        trackio = import_trackio(how.run_dir / FOLDER)
        storage = Path(trackio.utils.TRACKIO_DIR)
        name = how.saved.get("run_name") or how.run_name
        with contextlib.redirect_stdout(sys.stderr):  # trackio prints; rlft's stdout stays clean
            run = trackio.init(
                project=how.log.project, name=name, config=how.params, resume="allow" if how.saved else "never",
                embed=False, auto_log_cpu=False, auto_log_gpu=False,
            )  # fmt: skip
        where = f"trackio run {run.name} of project {how.log.project} in {storage}"
        where += f" (view: TRACKIO_DIR={storage} trackio show --project {how.log.project})"
        return cls(run, trackio, where)

    def state(self) -> dict[str, Any]:
        return {"run_name": self.run.name, "run_id": self.run.id, "dir": str(self.trackio.utils.TRACKIO_DIR)}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        columns, rows = sample_table(samples)
        self.run.log({"eval/samples": self.trackio.Table(columns=columns, data=rows)}, step=step)

    def close(self, failed: bool = False) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            if self.trackio.context_vars.current_run.get() is self.run:
                self.trackio.finish()  # and forget it, or trackio finishes it again at exit
            else:
                self.run.finish()

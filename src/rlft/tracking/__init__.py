"""Experiment trackers: a run's metrics, recipe and sample completions sent to TensorBoard,
Weights & Biases, MLflow or Trackio as it trains (``log.report_to``; docs/trackers.md).

Each tracker is one small class behind :class:`Tracker`, and its library is imported only when
a recipe names it (``pip install 'rlft[tracking]'`` installs them all). Only rank 0 logs.

  base.py          the Tracker protocol, what a tracker starts from, shared conversions
  trackers.py      TRACKERS (the registry), start_trackers, and Trackers: what the harness drives
  tensorboard.py   event files in RUN/tensorboard
  wandb.py         W&B, offline in RUN/wandb by default
  mlflow.py        MLflow, SQLite store RUN/mlflow.db by default
  trackio.py       Trackio, local database in RUN/trackio
"""

from rlft.tracking.base import Tracker, TrackerStart
from rlft.tracking.trackers import JSONL, TRACKERS, Trackers, check_installed, start_trackers

__all__ = ["JSONL", "TRACKERS", "Tracker", "TrackerStart", "Trackers", "check_installed", "start_trackers"]

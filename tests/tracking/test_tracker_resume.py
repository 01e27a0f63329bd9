"""A run that dies after a step its trackers received, then resumes from the checkpoint before
that step, continues the same tracker runs, and no tracker holds a step twice."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from rlft.trainers.registry import train

pytestmark = pytest.mark.slow

# Metrics a recomputed step reproduces bit-exactly (timings and memory differ between sessions).
EXACT = ("reward/mean", "policy/entropy", "loss/total", "optim/grad_norm", "eval/accuracy", "train/lr")


class Killed(Exception):
    """Stands for the process dying between a step's logging and the next checkpoint."""


def die_after(step: int):
    def on_step(metrics: dict) -> None:
        if metrics["step"] == step:
            raise Killed

    return on_step


def test_resume_continues_every_tracker_run_without_a_duplicate_step(tmp_path, tracked_recipe, read):
    from mlflow import MlflowClient

    trackio_was_imported = "trackio" in sys.modules
    run = tmp_path / "run"
    config = tracked_recipe(run, "log.report_to=[tensorboard, mlflow, wandb, trackio]",
                            f"log.mlflow_tracking_uri=file:{tmp_path / 'mlruns'}", "log.project=resume-test")
    with pytest.raises(Killed):  # step 3 reaches the trackers; the last checkpoint is step 2's
        train(config, progress=False, on_step=die_after(3))
    first = json.loads((run / "trackers.json").read_text())
    assert {name: s["last_step"] for name, s in first.items()} == dict.fromkeys(first, 3)
    assert sorted(first) == ["mlflow", "tensorboard", "trackio", "wandb"]

    summary = train(config, resume=True, progress=False)  # recomputes step 3, then step 4
    assert summary["steps"] == 4
    state = json.loads((run / "trackers.json").read_text())
    for name in state:
        assert state[name]["last_step"] == 4
        assert {k: v for k, v in state[name].items() if k != "last_step"} == \
            {k: v for k, v in first[name].items() if k != "last_step"}, f"{name} started another run"
    logged = read.logged(run)
    expected = {key: {s: row[key] for s, row in logged.items() if key in row} for key in EXACT}
    assert sorted(expected["reward/mean"]) == [1, 2, 3, 4] and sorted(expected["eval/accuracy"]) == [0, 2, 4]

    # TensorBoard: one event file per session, each (metric, step) once across them
    events = read.tensorboard_events(run / "tensorboard")
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert max(Counter((tag, step) for tag, step, _ in events).values()) == 1
    for key, values in expected.items():
        assert {s: v for tag, s, v in events if tag == key} == pytest.approx(values, rel=1e-6), key

    # MLflow: the same run, every metric's history without a repeated step
    client = MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"])
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("resume-test").experiment_id])
    assert mlflow_run.info.run_id == state["mlflow"]["run_id"] and mlflow_run.info.status == "FINISHED"
    for key, values in expected.items():
        history = client.get_metric_history(mlflow_run.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == sorted(values.items()), key
    assert mlflow_run.data.tags.get("rlft.changed_on_resume") is None  # same recipe both times

    # W&B offline: a run folder per session under RUN/wandb, both of the one run id, the recipe as config
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(state["wandb"]["run_id"]) for f in folders)
    sessions = read.wandb_sessions(run)
    assert [start["run_id"] for start, _ in sessions] == [state["wandb"]["run_id"]] * 2
    assert sessions[0][0]["config"]["update"]["train.steps"] == 4
    history = [row for _, rows in sessions for row in rows]
    for key, values in expected.items():
        steps = [row["_step"] for row in history if key in row]
        assert sorted(steps) == sorted(values), key  # each step once
        assert {row["_step"]: row[key] for row in history if key in row} == pytest.approx(values), key
    assert [row["_step"] for row in history if row.get("eval/samples._type") == "table-file"] == [2, 4]

    # Trackio: one run of that name in RUN/trackio (unless this process imported trackio earlier)
    from trackio.sqlite_storage import SQLiteStorage

    if not trackio_was_imported:
        assert state["trackio"]["dir"] == str((run / "trackio").resolve())
    assert SQLiteStorage.get_runs("resume-test") == [state["trackio"]["run_name"]]
    rows = SQLiteStorage.get_logs("resume-test", state["trackio"]["run_name"])
    for key, values in expected.items():
        steps = [row["step"] for row in rows if key in row]
        assert sorted(steps) == sorted(values), key  # each step once
        assert {row["step"]: row[key] for row in rows if key in row} == pytest.approx(values), key
    assert [row["step"] for row in rows if "eval/samples" in row] == [2, 4]

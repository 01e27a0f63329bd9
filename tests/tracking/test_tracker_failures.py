"""A tracker that cannot start stops the run before any training with one message naming the fix;
a tracker that breaks mid-run is reported once and training goes on without it."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from rlft.cli.main import main
from rlft.errors import RlftError
from rlft.trainers.registry import train

pytestmark = pytest.mark.slow


def test_a_tracker_that_is_not_installed_stops_the_cli_before_anything_is_written(tmp_path, tiny_recipe,
                                                                                  monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as if it were not installed
    run = tmp_path / "run"
    sets = [a for r in [*tiny_recipe, "log.report_to=[jsonl, wandb]"] for a in ("--set", r)]
    assert main(["demo", "--run-dir", str(run), "--no-progress", *sets]) == 2
    err = capsys.readouterr().err
    assert "log.report_to names wandb, but the wandb package is not installed" in err
    assert "pip install 'rlft[tracking]'" in err and "Traceback" not in err
    assert not run.exists() or not any(run.iterdir())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_bad_mlflow_store_stops_before_training_and_the_corrected_recipe_starts_in_the_same_folder(
    tmp_path, tracked_recipe
):
    run = tmp_path / "run"
    bad = {
        "nosuch://store": r"The mlflow tracker could not start \(.*unsupported URI 'nosuch://store'.*\)\. "
                          r"Check log.mlflow_tracking_uri",
        f"http://127.0.0.1:{closed_port()}": r"no MLflow server answers at 127\.0\.0\.1:\d+ .*Start it",
    }
    for uri, message in bad.items():
        with pytest.raises(RlftError, match=message):
            train(tracked_recipe(run, "log.report_to=[tensorboard, mlflow]", f"log.mlflow_tracking_uri={uri}"),
                  progress=False)
        # nothing trained or recorded, and what TensorBoard had started is gone again (the lock
        # file stays: deleting a lock file races with a process about to take it)
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml"]
    summary = train(tracked_recipe(run, "log.report_to=[tensorboard, mlflow]",
                                   f"log.mlflow_tracking_uri=file:{tmp_path / 'mlruns'}"), progress=False)
    assert summary["steps"] == 4 and json.loads((run / "trackers.json").read_text())["mlflow"]["last_step"] == 4


def test_online_wandb_without_credentials_stops_before_training(tmp_path, tracked_recipe, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved W&B login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run = tmp_path / "run"
    with pytest.raises(RlftError, match=r"log.wandb_mode=online.*`wandb login` or set WANDB_API_KEY.*offline"):
        train(tracked_recipe(run, "log.report_to=[wandb]", "log.wandb_mode=online"), progress=False)
    assert not (run / "base_model").exists() and not (run / "wandb").exists()


def test_a_tracker_that_breaks_mid_run_is_reported_once_and_the_run_finishes(tmp_path, tracked_recipe, read,
                                                                             monkeypatch, capsys):
    from mlflow import MlflowClient

    def server_gone(*args, **kwargs):
        raise ConnectionError("the MLflow server went away")

    def break_mlflow_after_step_1(metrics):
        if metrics["step"] == 1:
            monkeypatch.setattr(MlflowClient, "log_batch", server_gone)

    run = tmp_path / "run"
    config = tracked_recipe(run, "log.report_to=[tensorboard, mlflow]", f"log.mlflow_tracking_uri=file:{tmp_path / 'mlruns'}")
    summary = train(config, progress=False, on_step=break_mlflow_after_step_1)
    assert summary["steps"] == 4 and (run / "final_model").is_dir()
    err = capsys.readouterr().err
    assert err.count("tracker failed") == 1
    assert "the mlflow tracker failed at step 2 and is skipped for the rest of this run " \
           "(ConnectionError: the MLflow server went away)" in err
    audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
    failures = [r["fields"] for r in audit if r["event"] == "tracker_failed"]
    assert failures == [{"tracker": "mlflow", "step": 2, "error": "ConnectionError: the MLflow server went away"}]
    state = json.loads((run / "trackers.json").read_text())
    assert state["mlflow"]["last_step"] == 1 and state["mlflow"]["error"].startswith("step 2: ConnectionError")
    assert state["tensorboard"]["last_step"] == 4  # the other tracker got every step
    assert {s for tag, s, _ in read.tensorboard_events(run / "tensorboard") if tag == "policy/entropy"} == {1, 2, 3, 4}
    mlflow_run = MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"]).get_run(state["mlflow"]["run_id"])
    assert mlflow_run.info.status == "FAILED"
    assert [m.step for m in MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"]).get_metric_history(
        mlflow_run.info.run_id, "policy/entropy")] == [1]

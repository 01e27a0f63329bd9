"""MLflow: one run in the experiment ``log.project`` of the store ``log.mlflow_tracking_uri``
(empty: the SQLite store ``RUN/mlflow.db``, its artifacts in ``RUN/mlartifacts``)."""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

from rlft.errors import RlftError
from rlft.tracking.base import TrackerStart, param_values, sample_table

STORE = "mlflow.db"
ARTIFACTS = "mlartifacts"
MAX_PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch
MAX_PARAM_LENGTH = 6000  # MLflow refuses longer parameter values


def default_uri(run_dir: Path) -> str:
    """SQLite in the run folder. MLflow 3 refuses a ``file:`` store unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set, so the default is a database, as MLflow recommends."""
    return f"sqlite:///{(run_dir / STORE).resolve().as_posix()}"


def mlflow_key(key: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, ``_ - . / : space``):
    ``eval/pass@4`` -> ``eval/pass_at_4``; anything else becomes ``_``."""
    return re.sub(r"[^\w/.\- :]", "_", key.replace("@", "_at_"))


def check_server(uri: str) -> None:
    """An http(s) store that does not answer fails in seconds (MLflow itself retries for minutes)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=10).close()
    except OSError as exc:
        raise RlftError(
            f"log.mlflow_tracking_uri={uri}: no MLflow server answers at {parts.hostname}:{port} ({exc}). "
            "Start it (mlflow server ...), correct the URL, or leave log.mlflow_tracking_uri empty to log "
            "to sqlite RUN/mlflow.db."
        ) from None


class MlflowTracker:
    """Metrics with their step, the recipe as parameters (a resumed run adds new fields and tags
    the ones it changed, since MLflow parameters cannot change), sample completions as a table
    artifact per evaluation (``eval/samples_step_N.json``, the run's Artifacts tab)."""

    library: ClassVar[str] = "mlflow"
    fix: ClassVar[str] = ("Check log.mlflow_tracking_uri: a sqlite:///PATH.db or file:PATH store, or the URL of a running "
           "MLflow server; leave it empty for sqlite RUN/mlflow.db.")
    creates: ClassVar[tuple[str, ...]] = (STORE, ARTIFACTS)

    def __init__(self, client: Any, run_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = client, run_id, uri
        self.where = f"MLflow run {run_id} in {uri} (view: mlflow ui --backend-store-uri {uri})"

    @classmethod
    def start(cls, how: TrackerStart) -> MlflowTracker:
        from mlflow import MlflowClient  # mlflow-skinny is enough to log

        uri = how.log.mlflow_tracking_uri or default_uri(how.run_dir)
        if uri.startswith("file:"):  # naming a file store in the recipe is the opt-in MLflow 3 asks for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        check_server(uri)
        client = MlflowClient(tracking_uri=uri)
        params = {mlflow_key(k): str(v)[:MAX_PARAM_LENGTH] for k, v in param_values(how.params).items()}
        run_id = how.saved.get("run_id") if how.saved.get("tracking_uri") == uri else None
        if run_id:  # a resumed rlft run continues its MLflow run
            logged = client.get_run(run_id).data.params
            client.update_run(run_id, status="RUNNING")
            changed = [f"{k}: {logged[k]} -> {v}" for k, v in params.items() if k in logged and logged[k] != v]
            if changed:
                client.set_tag(run_id, "rlft.changed_on_resume", "; ".join(changed))
            params = {k: v for k, v in params.items() if k not in logged}
        else:
            experiment = client.get_experiment_by_name(how.log.project)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:  # in the default store, artifacts stay in the run folder too (not ./mlruns)
                location = None if how.log.mlflow_tracking_uri else (how.run_dir / ARTIFACTS).resolve().as_uri()
                experiment_id = client.create_experiment(how.log.project, artifact_location=location)
            run_id = client.create_run(experiment_id, run_name=how.run_name,
                                       tags={"rlft.run_dir": str(how.run_dir.resolve())}).info.run_id
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_CALL):
            client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_CALL])
        return cls(client, run_id, uri)

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_key(k), v, now, step) for k, v in metrics.items()])

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        columns, rows = sample_table(samples)
        table = {column: [row[i] for row in rows] for i, column in enumerate(columns)}
        self.client.log_table(self.run_id, data=table, artifact_file=f"eval/samples_step_{step:07d}.json")

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

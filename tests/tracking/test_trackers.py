"""Trackers receive what the run logs: a short run read back with TensorBoard's and MLflow's own
readers equals its metrics.jsonl, base_eval.json, samples.jsonl and resolved recipe."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest
import yaml

from rlft.config import LogConfig
from rlft.tracking import JSONL, TRACKERS
from rlft.tracking.base import param_values, samples_markdown, scalar_metrics
from rlft.tracking.mlflow import mlflow_key
from rlft.trainers.registry import train
from rlft.trainers.session import flatten


def test_report_to_choices_are_the_registry_and_jsonl():
    (choices,) = typing.get_args(typing.get_type_hints(LogConfig)["report_to"])
    assert set(typing.get_args(choices)) == {JSONL, *TRACKERS}


def test_conversions_by_hand():
    assert mlflow_key("eval/pass@4") == "eval/pass_at_4"
    assert mlflow_key("policy/kl_coef") == "policy/kl_coef" and mlflow_key("a%b c:d") == "a_b c:d"
    assert param_values({"a": None, "b": ["jsonl"], "c": 0.5, "d": True, "e": "x"}) == {
        "a": "null", "b": '["jsonl"]', "c": 0.5, "d": True, "e": "x"}
    assert scalar_metrics({"step": 3, "reward/mean": 1, "train/skipped": True, "note": "x"}) == {
        "reward/mean": 1.0, "train/skipped": 1.0}
    table = samples_markdown([{"prompt": "1|2=", "completion": "a\nb", "reward": 0.25}, {"prompt": "3="}])
    assert table == ("| prompt | completion | reward |\n|---|---|---|\n| 1\\|2= | a<br>b | 0.25 |\n"
                     "| 3= |   |   |")


@pytest.mark.slow
def test_tensorboard_and_mlflow_hold_every_metric_the_recipe_and_the_samples(tmp_path, tracked_recipe, read):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    train(tracked_recipe(run, "log.report_to=[jsonl, tensorboard, mlflow]"), progress=False)
    logged = read.logged(run)
    assert sorted(logged) == [0, 1, 2, 3, 4] and "eval/accuracy" in logged[0] and "reward/mean" in logged[1]
    expected: dict[str, dict[int, float]] = {}  # metric -> {step: value}, as the run logged it
    for step, row in logged.items():
        for key, value in row.items():
            expected.setdefault(key, {})[step] = float(value)

    # TensorBoard's reader: every metric at exactly its steps, with its value (stored as float32)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for key, values in expected.items():
        assert {e.step: e.value for e in events.Scalars(key)} == {s: float(np.float32(v)) for s, v in values.items()}, key
    samples = read.jsonl(run / "samples.jsonl")
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("eval/samples/text_summary")}
    assert sorted(texts) == [2, 4] == sorted({s["step"] for s in samples})
    for sample in samples:
        assert f"| {sample['prompt']} | {sample['completion']} |" in texts[sample["step"]]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert hparams["train.steps"].number_value == 4
    assert hparams["log.report_to"].string_value == '["jsonl", "tensorboard", "mlflow"]'

    # MLflow's client: one finished run in experiment "rlft" of the default store RUN/mlflow.db
    state = json.loads((run / "trackers.json").read_text())
    assert state["mlflow"]["tracking_uri"] == f"sqlite:///{run.resolve()}/mlflow.db"
    assert state["mlflow"]["last_step"] == state["tensorboard"]["last_step"] == 4
    client = MlflowClient(tracking_uri=state["mlflow"]["tracking_uri"])
    mlflow_run = client.get_run(state["mlflow"]["run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "run"
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "rlft"
    assert set(mlflow_run.data.metrics) == set(expected)
    for key, values in expected.items():
        history = client.get_metric_history(mlflow_run.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == sorted(values.items()), key
    recipe = flatten(yaml.safe_load((run / "config.yaml").read_text()))
    as_text = {k: v if isinstance(v, str) else json.dumps(v) if v is None or isinstance(v, (list, dict)) else str(v)
               for k, v in recipe.items()}
    assert mlflow_run.data.params == as_text
    tables = [f.path for f in client.list_artifacts(mlflow_run.info.run_id, "eval")]
    assert tables == ["eval/samples_step_0000002.json", "eval/samples_step_0000004.json"]

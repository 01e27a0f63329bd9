"""The supervised warm start runs in the harness: a run killed in the middle of it resumes to the
same base model, and a learning rate that blows the weights up stops it with a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from rlft.config import config_from_dict
from rlft.errors import NonFiniteError
from rlft.trainers.registry import train

WARM = ["warm_start.steps=30", "checkpoint.every=4", "train.steps=0"]


def _cli(tiny_recipe, run_dir, *extra):
    sets = [a for r in [*tiny_recipe, *WARM] for a in ("--set", r)]
    return subprocess.Popen([sys.executable, "-m", "rlft.cli.main", "demo", "--no-progress", "--run-dir",
                             str(run_dir), *sets, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_run_killed_during_the_warm_start_resumes_it_to_the_same_base_model(tmp_path, tiny_recipe):
    clean = _cli(tiny_recipe, tmp_path / "clean")
    assert clean.wait(timeout=300) == 0, clean.stdout.read()

    killed = _cli(tiny_recipe, tmp_path / "killed")
    metrics = tmp_path / "killed" / "warm_start" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 10):
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "base_model").exists(), "the warm start finished before it was killed"
    assert list((tmp_path / "killed" / "warm_start" / "checkpoints").glob("step_*"))

    resumed = _cli(tiny_recipe, tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    clean_weights = load_file(str(tmp_path / "clean" / "base_model" / "model.safetensors"))
    resumed_weights = load_file(str(tmp_path / "killed" / "base_model" / "model.safetensors"))
    assert all(torch.equal(clean_weights[k], resumed_weights[k]) for k in clean_weights)
    losses = [json.loads(line)["sft/loss"] for line in metrics.read_text().splitlines()]
    clean_losses = [json.loads(line)["sft/loss"]
                    for line in (tmp_path / "clean" / "warm_start" / "metrics.jsonl").read_text().splitlines()]
    assert losses == clean_losses and len(losses) == 30  # each step logged once
    summary = json.loads((tmp_path / "killed" / "warm_start" / "summary.json").read_text())
    assert summary["final_sft_loss"] < summary["base_sft_loss"]  # it learned the answers' format


def test_an_exploding_warm_start_stops_with_a_clear_error(tmp_path, tiny_recipe):
    config = config_from_dict({}, [*tiny_recipe, f"run_dir={tmp_path / 'run'}", "warm_start.steps=20",
                                   "warm_start.learning_rate=1e30"])
    with pytest.raises(NonFiniteError, match=r"warm_start.learning_rate"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "base_model").exists()  # no NaN model is ever saved


def test_the_warm_start_bar_shows_the_latest_held_out_loss(tmp_path, tiny_recipe, capsys):
    config = config_from_dict({}, [*tiny_recipe, "warm_start.steps=6", "eval.every=3", "train.steps=0",
                                   f"run_dir={tmp_path / 'run'}"])  # fmt: skip
    train(config, progress=True)
    folder = tmp_path / "run" / "warm_start"
    evals = [json.loads(line) for line in (folder / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [3, 6]  # every eval.every steps and at the end
    base = json.loads((folder / "base_eval.json").read_text())["eval/sft_loss"]
    shown = [part.split("held-out sft_loss=")[1][:5] for part in capsys.readouterr().err.split("\r")
             if "held-out sft_loss=" in part]
    assert f"{evals[0]['eval/sft_loss']:.3f}" in shown and shown[-1] != f"{base:.3f}"

"""Learning-rate schedules as a run uses them: the rates logged as train/lr follow the schedule's
formula (RL steps and warm start), the default stays constant, and a run killed with SIGKILL and
resumed logs the rates of an uninterrupted one."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlft.config import config_from_dict
from rlft.errors import ConfigError
from rlft.trainers.registry import train


def lrs(path: Path) -> list[float]:
    return [json.loads(line)["train/lr"] for line in path.read_text().splitlines()]


def test_cosine_with_warmup_and_a_linear_warm_start_follow_their_formulas(tmp_path, tiny_recipe):
    config = config_from_dict({}, [*tiny_recipe, "train.steps=6", "train.learning_rate=0.01", "train.lr_scheduler=cosine",
                                   "train.warmup_steps=2", "warm_start.steps=5", "warm_start.learning_rate=0.002",
                                   "warm_start.lr_scheduler=linear", f"run_dir={tmp_path / 'run'}"])
    train(config, progress=False)
    peak, warmup, total = 0.01, 2, 6
    expected = [peak * k / warmup if k < warmup else
                peak * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup))) for k in range(total)]
    assert lrs(tmp_path / "run" / "metrics.jsonl") == pytest.approx(expected, rel=1e-6, abs=1e-12)
    # The warm start's own schedule: linear decay from its rate to 0 over its 5 steps, no warm-up.
    assert lrs(tmp_path / "run" / "warm_start" / "metrics.jsonl") == pytest.approx([0.002 * (1 - k / 5) for k in range(5)])


def test_the_default_schedule_is_the_constant_learning_rate(tmp_path, tiny_recipe):
    config = config_from_dict({}, [*tiny_recipe, "train.steps=3", "warm_start.steps=0", "train.learning_rate=3e-4",
                                   f"run_dir={tmp_path / 'run'}"])
    train(config, progress=False)
    assert lrs(tmp_path / "run" / "metrics.jsonl") == [3e-4] * 3


def test_a_warm_up_on_a_constant_schedule_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="constant_with_warmup"):
        config_from_dict({}, ["train.warmup_ratio=0.1"])
    with pytest.raises(ConfigError, match="warm_start.lr_scheduler"):
        config_from_dict({}, ["warm_start.warmup_steps=3"])


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_learning_rates_of_an_uninterrupted_one(tmp_path, tiny_recipe):
    def command(run: Path, resume: bool = False) -> list[str]:
        args = [sys.executable, "-m", "rlft", "demo", "--no-progress", "--run-dir", str(run)]
        for item in [*tiny_recipe, "train.steps=10", "checkpoint.every=2", "eval.every=100", "train.lr_scheduler=cosine",
                     "train.warmup_steps=3", "train.learning_rate=0.01"]:
            args += ["--set", item]
        return args + (["--resume"] if resume else [])

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert subprocess.run(command(whole), capture_output=True, env=env, timeout=300).returncode == 0
    started = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_0000004").exists() and time.time() < deadline:
        time.sleep(0.02)
    started.send_signal(signal.SIGKILL)
    started.wait(timeout=60)
    assert not (killed / "summary.json").exists(), "the run ended before it could be killed"
    done = subprocess.run(command(killed, resume=True), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert lrs(killed / "metrics.jsonl") == lrs(whole / "metrics.jsonl")
    assert len(set(lrs(whole / "metrics.jsonl"))) > 5  # the rate did change along the run

"""A tiny finished run, trained once per session by `rlft demo` (about 10 s on 2 cores)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TINY_RUN = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
    "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.steps=6",
    "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4",
    "rollout.max_new_tokens=4", "eval.every=3", "checkpoint.every=3", "train.torch_threads=1",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("responsible") / "run"
    args = [sys.executable, "-m", "rlft.cli.main", "demo", "--run-dir", str(run), "--no-progress"]
    for override in TINY_RUN:
        args += ["--set", override]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return run

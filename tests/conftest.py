"""Shared fixtures: a tiny model built once per test session (no downloads), and a tiny finished
run for the tests that read one (report, card, bias audit)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised tiny Qwen2 model + tokenizer saved with save_pretrained."""
    from transformers.utils import logging

    from rlft.config import TinyModelConfig
    from rlft.models.tiny import build_tiny_model
    from rlft.tasks import ArithmeticTask

    logging.disable_progress_bar()
    out = tmp_path_factory.mktemp("tiny_model")
    small = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    return build_tiny_model(small, ArithmeticTask().corpus(500), out, seed=0)


# A recipe small enough to train in a few seconds on 2 cores.
TINY_RECIPE = [
    "model.tiny.hidden_size=64",
    "model.tiny.num_layers=2",
    "model.tiny.intermediate_size=128",
    "warm_start.steps=10",
    "warm_start.batch_size=16",
    "task.eval_size=16",
    "train.steps=6",
    "train.batch_size=16",
    "train.micro_batch_size=8",
    "algorithm.group_size=4",
    "rollout.max_new_tokens=4",
    "eval.every=3",
    "checkpoint.every=2",
    "train.torch_threads=1",
]


@pytest.fixture
def tiny_recipe() -> list[str]:
    return list(TINY_RECIPE)


# A tiny finished run, trained once per session by `rlft demo` (about 10 s on 2 cores).
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


# A real headless Chromium (Debian's package, or RLFT_CHROMIUM), driven by Playwright, for the tests
# of the pages rlft serves or writes (feedback app, model card, report, rlft compare).
CHROMIUM = os.environ.get("RLFT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """A launched Chromium; the test skips, with the reason, where there is none."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; `make system-deps`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (rlft[feedback])")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip where no CUDA device is visible (this project's CI)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu); none is visible")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs default to ``train.device: auto``; a test not marked ``gpu`` is pinned to the CPU even
    on a machine with a GPU (its figures were measured there), subprocesses included."""
    if request.node.get_closest_marker("gpu") is not None:
        return
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

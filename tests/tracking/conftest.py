"""The recipe of a short tracked run, and readers of what each tracker wrote (``read``), each
through the tracker's own reader."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rlft.config import RecipeConfig, config_from_dict


@pytest.fixture
def tracked_recipe(tiny_recipe: list[str]) -> Callable[..., RecipeConfig]:
    """``tracked_recipe(run, *overrides)``: the tiny recipe, 4 RL steps after a 5-step warm start,
    evaluating and checkpointing every 2 steps (a few seconds on 2 cores)."""

    def make(run: Path, *overrides: str) -> RecipeConfig:
        return config_from_dict({}, [
            *tiny_recipe, "warm_start.steps=5", "train.steps=4", "eval.every=2", "checkpoint.every=2",
            f"run_dir={run}", *overrides,
        ])  # fmt: skip

    return make


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logged_by_step(run: Path) -> dict[int, dict[str, float]]:
    """What the run logged, by step: base_eval.json at step 0, then metrics.jsonl's rows."""
    steps = {0: json.loads((run / "base_eval.json").read_text())}
    for row in read_jsonl(run / "metrics.jsonl"):
        steps[row["step"]] = {k: v for k, v in row.items() if k != "step"}
    return steps


def tensorboard_events(logdir: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in every event file, in file order, duplicates kept
    (TensorBoard's EventAccumulator would hide a repeated step by purging)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():  # the events as written
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    events.append((value.tag, event.step, value.simple_value))
    return events


def wandb_records(folder: Path) -> list[dict[str, Any]]:
    """The records of an offline W&B run folder, read by W&B's own reader (``wandb leet inspect``)."""
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(folder)],
                          capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def wandb_sessions(run: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(run record, history rows) of each offline W&B session under RUN/wandb, oldest first."""
    sessions = []
    for folder in sorted((run / "wandb").glob("offline-run-*")):
        records = wandb_records(folder)
        (start,) = [r["run"] for r in records if r["type"] == "run"]
        sessions.append((start, [r["history"]["item"] for r in records if r["type"] == "history"]))
    return sessions


@pytest.fixture
def read() -> SimpleNamespace:
    return SimpleNamespace(jsonl=read_jsonl, logged=logged_by_step, tensorboard_events=tensorboard_events,
                           wandb_sessions=wandb_sessions)

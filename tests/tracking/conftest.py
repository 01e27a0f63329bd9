"""The recipe of a short tracked run, and readers of what each tracker wrote (``read``) through
the trackers' own libraries; W&B's offline files, for which the SDK has no reader, through its
record format and protobuf messages."""

from __future__ import annotations

import json
import struct
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


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline ``run-ID.wandb`` file: W&B's LevelDB-style log (a 7-byte file
    header, 32 KiB blocks, each record chunk behind a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B data file"
    records, chunks, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += block - pos % block
            continue
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def wandb_history(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """(run id, history row) of every offline W&B session under RUN/wandb, oldest first."""
    rows = []
    for folder in sorted((run / "wandb").glob("offline-run-*")):
        for path in folder.glob("run-*.wandb"):
            for record in wandb_records(path):
                if record.WhichOneof("record_type") == "history":
                    row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                    rows.append((path.stem.removeprefix("run-"), row))
    return rows


@pytest.fixture
def read() -> SimpleNamespace:
    return SimpleNamespace(jsonl=read_jsonl, logged=logged_by_step, tensorboard_events=tensorboard_events,
                           wandb_history=wandb_history)

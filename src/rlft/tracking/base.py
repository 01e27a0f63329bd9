"""What every tracker implements, and the conversions they share.

A tracker is started once per process with :class:`TrackerStart` (the run folder, the ``log:``
section, the flattened resolved recipe and what ``RUN/trackers.json`` kept of its earlier run),
then receives each step's metrics and each evaluation's sample completions. Step numbers are the
harness's: 0 is the base model's evaluation (``base_eval.json``), N the metrics.jsonl row of step N.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlft.config import LogConfig

Scalar = str | int | float | bool


@dataclass(frozen=True)
class TrackerStart:
    """Everything a tracker starts from."""

    run_dir: Path
    log: LogConfig
    run_name: str
    """``log.run_name``, else the run folder's name."""
    params: dict[str, Any]
    """The resolved recipe, flattened (``{"train.steps": 4, ...}``): the run's hyper-parameters."""
    saved: dict[str, Any] = field(default_factory=dict)
    """This tracker's entry of ``RUN/trackers.json`` (its run id, ...); empty for a new tracker run."""


class Tracker(Protocol):
    """One experiment tracker's run, open from start to ``close``."""

    where: str
    """Where the run's data goes and how to look at it (printed when the run starts)."""

    def state(self) -> dict[str, Any]:
        """What ``RUN/trackers.json`` keeps so that a resumed run continues this tracker run."""
        ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        """Sample completions of the evaluation at ``step``, shown as text where the tracker can."""
        ...

    def close(self, failed: bool = False) -> None: ...


class TrackerKind(Protocol):
    """A tracker class, as the registry holds it."""

    library: str
    """The module imported to use it (``pip install 'rlft[tracking]'`` provides it)."""
    fix: str
    """The recipe setting to look at when it cannot start."""
    creates: tuple[str, ...]
    """What it writes in the run folder by default (removed again when a new run cannot start)."""

    @classmethod
    def start(cls, how: TrackerStart) -> Tracker: ...


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of a metrics.jsonl row, as floats (``step`` is the x-axis, not a
    metric; a bool counts 0/1; text and lists are not metrics)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key != "step" and isinstance(value, (int, float))
    }


def param_values(params: Mapping[str, Any]) -> dict[str, Scalar]:
    """Recipe values a tracker accepts as hyper-parameters: strings, numbers and booleans as
    they are; None, lists and mappings as JSON (``[jsonl]`` -> ``'["jsonl"]'``)."""
    return {
        key: value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
        for key, value in params.items()
    }


def sample_table(samples: list[dict[str, Any]]) -> tuple[list[str], list[list[Scalar]]]:
    """(columns, rows) of sample completions: the keys in first-seen order, one row per sample,
    a missing key as "" and anything that is not a scalar as JSON."""
    columns = list(dict.fromkeys(key for sample in samples for key in sample))

    def cell(value: Any) -> Scalar:
        if value is None:
            return ""
        return value if isinstance(value, (str, int, float, bool)) else json.dumps(value)

    return columns, [[cell(sample.get(column)) for column in columns] for sample in samples]


def samples_markdown(samples: list[dict[str, Any]]) -> str:
    """Sample completions as a Markdown table (TensorBoard's TEXT tab renders it)."""
    columns, rows = sample_table(samples)

    def escape(value: Scalar) -> str:
        if isinstance(value, float) and math.isfinite(value):
            value = f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", "<br>") or " "

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)

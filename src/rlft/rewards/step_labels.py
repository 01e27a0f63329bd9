"""Step labels: what a process reward model trains on, one JSON object per line.

    {"prompt": "Ana has 7 pens, gets 5, doubles them. How many now?\\n",
     "steps": ["+5=12", "*2=24", "#24"],
     "labels": [1.0, 0.75, 1.0]}

``labels`` holds one number in [0, 1] per step: how likely a solution that has written the steps so
far is to reach the right answer. ``rlft prm label`` writes the Math-Shepherd estimate (the
fraction of sampled continuations from the step that reach it; ``rollouts`` says how many were
sampled); a person writes 1 for a good step and 0 for the first wrong one. Other keys are kept
and ignored. Errors name the file, the line and what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlft.errors import ConfigError


@dataclass(frozen=True)
class StepLabels:
    """One labelled solution."""

    prompt: str
    steps: list[str]
    labels: list[float]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def parse_row(row: Any, where: str) -> StepLabels:
    """A labelled solution from one JSON object, or a :class:`ConfigError` naming ``where``."""
    example = 'e.g. {"prompt": "...", "steps": ["2+3=5", "#5"], "labels": [1, 1]}'
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: a row is a JSON object with prompt, steps and labels ({example}).")
    missing = [key for key in ("prompt", "steps", "labels") if key not in row]
    if missing:
        raise ConfigError(f"{where}: the row has no {', '.join(missing)} ({example}).")
    prompt, steps, labels = row["prompt"], row["steps"], row["labels"]
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: prompt must be text, got {type(prompt).__name__}.")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ConfigError(f"{where}: steps must be a non-empty list of non-empty texts ({example}).")
    numbers = isinstance(labels, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels)
    if not numbers or len(labels) != len(steps):
        raise ConfigError(f"{where}: labels must be a list of {len(steps)} numbers, one per step ({example}).")
    bad = [v for v in labels if not (math.isfinite(v) and 0 <= v <= 1)]
    if bad:
        raise ConfigError(f"{where}: label {bad[0]!r} is not in [0, 1] (the chance that the step leads to a right answer).")
    extra = {k: v for k, v in row.items() if k not in ("prompt", "steps", "labels")}
    return StepLabels(prompt, list(steps), [float(v) for v in labels], extra)


def load_step_labels(path: str | Path) -> list[StepLabels]:
    """Every labelled solution of a JSONL file (blank lines skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"Step labels {path} do not exist. Write them with `rlft prm label RECIPE.yaml` or by hand "
                          "(docs/sparse_rewards.md#step-labels).")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc.msg}).") from None
        out.append(parse_row(row, f"{path}:{number}"))
    if not out:
        raise ConfigError(f"{path} has no labelled solutions.")
    return out


def label_row(labels: StepLabels) -> dict[str, Any]:
    """The JSON object of one labelled solution (what :func:`load_step_labels` reads back)."""
    return {"prompt": labels.prompt, "steps": labels.steps, "labels": labels.labels, **labels.extra}

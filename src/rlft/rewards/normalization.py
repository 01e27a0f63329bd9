"""Reward normalisation and clipping.

``batch``:   z-score within the batch, (r - mean) / (std + eps). A constant batch maps to 0.
``running``: z-score with a running mean and std over every batch seen so far (including this
             one), updated with Chan et al.'s parallel variance formula, as OpenAI's RLHF code and
             TRL's ``RunningMoments`` do. Unlike ``batch`` it keeps the reward's sign across a
             batch where every completion is good.
``none``:    unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

NormalizeMode = Literal["none", "batch", "running"]
NORMALIZE_MODES = ("none", "batch", "running")
EPS = 1e-8


@dataclass
class RunningMoments:
    """Running count, mean and (population) variance of every value seen."""

    count: int = 0
    mean: float = 0.0
    var: float = 0.0

    def update(self, values: Sequence[float]) -> None:
        n = len(values)
        if n == 0:
            return
        batch_mean = sum(values) / n
        batch_var = sum((v - batch_mean) ** 2 for v in values) / n
        total = self.count + n
        delta = batch_mean - self.mean
        # Chan, Golub & LeVeque (1979): merge two sets' means and sums of squares.
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


def batch_zscore(values: Sequence[float]) -> list[float]:
    """(v - mean) / (std + eps) over ``values`` (population std)."""
    if not values:
        return []
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / (std + EPS) for v in values]


def normalize(
    values: Sequence[float], mode: NormalizeMode, moments: RunningMoments | None = None
) -> list[float]:
    """Normalise a batch of rewards; ``running`` updates ``moments`` first, then uses them."""
    if mode == "none":
        return list(values)
    if mode == "batch":
        return batch_zscore(values)
    if mode == "running":
        if moments is None:
            raise ValueError("running normalisation needs a RunningMoments")
        moments.update(values)
        return [(v - moments.mean) / (moments.std + EPS) for v in values]
    raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")


def clip(values: Sequence[float], bound: float | None) -> list[float]:
    """Clip to [-bound, bound]; ``None`` leaves the values unchanged."""
    if bound is None:
        return list(values)
    return [min(max(v, -bound), bound) for v in values]

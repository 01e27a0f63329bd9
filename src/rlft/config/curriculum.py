"""The ``task.curriculum`` section: how the curriculum sampler weighs prompts (the sampler itself
is ``rlft.trainers.curriculum``)."""

from __future__ import annotations

from dataclasses import dataclass

from rlft.schema import setting


@dataclass(frozen=True)
class CurriculumConfig:
    """The curriculum of ``task.sampler: curriculum`` (docs/sparse_rewards.md)."""

    ema: float = setting(
        0.5, "Weight of a prompt's newest group in its pass rate: p <- (1 - ema) p + ema * (the group's pass rate).",
        gt=0, le=1,
    )
    floor: float = setting(
        0.02, "Smallest sampling weight of a prompt (the largest, p (1 - p) at p = 1/2, is 0.25): no prompt starves.",
        gt=0, le=0.25,
    )

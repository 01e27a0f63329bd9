"""A new reward type with settings: partial credit for a number close to the answer.

    reward: {type: close_answer, scale: 10}

scores 1.0 for the exact answer, falling linearly to 0.0 at `scale` away (and for a completion
without a number): 57 against 60 with scale 10 scores 0.7. It also reports its two parts, so the
run's metrics show reward/closeness and reward/exact beside the mean reward.

    rlft train examples/plugin/close_answer.yaml --plugin examples/plugin/close_answer_reward.py
"""

from dataclasses import dataclass
from typing import Literal

import rlft
from rlft.rewards import RewardOutput
from rlft.rewards.builtins import parse_number
from rlft.schema import setting


@rlft.register_reward("close_answer")
@dataclass
class CloseAnswer:
    """The fields are the spec's keys, checked like a recipe section (names, types, ranges)."""

    scale: float = setting(10.0, "Distance from the answer at which the score reaches 0.", gt=0)
    which: Literal["first", "last"] = setting("last", "Which number of the completion is its answer.")

    def __call__(self, prompts, completions, *, answers, **context):
        closeness, exact = [], []
        for completion, answer in zip(completions, answers, strict=True):
            got, target = parse_number(completion, self.which), parse_number(answer)
            distance = abs(got - target) if got is not None and target is not None else self.scale
            closeness.append(max(0.0, 1.0 - distance / self.scale))
            exact.append(float(distance == 0))
        return RewardOutput(closeness, {"closeness": closeness, "exact": exact})

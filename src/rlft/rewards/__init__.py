"""Rewards: one batched protocol for rule-based rewards, learned reward models and user functions.

See ``rlft.rewards.base`` for the protocol, ``rlft.rewards.registry`` for ``build_reward`` and
``docs/rewards.md`` for every built-in and its parameters.
"""

from rlft.rewards.base import RewardError, RewardFunction, RewardOutput, RewardSpecError, score
from rlft.rewards.pool import thread_safe
from rlft.rewards.registry import REWARDS, build_reward

__all__ = [
    "REWARDS",
    "RewardError",
    "RewardFunction",
    "RewardOutput",
    "RewardSpecError",
    "build_reward",
    "score",
    "thread_safe",
]

"""A reward held to the recipe's ``reward_limits``: a bound on what it returns, a time limit on
user code.

A finite but huge score (1e308) passes the finite check of :func:`rlft.rewards.score` and then
overflows in the advantages and metrics; a reward of one's own that never returns would hang the
run without a word. :class:`LimitedReward` turns both into a :class:`RewardError` that names the
reward, the value (or the time) and the setting to change.

The time limit runs the reward in a worker thread and waits ``timeout`` seconds for it. Python
cannot stop a thread, so a reward that hangs keeps its thread until the process exits; the run
itself ends at once with the error. Only user code is timed: rlft's own rewards run in the calling
thread, where ``math_verify`` keeps its own per-answer time limits (they need the main thread).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rlft.rewards.base import (
    RewardError,
    RewardFunction,
    RewardOutput,
    as_output,
    describe_reward,
    exit_error,
    resolve,
)
from rlft.rewards.builtins import PythonFunction, WeightedSum
from rlft.rewards.fairness import FairnessPenalty
from rlft.rewards.pool import can_pool, pooled_call


class LimitedReward:
    """``reward`` held to ``max_abs`` (None: no bound) and, when it runs user code, to ``timeout``
    seconds per call (None: no limit); with ``workers > 1`` an ``async def`` or thread-safe reward
    of the user's scores a batch in that many concurrent shares (:mod:`rlft.rewards.pool`)."""

    def __init__(self, reward: RewardFunction, max_abs: float | None, timeout: float | None, workers: int = 1) -> None:
        self.reward, self.max_abs = reward, max_abs
        self.timeout = timeout if runs_user_code(reward) else None
        self.workers = workers if runs_user_code(reward) and can_pool(reward) else 1
        self.name = describe_reward(reward)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> RewardOutput:
        raw = self._call(prompts, completions, context)
        out = as_output(raw, self.name)
        if self.max_abs is not None:
            self._check_bound(out, prompts, completions)
        return out

    def _call(self, prompts: Sequence[str], completions: Sequence[str], context: dict[str, Any]) -> Any:
        if self.workers > 1 and len(completions) > 1:
            return pooled_call(self.reward, prompts, completions, context, self.workers, self.timeout, self.name)
        if self.timeout is None:
            return resolve(self.reward(prompts, completions, **context))
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = resolve(self.reward(prompts, completions, **context))
            except BaseException as exc:  # SystemExit too: a thread would swallow it silently
                box["error"] = exc

        worker = threading.Thread(target=work, name=f"rlft-reward-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise RewardError(
                f"Reward {self.name} did not return within reward_limits.timeout={self.timeout:g} s for a batch "
                f"of {len(completions)} completions; the run stops here (the reward's thread cannot be stopped "
                "and is left behind). Look for an endless loop, a network call without a timeout or input(); "
                "or raise reward_limits.timeout (null: no limit)."
            )
        if "error" in box:
            if isinstance(box["error"], SystemExit):
                raise exit_error(self.name, box["error"])
            raise box["error"]
        return box["value"]

    def _check_bound(self, out: RewardOutput, prompts: Sequence[str], completions: Sequence[str]) -> None:
        assert self.max_abs is not None
        named = [("", out.rewards)] + [(f" (component {k!r})", list(v)) for k, v in out.components.items()]
        if out.step_rewards is not None:  # (a dense reward's largest step reward on each row)
            named.append((" (step rewards)", [max((abs(v) for _, v in row), default=0.0) for row in out.step_rewards]))
        for part, values in named:
            for i, value in enumerate(values):
                if isinstance(value, (int, float)) and abs(value) > self.max_abs:
                    raise RewardError(
                        f"Reward {self.name}{part} returned {value:g} for prompt {prompts[i]!r} (completion "
                        f"{completions[i]!r}), beyond reward_limits.max_abs={self.max_abs:g}: advantages and "
                        "metrics computed from it would overflow. Scale the reward down, or raise "
                        "reward_limits.max_abs."
                    )


def bind_task(reward: Any, task: Any) -> None:
    """Hand the run's task to a reward that asks for it with a ``bind_task(task)`` method (the
    process reward takes the task's own reward as its outcome); a held reward is unwrapped."""
    bind = getattr(reward.reward if isinstance(reward, LimitedReward) else reward, "bind_task", None)
    if callable(bind):
        bind(task)


def limit_reward(reward: RewardFunction, max_abs: float | None, timeout: float | None, workers: int = 1) -> LimitedReward:
    """``reward`` held to the limits; a reward already held is held to the new ones instead."""
    inner = reward.reward if isinstance(reward, LimitedReward) else reward
    return LimitedReward(inner, max_abs, timeout, workers)


def runs_user_code(reward: Any) -> bool:
    """Whether scoring with ``reward`` calls code from outside rlft (a ``python`` reward, a callable
    given from Python), directly or inside a weighted or fairness reward."""
    if isinstance(reward, LimitedReward):
        return runs_user_code(reward.reward)
    if isinstance(reward, PythonFunction):
        return True
    if isinstance(reward, WeightedSum):
        return any(runs_user_code(c.reward) for c in reward.components)
    if isinstance(reward, FairnessPenalty):
        return runs_user_code(reward.reward)
    return not type(reward).__module__.startswith("rlft.")

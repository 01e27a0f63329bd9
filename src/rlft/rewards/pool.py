"""Rewards that take time, scored concurrently: ``reward_limits.workers`` shares of a batch at once.

A reward that waits on something (a judge model behind an API, unit tests in a sandbox, a tool)
spends its time idle; scored one batch per call, a step waits for the whole of it. When the reward
is an ``async def`` or declares itself thread-safe (:func:`thread_safe`), :func:`pooled_call`
splits the batch into ``workers`` contiguous shares and scores them at once: in one event loop for
an ``async def``, in a pool of threads otherwise. Each share has ``reward_limits.timeout`` seconds;
a share that does not return in time is scored 0 for each of its completions and counted (the
``timed_out`` component, the metric ``reward/timed_out``): the run goes on. An exception in a
share is the run's error, as with one call.

A thread that overran is left running (Python cannot stop a thread); an overrun ``async`` share is
cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rlft.rewards.base import RewardOutput, as_output, resolve

F = TypeVar("F", bound=Callable[..., Any])


def thread_safe(fn: F) -> F:
    """Declare a reward function safe to call from several threads at once (it keeps no state, or
    guards its own): with ``reward_limits.workers > 1`` a batch's shares are then scored
    concurrently. ``async def`` rewards need no declaration."""
    fn.thread_safe = True  # type: ignore[attr-defined]
    return fn


def _function(reward: Any) -> Any:
    """The user's function behind a reward (a ``python`` reward wraps it)."""
    return getattr(reward, "_fn", reward)


def is_async(reward: Any) -> bool:
    fn = _function(reward)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)  # an async __call__


def declares_thread_safe(reward: Any) -> bool:
    return bool(getattr(_function(reward), "thread_safe", False))


def can_pool(reward: Any) -> bool:
    """Whether a batch of ``reward``'s may be split into concurrent shares."""
    return is_async(reward) or declares_thread_safe(reward)


def shares(n: int, workers: int) -> list[range]:
    """``n`` rows in at most ``workers`` contiguous, non-empty shares of near-equal size."""
    count = max(1, min(workers, n))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(count)]


def pooled_call(
    reward: Any, prompts: Sequence[str], completions: Sequence[str], context: dict[str, Any], workers: int,
    timeout: float | None, name: str,
) -> RewardOutput:
    """``reward`` on the batch in ``workers`` concurrent shares; a share past ``timeout`` seconds
    is scored 0 (component ``timed_out``: 1 on its rows)."""
    parts = shares(len(completions), workers)

    def args(part: range) -> tuple[list[str], list[str], dict[str, Any]]:
        sub = {k: [v[i] for i in part] if isinstance(v, (list, tuple)) else v for k, v in context.items()}
        return [prompts[i] for i in part], [completions[i] for i in part], sub

    if is_async(reward):
        results = asyncio.run(_gather(reward, [args(p) for p in parts], timeout))
    else:
        results = _threads(reward, [args(p) for p in parts], timeout)
    return _merge([(part, None if r is None else as_output(r, name)) for part, r in zip(parts, results, strict=True)])


async def _gather(reward: Any, calls: list[tuple[Any, ...]], timeout: float | None) -> list[Any]:
    async def one(p: list[str], c: list[str], ctx: dict[str, Any]) -> Any:
        try:
            return await asyncio.wait_for(reward(p, c, **ctx), timeout)
        except asyncio.TimeoutError:
            return None

    return list(await asyncio.gather(*(one(*call) for call in calls)))


def _threads(reward: Any, calls: list[tuple[Any, ...]], timeout: float | None) -> list[Any]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="rlft-reward")
    try:
        futures = [pool.submit(lambda p, c, ctx: resolve(reward(p, c, **ctx)), *call) for call in calls]
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for future in futures:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                results.append(future.result(timeout=left))
            except concurrent.futures.TimeoutError:
                results.append(None)
        return results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # an overrunning thread is left to finish alone


def _merge(scored: list[tuple[range, RewardOutput | None]]) -> RewardOutput:
    """The shares' outputs in row order; a timed-out share is 0 in every column."""
    keys = sorted({k for _, out in scored if out is not None for k in out.components})
    rewards: list[float] = []
    components: dict[str, list[float]] = {k: [] for k in keys}
    timed_out: list[float] = []
    for part, out in scored:
        n = len(part)
        rewards += list(out.rewards) if out is not None else [0.0] * n
        for k in keys:
            values = out.components.get(k) if out is not None else None
            components[k] += list(values) if values is not None else [0.0] * n
        timed_out += [0.0 if out is not None else 1.0] * n
    dense = any(out is not None and out.step_rewards is not None for _, out in scored)
    steps = [row for part, out in scored for row in (out.step_rewards if out is not None and out.step_rewards
                                                     is not None else [[] for _ in part])] if dense else None
    return RewardOutput(rewards, {**components, "timed_out": timed_out}, steps)

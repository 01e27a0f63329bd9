"""reward_limits.workers: an async or thread-safe reward scores a batch in concurrent shares, a
share past the timeout is scored 0 and counted, never a crash; other rewards are called once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rlft.rewards import RewardError, thread_safe
from rlft.rewards.limits import limit_reward
from rlft.rewards.pool import shares

PROMPTS = [f"p{i}" for i in range(8)]
COMPLETIONS = [str(i) for i in range(8)]


def test_shares_are_contiguous_near_equal_and_cover_every_row():
    assert shares(8, 3) == [range(0, 3), range(3, 5), range(5, 8)]
    assert shares(2, 4) == [range(0, 1), range(1, 2)]
    assert [list(r) for r in shares(5, 1)] == [[0, 1, 2, 3, 4]]


def test_a_thread_safe_reward_scores_its_shares_at_once_in_row_order():
    running, peak = [0], [0]
    lock = threading.Lock()

    @thread_safe
    def slow(prompts, completions, answers, **context):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return [float(c) + (a == "x") for c, a in zip(completions, answers, strict=True)]

    reward = limit_reward(slow, 1e6, 10.0, workers=4)
    started = time.perf_counter()
    out = reward(PROMPTS, COMPLETIONS, answers=["x"] * 4 + ["y"] * 4)
    assert out.rewards == [1.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0, 7.0]  # each row its own score, in order
    assert peak[0] == 4 and time.perf_counter() - started < 0.6  # four shares at once, not 0.8 s in a row
    assert out.components["timed_out"] == [0.0] * 8


def test_an_async_reward_runs_its_shares_concurrently_and_a_late_share_scores_zero():
    async def judge(prompts, completions, **context):
        await asyncio.sleep(1.0 if "7" in completions else 0.05)  # the last share hangs
        return [1.0] * len(completions)

    reward = limit_reward(judge, 1e6, 0.3, workers=4)
    started = time.perf_counter()
    out = reward(PROMPTS, COMPLETIONS)
    assert time.perf_counter() - started < 0.9  # the hanging share is cancelled at its timeout
    assert out.rewards == [1.0] * 6 + [0.0, 0.0]
    assert out.components["timed_out"] == [0.0] * 6 + [1.0, 1.0]


def test_an_async_reward_with_one_worker_is_awaited():
    async def judge(prompts, completions, **context):
        return [2.0] * len(completions)

    assert limit_reward(judge, 1e6, 5.0).__call__(PROMPTS, COMPLETIONS).rewards == [2.0] * 8


def test_a_reward_that_declares_nothing_is_called_once_per_batch():
    calls = []

    def plain(prompts, completions, **context):
        calls.append(len(completions))
        return [0.0] * len(completions)

    limit_reward(plain, 1e6, 5.0, workers=4)(PROMPTS, COMPLETIONS)
    assert calls == [8]


def test_an_error_in_a_share_is_still_the_runs_error():
    @thread_safe
    def broken(prompts, completions, **context):
        if "5" in completions:
            raise ValueError("bad row")
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="bad row"):
        limit_reward(broken, 1e6, 5.0, workers=4)(PROMPTS, COMPLETIONS)


def test_the_pool_keeps_the_bound_on_what_a_reward_returns():
    @thread_safe
    def huge(prompts, completions, **context):
        return [1e9] * len(completions)

    with pytest.raises(RewardError, match="reward_limits.max_abs"):
        limit_reward(huge, 1e6, 5.0, workers=2)(PROMPTS, COMPLETIONS)

"""Which training prompts a step samples: uniformly, or by a curriculum of pass rates.

``task.sampler: uniform`` draws as the task does (``task.train_problems``). ``task.sampler:
curriculum`` spends samples where they can teach: it keeps each training prompt's recent pass rate
``p`` (an exponential moving average over the groups the prompt was sampled in) and draws prompts
in proportion to ``max(p (1 - p), floor)``. A group of G completions of a prompt that always
(p = 1) or never (p = 0) passes has equal rewards and, under a group estimator, zero advantage: the
samples are paid for and teach nothing. p (1 - p) is the variance of a pass, so it is largest at
p = 1/2; the floor keeps every prompt in play (a prompt the policy cannot solve yet is drawn less,
never starved), and prompts not yet seen are drawn first, in a random order.

This is the "learnability" score p (1 - p) of Foster & Foerster (2025, "Learning to Reason at the
Frontier of Learnability") used as a sampling weight, with two departures: the pass rate comes
from the training groups themselves (no separate evaluation rollouts) smoothed by an EMA, and a
floor instead of a cutoff.

Both samplers count the groups sampled in each step whose rewards were all equal
(``curriculum/zero_signal_fraction``) and those whose completions all failed or all passed
(``curriculum/solved_none_fraction``, ``solved_all_fraction``; a pass is a reward of at least
``eval.pass_threshold``), so a uniform run and a curriculum run compare; the
curriculum also logs ``curriculum/mean_p`` (the mean pass rate of the prompts seen so far). Its
state (every prompt's p and count) is part of the trainer's checkpoint, so a resumed run draws
exactly what an uninterrupted one would.

The sampler reaches the RL loop as the task itself (:class:`SampledTask`, whose
``train_problems`` is the sampler's draw) plus one hook: ``sample_round`` calls
``task.observe_groups(problems, rewards)`` once every round's rewards are known.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import torch

from rlft.errors import ConfigError
from rlft.tasks.base import Problem


def ema_pass_rate(previous: float, group_pass_rate: float, weight: float) -> float:
    """The new pass rate of a prompt: its group's own for a prompt not seen before (``previous``
    NaN), else ``(1 - weight) * previous + weight * group_pass_rate``."""
    if math.isnan(previous):
        return group_pass_rate
    return (1.0 - weight) * previous + weight * group_pass_rate


def learning_signal_weights(pass_rates: torch.Tensor, floor: float) -> torch.Tensor:
    """(N,) pass rates in [0, 1] -> (N,) sampling weights ``max(p (1 - p), floor)``.

    p (1 - p) is the variance of one pass: the expected spread of a group's rewards, hence of its
    advantages. E.g. p = [0, 0.5, 1] with floor 0.02 -> [0.02, 0.25, 0.02].
    """
    return (pass_rates * (1.0 - pass_rates)).clamp(min=floor)


def zero_signal_groups(rewards: Sequence[float], group_size: int) -> int:
    """How many groups of ``group_size`` consecutive rewards are all equal (no signal)."""
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return sum(1 for g in groups if max(g) == min(g))


def group_pass_rates(rewards: Sequence[float], group_size: int, pass_threshold: float) -> list[float]:
    """The share of each group's completions whose reward is at least ``pass_threshold``."""
    return [sum(r >= pass_threshold for r in rewards[i : i + group_size]) / group_size
            for i in range(0, len(rewards), group_size)]


class UniformSampler:
    """The task's own draw; counts the groups without signal, and those all failed or all passed."""

    def __init__(self, task: Any, group_size: int, pass_threshold: float = 1.0) -> None:
        self.task, self.group_size, self.pass_threshold = task, group_size, pass_threshold
        self._counts = dict.fromkeys(("groups", "silent", "none", "all"), 0)
        # rollout.async draws and observes in a producer thread while the learner reads metrics and state.
        self._lock = threading.RLock()

    def draw(self, n: int, gen: torch.Generator) -> list[Problem]:
        return self.task.train_problems(n, gen)

    def observe(self, problems: Sequence[Problem], rewards: Sequence[float]) -> None:
        passed = group_pass_rates(rewards, self.group_size, self.pass_threshold)
        with self._lock:
            self._counts["groups"] += len(passed)
            self._counts["silent"] += zero_signal_groups(list(rewards), self.group_size)
            self._counts["none"] += sum(p == 0 for p in passed)
            self._counts["all"] += sum(p == 1 for p in passed)

    def metrics(self) -> dict[str, float]:
        """This step's figures (the counts start again at the next step)."""
        with self._lock:
            n, counts = self._counts["groups"], self._counts
            self._counts = dict.fromkeys(counts, 0)
        return {"curriculum/zero_signal_fraction": counts["silent"] / n, "curriculum/solved_none_fraction":
                counts["none"] / n, "curriculum/solved_all_fraction": counts["all"] / n} if n else {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


class CurriculumSampler(UniformSampler):
    """Draws unseen prompts first, then in proportion to ``max(p (1 - p), floor)`` (module docstring).

    ``pass_threshold``: a completion passes when its reward is at least this (``eval.pass_threshold``).
    The pool is the task's ``all_train_problems()``, one entry per distinct prompt, read at the
    first draw (a dataset task renders its prompts in ``prepare``).
    """

    def __init__(self, task: Any, group_size: int, ema: float, floor: float, pass_threshold: float) -> None:
        super().__init__(task, group_size, pass_threshold)
        if not callable(getattr(task, "all_train_problems", None)):
            raise ConfigError(
                f"task.sampler: curriculum needs a task with a finite training set to track pass rates in, but "
                f"task {getattr(task, 'name', type(task).__name__)!r} has none (no all_train_problems()). Use it with "
                "task.name: multistep or dataset (or a task of your own that defines all_train_problems()), or set "
                "task.sampler: uniform."
            )
        self.ema, self.floor = ema, floor
        self.pool: list[Problem] = []
        self.index: dict[str, int] = {}
        self.pass_rates = torch.zeros(0, dtype=torch.float64)  # (N,) NaN where never seen
        self.seen = torch.zeros(0, dtype=torch.long)  # (N,) groups each prompt was in

    def _ensure_pool(self) -> None:
        if self.pool:
            return
        for problem in self.task.all_train_problems():
            if problem.prompt not in self.index:  # a prompt repeated in the data counts once
                self.index[problem.prompt] = len(self.pool)
                self.pool.append(problem)
        if not self.pool:
            raise ConfigError("task.sampler: curriculum: the task has no training problems to draw from.")
        if not len(self.pass_rates):
            self.pass_rates = torch.full((len(self.pool),), math.nan, dtype=torch.float64)
            self.seen = torch.zeros(len(self.pool), dtype=torch.long)

    def draw(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` distinct prompts (repeats only when ``n`` exceeds the pool), from ``gen`` only."""
        with self._lock:
            return self._draw(n, gen)

    def _draw(self, n: int, gen: torch.Generator) -> list[Problem]:
        self._ensure_pool()
        unseen = (self.seen == 0).nonzero().flatten()
        chosen = unseen[torch.randperm(len(unseen), generator=gen)[:n]].tolist()
        rest = n - len(chosen)
        if rest:
            seen = (self.seen > 0).nonzero().flatten()
            weights = learning_signal_weights(self.pass_rates[seen], self.floor)
            picks = torch.multinomial(weights, rest, replacement=rest > len(seen), generator=gen)
            chosen += seen[picks].tolist()
        return [self.pool[i] for i in chosen]

    def observe(self, problems: Sequence[Problem], rewards: Sequence[float]) -> None:
        """Update the pass rate of each group's prompt (groups: ``group_size`` consecutive rows)."""
        with self._lock:
            self._observe(problems, rewards)

    def _observe(self, problems: Sequence[Problem], rewards: Sequence[float]) -> None:
        super().observe(problems, rewards)
        self._ensure_pool()
        G = self.group_size
        for start, passed in zip(range(0, len(rewards), G), group_pass_rates(rewards, G, self.pass_threshold),
                                 strict=True):
            i = self.index.get(problems[start].prompt)
            if i is None:  # not a training prompt of the pool
                continue
            self.pass_rates[i] = ema_pass_rate(float(self.pass_rates[i]), passed, self.ema)
            self.seen[i] += 1

    def metrics(self) -> dict[str, float]:
        with self._lock:
            out = super().metrics()
            known = self.pass_rates[self.seen > 0]
        if len(known):
            out["curriculum/mean_p"] = float(known.mean())
            out["curriculum/seen_fraction"] = len(known) / len(self.pool)
        return out

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"pass_rates": self.pass_rates.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "pass_rates" in state:
            with self._lock:
                self.pass_rates, self.seen = state["pass_rates"].clone(), state["seen"].clone()

    def summary(self) -> dict[str, Any]:
        """The final pass rates as a histogram (``rlft report`` draws it): 10 bins over [0, 1]."""
        if not self.pool:
            return {}
        known = self.pass_rates[self.seen > 0]
        counts = torch.histc(known.float(), bins=10, min=0.0, max=1.0).long().tolist() if len(known) else [0] * 10
        return {"curriculum_pass_rates": {"bin_edges": [i / 10 for i in range(11)], "counts": counts,
                                          "unseen": int((self.seen == 0).sum()), "prompts": len(self.pool)}}


class SampledTask:
    """``task`` with its training prompts drawn by ``sampler``; everything else is the task's."""

    def __init__(self, task: Any, sampler: UniformSampler) -> None:
        self._task, self.sampler = task, sampler

    @property
    def eval_problems(self) -> list[Problem]:
        return self._task.eval_problems  # read through: a task may build them late (in prepare)

    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        return self.sampler.draw(n, gen)

    def observe_groups(self, problems: Sequence[Problem], rewards: Sequence[float]) -> None:
        """The hook ``sample_round`` calls with every sampled row and its reward."""
        self.sampler.observe(problems, rewards)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def with_prompt_sampler(config: Any, task: Any) -> SampledTask:
    """``task`` behind the sampler the recipe names (``task.sampler``, ``task.curriculum``)."""
    G = config.algorithm.group_size
    if config.task.sampler == "curriculum":
        cur = config.task.curriculum
        return SampledTask(task, CurriculumSampler(task, G, cur.ema, cur.floor, config.eval.pass_threshold))
    return SampledTask(task, UniformSampler(task, G, config.eval.pass_threshold))

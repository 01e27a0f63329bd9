"""Multi-step word problems: a sparse outcome reward over 3 to 6 dependent steps.

A problem is a short story in which a running count changes several times; each change depends on
the count so far, so one wrong step spoils every later one::

    Ana has 7 pens, gets 5, doubles them, gives away 3. How many now?

The worked solution (what the warm start imitates) states one intermediate result per line, then
the answer after ``#``; lines are the steps a process reward model scores (``step_separator``
"\\n")::

    +5=12
    *2=24
    -3=21
    #21

The task owns its reward: 1.0 when the text after the last ``#`` is the answer, 0.0 otherwise; the
steps themselves are not checked. With more steps a small model's chance of getting every one right
falls geometrically, so most groups of a warm-started model are all wrong on long problems and all
right on short ones: the sparse-reward setting of ``benchmarks/sparse_rewards.py``.

The training problems are a finite, seeded set of ``train_size`` problems (so that a curriculum
can track each one's pass rate, ``task.sampler: curriculum``); the held-out problems are drawn
first from the same generator and never appear in training. The warm start imitates newly
generated problems (``warm_start_problems``), so that it teaches the skill rather than the
training set's answers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlft.schema import setting
from rlft.tasks.base import Problem

NAMES = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Leo", "Mia", "Noor")
ITEMS = ("pens", "apples", "cards", "books", "eggs", "shells", "stamps", "cups")
LIMIT = 99  # every intermediate result stays in 0..99 (two digits: short steps for a small model)


@dataclass(frozen=True)
class MultistepSettings:
    """The settings of ``task.name: multistep`` (written in the task section next to the name)."""

    min_steps: int = setting(3, "Fewest dependent steps in a problem (each step one change of the count).", ge=1, le=8)
    max_steps: int = setting(6, "Most dependent steps in a problem.", ge=1, le=8)
    train_size: int = setting(
        2000, "Training problems: a finite seeded set (the curriculum tracks each one's pass rate).", ge=1
    )


def _change(r: random.Random, count: int) -> tuple[str, str, int]:
    """One change of the running count: (its words, the step's line, the new count)."""
    choices = ["add"]
    if count >= 2:
        choices.append("sub")
    if 0 < count * 2 <= LIMIT:
        choices.append("mul")
    if count >= 4 and count % 2 == 0:
        choices.append("half")
    kind = r.choice(choices)
    if kind == "add":
        n = r.randint(1, min(9, LIMIT - count))
        return f"gets {n}", f"+{n}={count + n}", count + n
    if kind == "sub":
        n = r.randint(1, min(9, count - 1))
        return f"gives away {n}", f"-{n}={count - n}", count - n
    if kind == "mul":
        return "doubles them", f"*2={count * 2}", count * 2
    return "halves them", f"/2={count // 2}", count // 2


def make_problem(r: random.Random, steps: int) -> Problem:
    """A problem of ``steps`` dependent changes, its worked solution and its answer."""
    name, item = r.choice(NAMES), r.choice(ITEMS)
    start = count = r.randint(2, 9)
    changes, lines = [], []
    for _ in range(steps):
        words, line, count = _change(r, count)
        changes.append(words)
        lines.append(line)
    prompt = f"{name} has {start} {item}, " + ", ".join(changes) + ". How many now?\n"
    return Problem(prompt=prompt, answer=str(count), target="\n".join([*lines, f"#{count}"]),
                   extra={"n_steps": steps})


def final_answer(completion: str) -> str | None:
    """The text after the last ``#`` (None without one)."""
    head, sep, tail = completion.rpartition("#")
    return tail.strip() if sep else None


class MultistepTask:
    """Chained word-problem arithmetic with an outcome-only reward (see the module docstring)."""

    name = "multistep"

    def __init__(self, min_steps: int = 3, max_steps: int = 6, train_size: int = 2000, eval_size: int = 256,
                 seed: int = 1234) -> None:
        if min_steps > max_steps:
            raise ValueError(f"min_steps={min_steps} is above max_steps={max_steps}")
        r = random.Random(seed)
        problems: dict[str, Problem] = {}
        tries = 0
        while len(problems) < eval_size + train_size:
            problem = make_problem(r, r.randint(min_steps, max_steps))
            problems.setdefault(problem.prompt, problem)
            tries += 1
            if tries > 20 * (eval_size + train_size):
                raise ValueError(f"could not draw {eval_size + train_size} distinct problems; lower the sizes")
        ordered = list(problems.values())
        self.eval_problems: list[Problem] = ordered[:eval_size]
        self._train = ordered[eval_size:]
        self.min_steps, self.max_steps = min_steps, max_steps
        self._held_out = {p.prompt for p in self.eval_problems}

    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` training problems: seeded permutations of the training set, drawn with ``gen``."""
        out: list[Problem] = []
        while len(out) < n:
            order = torch.randperm(len(self._train), generator=gen).tolist()
            out += [self._train[i] for i in order[: n - len(out)]]
        return out

    def warm_start_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` demonstrations for the warm start, newly generated from ``gen`` (never a held-out
        prompt): a warm start on the finite training set alone would learn it by heart."""
        r = random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))
        out: list[Problem] = []
        while len(out) < n:
            problem = make_problem(r, r.randint(self.min_steps, self.max_steps))
            if problem.prompt not in self._held_out:
                out.append(problem)
        return out

    def all_train_problems(self) -> list[Problem]:
        """Every training problem (the finite pool a curriculum chooses from)."""
        return list(self._train)

    def reward(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        """1.0 where the text after the completion's last ``#`` is the answer, else 0.0."""
        return [float(final_answer(c) == p.answer) for c, p in zip(completions, problems, strict=True)]

    def corpus(self) -> list[str]:
        """Solved problems (2000 newly generated ones, never held out): the text the tiny model's
        tokenizer is trained on."""
        return [p.prompt + p.target for p in self.warm_start_problems(2000, torch.Generator().manual_seed(0))]

    def prepare(self, tokenizer: Any, max_prompt_tokens: int | None = None) -> None:
        """Nothing to render: prompts are plain text."""

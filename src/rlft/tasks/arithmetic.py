"""Arithmetic with a verifiable reward.

A problem is a prompt such as ``"23+45="``. With ``answer_format="answer"`` the completion must be
the answer (``"68"``) followed by the end-of-sequence token. With ``answer_format="steps"`` the
policy first works column by column, units first, and gives the answer after ``#``::

    23+45=3+5+0=8 2+4+0=6 #68          (each step: digit + digit + carry = column sum)

The task owns its reward: 1.0 when the answer (the whole completion, or the text after the last
``#``) exactly matches, 0.0 otherwise; the steps themselves are not checked, as in RL on reasoning
traces where only the outcome is verified. Held-out problems are drawn once from ``task.seed`` and
never appear in training.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch

from rlft.tasks.base import Problem

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def column_addition_steps(a: int, b: int) -> str:
    """``"3+5+0=8 2+4+0=6 #68"`` for 23 + 45: one step per column, units first, then the answer."""
    steps, carry = [], 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total}")
        carry = total // 10
    return " ".join(steps) + f" #{a + b}"


class ArithmeticTask:
    """Problems ``a OP b =`` with operands of up to ``digits`` digits."""

    name = "arithmetic"

    def __init__(
        self,
        digits: int = 2,
        operations: Sequence[str] = ("+",),
        eval_size: int = 256,
        seed: int = 1234,
        answer_format: str = "answer",
    ) -> None:
        unknown = [op for op in operations if op not in _OPS]
        if unknown or not operations:
            raise ValueError(f"operations must be a non-empty subset of {list(_OPS)}, got {operations!r}")
        if answer_format not in ("answer", "steps"):
            raise ValueError(f"answer_format must be 'answer' or 'steps', got {answer_format!r}")
        if answer_format == "steps" and set(operations) != {"+"}:
            raise ValueError("answer_format='steps' (column addition) supports operations ['+'] only")
        self.answer_format = answer_format
        self.digits = digits
        self.operations = tuple(operations)
        self.max_operand = 10**digits - 1
        n_problems = (self.max_operand + 1) ** 2 * len(self.operations)
        if eval_size > n_problems // 2:
            raise ValueError(
                f"eval_size={eval_size} leaves too few training problems out of {n_problems}; "
                f"use at most {n_problems // 2}"
            )
        gen = torch.Generator().manual_seed(seed)
        held_out: dict[str, Problem] = {}
        while len(held_out) < eval_size:
            problem = self._draw(gen)
            held_out[problem.prompt] = problem
        self.eval_problems: list[Problem] = list(held_out.values())
        self._held_out = set(held_out)

    def _draw(self, gen: torch.Generator) -> Problem:
        a, b = torch.randint(0, self.max_operand + 1, (2,), generator=gen).tolist()
        op = self.operations[int(torch.randint(0, len(self.operations), (1,), generator=gen))]
        answer = str(_OPS[op](a, b))
        target = column_addition_steps(a, b) if self.answer_format == "steps" else answer
        return Problem(prompt=f"{a}{op}{b}=", answer=answer, target=target)

    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` training problems drawn with ``gen``; held-out problems are redrawn."""
        out: list[Problem] = []
        while len(out) < n:
            problem = self._draw(gen)
            if problem.prompt not in self._held_out:
                out.append(problem)
        return out

    def prepare(self, tokenizer: Any, max_prompt_tokens: int | None = None) -> None:
        """Nothing to render: prompts are plain text."""

    def final_answer(self, completion: str) -> str | None:
        """The answer a completion gives: all of it, or the text after the last ``#`` (None if the
        steps format has no ``#``)."""
        if self.answer_format == "answer":
            return completion.strip()
        head, sep, tail = completion.rpartition("#")
        return tail.strip() if sep else None

    def reward(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        """1.0 where the completion's answer (surrounding spaces ignored) equals the answer."""
        return [
            float(self.final_answer(c) == p.answer) for c, p in zip(completions, problems, strict=True)
        ]

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Text the tokenizer is trained on: solved problems covering every digit and operator."""
        gen = torch.Generator().manual_seed(seed)
        return [p.prompt + p.target for p in self.train_problems(n, gen)]

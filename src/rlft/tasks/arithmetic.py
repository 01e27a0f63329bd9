"""Arithmetic with a verifiable reward.

A problem is a prompt such as ``"23+45="`` whose completion must be the answer (``"68"``) followed
by the end-of-sequence token. The task owns its reward: 1.0 for an exact match of the answer,
0.0 otherwise. Held-out problems are drawn once from ``task.seed`` and never appear in training.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclass(frozen=True)
class Problem:
    """One task instance: the text the policy sees and the answer it must produce."""

    prompt: str
    answer: str


class ArithmeticTask:
    """Problems ``a OP b =`` with operands of up to ``digits`` digits."""

    name = "arithmetic"

    def __init__(
        self,
        digits: int = 2,
        operations: Sequence[str] = ("+",),
        eval_size: int = 256,
        seed: int = 1234,
    ) -> None:
        unknown = [op for op in operations if op not in _OPS]
        if unknown or not operations:
            raise ValueError(f"operations must be a non-empty subset of {list(_OPS)}, got {operations!r}")
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
        return Problem(prompt=f"{a}{op}{b}=", answer=str(_OPS[op](a, b)))

    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` training problems drawn with ``gen``; held-out problems are redrawn."""
        out: list[Problem] = []
        while len(out) < n:
            problem = self._draw(gen)
            if problem.prompt not in self._held_out:
                out.append(problem)
        return out

    def reward(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        """1.0 where the completion (up to EOS, surrounding spaces ignored) equals the answer."""
        return [float(c.strip() == p.answer) for c, p in zip(completions, problems, strict=True)]

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Text the tokenizer is trained on: solved problems covering every digit and operator."""
        gen = torch.Generator().manual_seed(seed)
        return [p.prompt + p.answer for p in self.train_problems(n, gen)]

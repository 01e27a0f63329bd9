"""What every task is: problems (a prompt, an answer, extra fields) and the protocol a trainer reads.

A *task* hands the trainer prompts to train on, held-out prompts to evaluate on, and a reward.
Built-in tasks (arithmetic, reviews) generate their problems; the ``dataset`` task reads a user's
file; any object that follows :class:`Task` plugs in through ``rlft.train(recipe, task=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Problem:
    """One task instance: the text the policy sees and the answer it must produce."""

    prompt: str
    answer: str
    target: str = ""
    """The completion a supervised warm start teaches (the answer, or the steps and the answer)."""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Every other column of a data row; reaches rewards as a keyword list (``difficulty=[...]``)."""

    def __post_init__(self) -> None:
        if not self.target:
            object.__setattr__(self, "target", self.answer)


# Names the reward call itself uses: a data column with one of these names would be shadowed.
RESERVED_CONTEXT = ("prompts", "completions", "problems", "answers")


def reward_context(problems: Sequence[Problem]) -> dict[str, list[Any]]:
    """The per-sample keyword lists every reward receives: ``problems``, ``answers`` (left out
    when no problem has one, so a reward that needs answers says so instead of comparing with "")
    and one list per extra column (None where a row lacks it), each aligned with the prompts."""
    columns = sorted({key for p in problems for key in p.extra})
    context: dict[str, list[Any]] = {"problems": list(problems)}
    if any(p.answer for p in problems):
        context["answers"] = [p.answer for p in problems]
    for key in columns:
        context[key] = [p.extra.get(key) for p in problems]
    return context


@runtime_checkable
class Task(Protocol):
    """The protocol a trainer reads (docs/datasets.md#your-own-task-in-python).

    ``eval_problems`` are never trained on. ``train_problems(n, gen)`` draws ``n`` training problems
    using only ``gen`` (so a resumed run draws the same ones). ``reward`` is the task's own score
    of completions, reported as ``eval/accuracy``. ``corpus()`` is the text the offline tiny
    model's tokenizer is trained on. ``prepare(tokenizer)`` is called once the tokenizer is known
    and before any training (render chat templates, check prompt lengths); most tasks do nothing.
    """

    name: str
    eval_problems: list[Problem]

    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]: ...

    def reward(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[float]: ...

    def corpus(self) -> list[str]: ...

    def prepare(self, tokenizer: Any, max_prompt_tokens: int | None = None) -> None: ...

"""Short reviews: a text task where what is "good" is a matter of preference, not a checkable answer.

A prompt names a product and a place (``"Review of the pizza at the station:"``); a completion is a
two-clause review, ``" great food , rude staff ."``: an adjective and an aspect, twice. The
supervised warm start draws adjectives uniformly from positive, negative and neutral words, so the
base policy writes reviews of every tone.

This is the task of the RLHF example (``examples/rlhf/``), in the spirit of Ziegler et al. (2019),
whose first experiment tuned continuations toward positive sentiment from human preferences. The
preference the annotator follows is :func:`true_score`: the mean tone of the two adjectives
(+1 positive, 0 neutral, -1 negative), and -1 for anything that is not a well-formed review with
two different aspects — so a policy that games a reward model with "great great great" is caught.

The task's own reward (what ``eval/accuracy`` reports) is 1.0 for a well-formed, wholly positive
review (true score 1), else 0.0. Held-out prompts are (product, place) pairs never drawn in
training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from rlft.tasks.base import Problem

POSITIVE = ("great", "lovely", "friendly", "tasty", "superb", "clean")
NEGATIVE = ("awful", "rude", "bland", "dirty", "slow", "noisy")
NEUTRAL = ("plain", "usual", "average", "simple", "modest", "standard")
ASPECTS = ("food", "staff", "price", "service", "room", "view", "music", "seats")
PRODUCTS = ("pizza", "hotel", "cafe", "noodles", "bakery", "diner", "bistro", "burger",
            "hostel", "curry", "tavern", "sushi", "canteen", "salad", "inn", "kebab")  # fmt: skip
PLACES = ("the station", "the harbour", "the market", "the airport", "the mall", "the park",
          "the square", "the bridge", "the beach", "the campus", "the museum", "the stadium")  # fmt: skip

TONE = {**{w: 1.0 for w in POSITIVE}, **{w: -1.0 for w in NEGATIVE}, **{w: 0.0 for w in NEUTRAL}}
_REVIEW = re.compile(r"(\w+) (\w+) , (\w+) (\w+) \.")
N_PROMPTS = len(PRODUCTS) * len(PLACES)


def _adjectives(completion: str) -> tuple[str, str] | None:
    """The two adjectives of a well-formed review, or None."""
    match = _REVIEW.fullmatch(completion.strip())
    if match is None:
        return None
    adj1, aspect1, adj2, aspect2 = match.groups()
    if adj1 not in TONE or adj2 not in TONE or {aspect1, aspect2} - set(ASPECTS) or aspect1 == aspect2:
        return None
    return adj1, adj2


def well_formed(completion: str) -> bool:
    """Two clauses of a known adjective and aspect, the aspects different, ending with a full stop."""
    return _adjectives(completion) is not None


def true_score(completion: str) -> float:
    """The mean tone of the two adjectives of a well-formed review; -1.0 for anything else."""
    adjectives = _adjectives(completion)
    return -1.0 if adjectives is None else (TONE[adjectives[0]] + TONE[adjectives[1]]) / 2


class ReviewsTask:
    """Prompts "Review of the PRODUCT at PLACE:"; completions are two-clause reviews."""

    name = "reviews"

    def __init__(self, eval_size: int = 48, seed: int = 1234) -> None:
        if eval_size > N_PROMPTS // 2:
            raise ValueError(f"eval_size={eval_size} leaves too few training prompts; use at most {N_PROMPTS // 2}")
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(N_PROMPTS, generator=gen).tolist()
        self._held_out = set(order[:eval_size])
        self.eval_problems = [self._problem(i, gen) for i in sorted(self._held_out)]

    def _problem(self, index: int, gen: torch.Generator) -> Problem:
        product, place = PRODUCTS[index // len(PLACES)], PLACES[index % len(PLACES)]
        adjectives = list(TONE)
        a1, a2 = (adjectives[int(i)] for i in torch.randint(0, len(adjectives), (2,), generator=gen))
        x1, x2 = (ASPECTS[int(i)] for i in torch.randperm(len(ASPECTS), generator=gen)[:2])
        review = f" {a1} {x1} , {a2} {x2} ."
        # No single right answer: `answer` is left empty; `target` is what the warm start imitates.
        return Problem(prompt=f"Review of the {product} at {place}:", answer="", target=review)

    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` prompts drawn with ``gen`` (held-out prompts redrawn), each with a random review."""
        out: list[Problem] = []
        while len(out) < n:
            index = int(torch.randint(0, N_PROMPTS, (1,), generator=gen))
            if index not in self._held_out:
                out.append(self._problem(index, gen))
        return out

    def prepare(self, tokenizer: Any, max_prompt_tokens: int | None = None) -> None:
        """Nothing to render: prompts are plain text."""

    def reward(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        """1.0 for a well-formed, wholly positive review, else 0.0."""
        return [float(true_score(c) == 1.0) for c in completions]

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Text the tokenizer is trained on: prompts with reviews, every word included."""
        gen = torch.Generator().manual_seed(seed)
        words = " ".join([*TONE, *ASPECTS, *PRODUCTS, *PLACES])
        return [p.prompt + p.target for p in self.train_problems(n, gen)] + [words]

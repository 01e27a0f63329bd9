"""A dialogue task with a scripted user: the agent asks questions to find a hidden number.

The user thinks of a number in ``1..high`` and answers each question "is it N?" with "higher",
"lower" or "yes" (in the words of one of several personas). The agent has ``max_turns``
questions. Rewards, per agent turn:

  success       +success_reward when the agent names the number (the episode ends)
  turn cost     -turn_cost on every turn (so shorter dialogues are better)
  engagement    +engagement when the question is well-formed and still informative (N lies in
                the range the earlier answers leave open), -engagement otherwise: the simulated
                user stays engaged with sensible questions and loses interest with pointless ones

A binary search finds any number in ``ceil(log2(high + 1))`` questions, so with the defaults
(``high=12``, ``max_turns=4``) a perfect agent always succeeds; the warm start imitates a user
who guesses at random inside the open range, which succeeds only part of the time.

Splits: an episode is a (hidden number, persona) pair. Training draws every number with the four
personas; held-out episodes are every number with a new user whose phrases mix three training
personas (seeded), so success there measures a strategy, not memorised pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from rlft.envs.base import Env, Observation, StepResult


@dataclass(frozen=True)
class Persona:
    opening: str
    higher: str
    lower: str
    correct: str
    confused: str


PERSONAS = (
    Persona("I'm thinking of a number from 1 to {high}. Ask me!\n", "Higher.\n", "Lower.\n", "Yes!\n", "What?\n"),
    Persona("Guess my number, 1 to {high}.\n", "bigger\n", "smaller\n", "correct\n", "huh?\n"),
    Persona("Find my secret number (1-{high}).\n", "go up\n", "go down\n", "you got it\n", "pardon?\n"),
    Persona("Pick the number I hide, 1 to {high}.\n", "more\n", "less\n", "right\n", "sorry?\n"),
)

HELD_OUT = -1  # the persona index of the held-out user (see GuessNumberFamily)

QUESTION = re.compile(r"\s*is it (\d+)\?\s*")


def question(n: int) -> str:
    """The agent's utterance that asks about ``n``."""
    return f"is it {n}?"


class GuessNumberEnv:
    """One episode: a hidden number and a persona (``words``: that persona's phrases, when they
    are not ``PERSONAS[persona]``, as for the held-out user)."""

    def __init__(
        self, target: int, persona: int, high: int = 12, max_turns: int = 4,
        success_reward: float = 1.0, turn_cost: float = 0.05, engagement: float = 0.05,
        words: Persona | None = None,
    ) -> None:
        self.target, self.persona, self.high, self.max_turns = target, persona, high, max_turns
        self.success_reward, self.turn_cost, self.engagement = success_reward, turn_cost, engagement
        self.words = words or PERSONAS[persona]
        self.reset()

    def reset(self) -> Observation:
        self.low_open, self.high_open, self.turns = 1, self.high, 0
        return Observation(self.words.opening.format(high=self.high))

    def step(self, action_text: str) -> StepResult:
        self.turns += 1
        match = QUESTION.fullmatch(action_text)
        guess = int(match.group(1)) if match else None
        informative = guess is not None and self.low_open <= guess <= self.high_open
        reward = -self.turn_cost + (self.engagement if informative else -self.engagement)
        info = {"turn": self.turns, "informative": informative, "success": False}
        if guess == self.target:
            return StepResult(Observation(""), reward + self.success_reward, True, {**info, "success": True})
        if guess is None:
            reply = self.words.confused
        elif guess < self.target:
            reply, self.low_open = self.words.higher, max(self.low_open, guess + 1)
        else:
            reply, self.high_open = self.words.lower, min(self.high_open, guess - 1)
        done = self.turns >= self.max_turns
        return StepResult(Observation("" if done else reply), reward, done, info)


class GuessNumberFamily:
    """Episodes of :class:`GuessNumberEnv` with a held-out split of (number, persona) pairs."""

    name = "guess"
    settings = ("high", "max_turns", "seed")

    def __init__(self, high: int = 12, max_turns: int = 4, seed: int = 1234, **env_kwargs: float) -> None:
        self.high, self.max_turns, self.env_kwargs = high, max_turns, env_kwargs
        # Held out: a new user. Training episodes pair every number with the four training
        # personas; held-out episodes pair every number with a persona whose opening, "higher"
        # and "lower" come from three different training personas (seeded), a combination never
        # seen. Holding out (number, persona) pairs instead would leak: a policy can learn that
        # persona p never hides the held-out number x_p, and RL on the training pairs does learn
        # exactly that, lowering held-out success while training success rises.
        gen = torch.Generator().manual_seed(seed)
        opening, higher, lower = (int(i) for i in torch.randperm(len(PERSONAS), generator=gen)[:3])
        self.held_out_persona = Persona(
            PERSONAS[opening].opening, PERSONAS[higher].higher, PERSONAS[lower].lower,
            PERSONAS[higher].correct, PERSONAS[lower].confused,
        )
        self.train_pairs = [(t, p) for t in range(1, high + 1) for p in range(len(PERSONAS))]
        self.eval_pairs = [(t, HELD_OUT) for t in range(1, high + 1)]

    def make(self, target: int, persona: int) -> GuessNumberEnv:
        words = self.held_out_persona if persona == HELD_OUT else None
        return GuessNumberEnv(target, persona, self.high, self.max_turns, words=words, **self.env_kwargs)

    def train_envs(self, n: int, gen: torch.Generator) -> list[Env]:
        idx = torch.randint(0, len(self.train_pairs), (n,), generator=gen).tolist()
        return [self.make(*self.train_pairs[i]) for i in idx]

    def eval_envs(self) -> list[Env]:
        return [self.make(*pair) for pair in self.eval_pairs]

    def demonstration(self, env: Env, gen: torch.Generator) -> list[str]:
        """A successful dialogue of a user who asks about a random number of the open range.

        Dialogues that run out of turns are redrawn, so every demonstration succeeds; the
        strategy is not a binary search, which leaves RL something to improve.
        """
        assert isinstance(env, GuessNumberEnv)
        while True:
            segments = [env.reset().text]
            low, high = 1, env.high
            for _ in range(env.max_turns):
                n = int(torch.randint(low, high + 1, (1,), generator=gen))
                result = env.step(question(n))
                segments.append(question(n))
                if result.done:
                    break
                segments.append(result.observation.text)
                low, high = env.low_open, env.high_open
            if result.info["success"]:
                return segments

    def corpus(self, n: int = 500, seed: int = 0) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        envs = self.train_envs(n, gen)
        return ["".join(self.demonstration(e, gen)) for e in envs] + [p.confused for p in PERSONAS]

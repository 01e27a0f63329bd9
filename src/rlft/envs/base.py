"""The environment protocol: ``reset() -> Observation`` and ``step(action_text) -> StepResult``.

An environment is one episode of a task. The agent (the language model) reads the observation
text, writes an action text (one utterance or tool call), and the environment answers with the
next observation, a reward for that action, and whether the episode is over. A single-turn task
is an environment whose first step is always the last (:class:`SingleTurnEnv`).

Environments come in families (:class:`EnvFamily`): a family makes training episodes from a
generator, a fixed list of held-out episodes, scripted demonstrations for the supervised warm
start, and the text a tokenizer is trained on.

Async environments (a remote user, a tool server) implement :class:`AsyncEnv`; :func:`as_async`
wraps a sync environment so that a batch of episodes can be stepped concurrently either way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from rlft.errors import RlftError


@dataclass(frozen=True)
class Observation:
    """What the environment says: text appended to the transcript, plus free-form info."""

    text: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    """The environment's answer to one action.

    observation: the environment's next turn (empty text when ``done``).
    reward: reward of this action (placed on the last token of the agent's turn).
    done: the episode is over; no further action is asked for.
    info: free-form; ``success`` (bool) is read by the benchmarks and metrics.
    """

    observation: Observation
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """One episode of a task, stepped synchronously."""

    def reset(self) -> Observation: ...

    def step(self, action_text: str) -> StepResult: ...


@runtime_checkable
class AsyncEnv(Protocol):
    """One episode of a task, stepped with ``await``."""

    async def reset(self) -> Observation: ...

    async def step(self, action_text: str) -> StepResult: ...


class _SyncAsAsync:
    """An :class:`AsyncEnv` view of a sync :class:`Env` (runs in the event loop's thread)."""

    def __init__(self, env: Env) -> None:
        self.env = env

    async def reset(self) -> Observation:
        return self.env.reset()

    async def step(self, action_text: str) -> StepResult:
        return self.env.step(action_text)


def as_async(env: Env | AsyncEnv) -> AsyncEnv:
    """``env`` itself if it is async, else an async wrapper of it."""
    if asyncio.iscoroutinefunction(getattr(env, "step", None)):
        return env  # type: ignore[return-value]
    return _SyncAsAsync(env)  # type: ignore[arg-type]


class EnvFamily(Protocol):
    """A task made of episodes, with train and held-out splits."""

    name: str
    settings: tuple[str, ...]
    """The fields of an agent recipe's ``env:`` section this family is built from: the keyword
    arguments :func:`rlft.trainers.agent.make_family` passes to its constructor (after the
    instance of its own settings dataclass, for a family registered with one:
    ``rlft.register_env(name, settings=...)``, docs/extending.md)."""

    def train_envs(self, n: int, gen: torch.Generator) -> list[Env]:
        """``n`` training episodes drawn with ``gen`` (never a held-out one)."""
        ...

    def eval_envs(self) -> list[Env]:
        """The fixed held-out episodes."""
        ...

    def demonstration(self, env: Env, gen: torch.Generator) -> list[str]:
        """A scripted successful episode: [observation, action, observation, action, ...]."""
        ...

    def corpus(self, n: int = 500, seed: int = 0) -> list[str]:
        """Text to train a tokenizer on."""
        ...


class EnvError(RlftError):
    """An environment raised, returned something that is not a :class:`StepResult`, or broke the
    protocol; the message names the episode and the turn."""

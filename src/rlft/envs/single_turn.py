"""A single-turn task as a one-step environment: the arithmetic task through the multi-turn path."""

from __future__ import annotations

import torch

from rlft.envs.base import Env, Observation, StepResult
from rlft.tasks import ArithmeticTask, Problem


class SingleTurnEnv:
    """One problem: the observation is the prompt, the one action is scored by the task's reward."""

    def __init__(self, task: ArithmeticTask, problem: Problem) -> None:
        self.task, self.problem = task, problem

    def reset(self) -> Observation:
        return Observation(self.problem.prompt)

    def step(self, action_text: str) -> StepResult:
        reward = self.task.reward([action_text], [self.problem])[0]
        return StepResult(Observation(""), reward, True, {"success": reward >= 1.0})


class ArithmeticEnvFamily:
    """:class:`rlft.tasks.ArithmeticTask` as a family of one-step environments."""

    name = "arithmetic"
    settings: tuple[str, ...] = ()

    def __init__(self, task: ArithmeticTask | None = None) -> None:
        self.task = task or ArithmeticTask()

    def train_envs(self, n: int, gen: torch.Generator) -> list[Env]:
        return [SingleTurnEnv(self.task, p) for p in self.task.train_problems(n, gen)]

    def eval_envs(self) -> list[Env]:
        return [SingleTurnEnv(self.task, p) for p in self.task.eval_problems]

    def demonstration(self, env: Env, gen: torch.Generator) -> list[str]:
        assert isinstance(env, SingleTurnEnv)
        return [env.reset().text, env.problem.answer]

    def corpus(self, n: int = 500, seed: int = 0) -> list[str]:
        return self.task.corpus(n, seed)

"""Environments: the protocol, a single-turn wrapper, a dialogue task and two tool-use tasks (a
calculator, and Python run in the sandbox).

``ENV_FAMILIES`` is the registry: the agent recipe's ``env.name`` picks an entry here and nowhere
else; a plugin adds one with ``rlft.register_env`` (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlft.algorithms.registry import Registry
from rlft.envs.base import AsyncEnv, Env, EnvError, EnvFamily, Observation, StepResult, as_async
from rlft.envs.calculator import CalculatorEnv, CalculatorFamily
from rlft.envs.guess import GuessNumberEnv, GuessNumberFamily
from rlft.envs.python_tool import PythonToolEnv, PythonToolFamily, PythonToolSettings
from rlft.envs.single_turn import ArithmeticEnvFamily, SingleTurnEnv


@dataclass(frozen=True)
class EnvInfo:
    """What an agent recipe needs to know of an environment family."""

    settings: Any = None
    """The dataclass of the family's own settings (written in the recipe's ``env:`` section, next to
    ``name``), passed to its constructor first; None for a family without any."""
    agent_recipe: bool = True
    """Offered by the agent recipe's ``env.name``. The single-turn arithmetic family is not: the
    main recipe's task section configures it."""


ENV_FAMILIES: Registry[Any, EnvInfo] = Registry("environment", EnvInfo(), {
    "guess": GuessNumberFamily, "calculator": CalculatorFamily,
})
ENV_FAMILIES.add("python_tool", PythonToolFamily, EnvInfo(settings=PythonToolSettings))
ENV_FAMILIES.add("arithmetic", ArithmeticEnvFamily, EnvInfo(agent_recipe=False))


def agent_env_names() -> list[str]:
    """The names the agent recipe's ``env.name`` accepts (built-ins and plugins')."""
    return [name for name in ENV_FAMILIES if ENV_FAMILIES.info(name).agent_recipe]


__all__ = [
    "ENV_FAMILIES", "ArithmeticEnvFamily", "AsyncEnv", "CalculatorEnv", "CalculatorFamily", "Env", "EnvError", "EnvFamily",
    "EnvInfo", "GuessNumberEnv", "GuessNumberFamily", "Observation", "PythonToolEnv", "PythonToolFamily",
    "PythonToolSettings", "SingleTurnEnv", "StepResult", "agent_env_names", "as_async",
]

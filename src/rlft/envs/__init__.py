"""Environments: the protocol, a single-turn wrapper, a dialogue task and a tool-use task."""

from rlft.envs.base import AsyncEnv, Env, EnvError, EnvFamily, Observation, StepResult, as_async
from rlft.envs.calculator import CalculatorEnv, CalculatorFamily
from rlft.envs.guess import GuessNumberEnv, GuessNumberFamily
from rlft.envs.single_turn import ArithmeticEnvFamily, SingleTurnEnv

ENV_FAMILIES = {"guess": GuessNumberFamily, "calculator": CalculatorFamily, "arithmetic": ArithmeticEnvFamily}

__all__ = [
    "ENV_FAMILIES", "ArithmeticEnvFamily", "AsyncEnv", "CalculatorEnv", "CalculatorFamily", "Env", "EnvError", "EnvFamily",
    "GuessNumberEnv", "GuessNumberFamily", "Observation", "SingleTurnEnv", "StepResult", "as_async",
]

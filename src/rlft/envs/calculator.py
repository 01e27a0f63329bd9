"""A tool-use task: the agent calls a calculator with ``CALC(a*b)`` and must use its result.

The user asks ``What is 23*47?``. An action ``CALC(23*47)`` is answered by the tool with
``= 1081``; an action ``ANSWER 1081`` ends the episode with reward 1.0 if the number is right
(0.0 otherwise). Any other action is answered with an error message. The agent has
``max_turns`` actions. Splits: a seeded set of operand pairs is held out.
"""

from __future__ import annotations

import operator
import re

import torch

from rlft.envs.base import Env, Observation, StepResult

CALL = re.compile(r"\s*CALC\((\d+)([+\-*])(\d+)\)\s*")
ANSWER = re.compile(r"\s*ANSWER (-?\d+)\s*")
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


class CalculatorEnv:
    """One question ``a OP b``, answered with the help of a calculator tool."""

    def __init__(self, a: int, b: int, op: str = "*", max_turns: int = 3) -> None:
        self.a, self.b, self.op, self.max_turns = a, b, op, max_turns
        self.answer = _OPS[op](a, b)
        self.turns = 0

    def reset(self) -> Observation:
        self.turns = 0
        return Observation(f"What is {self.a}{self.op}{self.b}?\n")

    def step(self, action_text: str) -> StepResult:
        self.turns += 1
        last = self.turns >= self.max_turns
        if answer := ANSWER.fullmatch(action_text):
            ok = int(answer.group(1)) == self.answer
            return StepResult(Observation(""), float(ok), True, {"success": ok, "tool_calls": self.turns - 1})
        if call := CALL.fullmatch(action_text):
            a, op, b = int(call.group(1)), call.group(2), int(call.group(3))
            reply = f"= {_OPS[op](a, b)}\n"
        else:
            reply = "error: use CALC(a*b) or ANSWER n\n"
        return StepResult(Observation("" if last else reply), 0.0, last, {"success": False})


class CalculatorFamily:
    """Multiplication questions with ``digits``-digit operands; a seeded set of pairs is held out."""

    name = "calculator"
    settings = ("max_turns", "seed")

    def __init__(self, digits: int = 2, eval_size: int = 64, max_turns: int = 3, seed: int = 1234) -> None:
        self.max_operand, self.max_turns = 10**digits - 1, max_turns
        gen = torch.Generator().manual_seed(seed)
        held: set[tuple[int, int]] = set()
        while len(held) < eval_size:
            held.add(tuple(torch.randint(0, self.max_operand + 1, (2,), generator=gen).tolist()))  # type: ignore[arg-type]
        self.eval_pairs = sorted(held)
        self._held = held

    def train_envs(self, n: int, gen: torch.Generator) -> list[Env]:
        out: list[Env] = []
        while len(out) < n:
            a, b = torch.randint(0, self.max_operand + 1, (2,), generator=gen).tolist()
            if (a, b) not in self._held:
                out.append(CalculatorEnv(a, b, max_turns=self.max_turns))
        return out

    def eval_envs(self) -> list[Env]:
        return [CalculatorEnv(a, b, max_turns=self.max_turns) for a, b in self.eval_pairs]

    def demonstration(self, env: Env, gen: torch.Generator) -> list[str]:
        assert isinstance(env, CalculatorEnv)
        call = f"CALC({env.a}{env.op}{env.b})"
        result = env.step(call)
        return [env.reset().text, call, result.observation.text, f"ANSWER {env.answer}"]

    def corpus(self, n: int = 500, seed: int = 0) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        return ["".join(self.demonstration(e, gen)) for e in self.train_envs(n, gen)]

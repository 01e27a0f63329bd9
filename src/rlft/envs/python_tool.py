"""A tool-use task: the agent may run Python in the sandbox before it answers.

Each agent turn is either a *tool call* or the *answer*. A tool call is a fenced code block
(```` ```python ... ``` ````) or a call in the chat-template tool format that Qwen and Hermes
models write (``<tool_call>{"name": "python", "arguments": {"code": "..."}}</tool_call>``). The
sandbox (``rlft.sandbox``) runs it and the environment answers with what it printed, as an
observation turn::

    ```output
    56088
    ```

Tool output is an environment turn, so it is masked out of the policy loss like every
environment token. Any other turn is the answer: the episode ends and the task's reward scores it
(1.0 for the right product here). The agent has ``max_tool_calls`` runs per episode; a code block
beyond them, or on the last allowed turn, is scored as the answer. Each tool step reports
``tool/calls_per_episode``, ``tool/errors`` (the code failed, crashed or ran out of memory) and
``tool/timeouts`` in ``StepResult.info["metrics"]``, which the agent trainer averages over
episodes.

The family's questions are products of ``digits``-digit numbers ("123*456="), which a tiny model
cannot compute in its head but can read off the interpreter's output; a seeded set is held out.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlft.envs.base import Env, Observation, StepResult
from rlft.errors import ConfigError
from rlft.rewards.code import extract_code
from rlft.sandbox import Program, Sandbox, SandboxConfig, SandboxResult
from rlft.schema import setting
from rlft.tasks import ArithmeticTask, Problem

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|\Z)", re.DOTALL)
_SHOWN = 400  # characters of a run's output the agent sees (its end for stderr)


def tool_call(action: str) -> str | None:
    """The code an agent turn asks to run, or None when the turn is an answer."""
    found = _TOOL_CALL.search(action)
    if found:
        try:
            call = json.loads(found.group(1))
        except json.JSONDecodeError:
            return None
        args = call.get("arguments") if isinstance(call, dict) else None
        if isinstance(args, str):  # some templates write the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        code = args.get("code") if isinstance(args, dict) and call.get("name") == "python" else None
        return code if isinstance(code, str) else None
    if "```" not in action:
        return None
    return extract_code(action, "fenced") or None


def format_output(result: SandboxResult, timeout: float) -> str:
    """The observation after a run: its stdout, and the end of its stderr when it failed."""
    if result.status == "timeout":
        text = f"TimeoutError: the code ran past {timeout:g} s"
    elif result.status == "output_truncated":
        text = result.stdout[:_SHOWN] + "\n[output cut]"
    else:
        text = result.stdout[:_SHOWN]
        if result.status != "passed":
            text += result.stderr[-_SHOWN:] or f"[{result.status}]"
    return f"```output\n{text.strip()}\n```\n"


class PythonToolEnv:
    """One question answered with the help of a Python interpreter (module docstring).

    ``score(answer_text) -> float`` is the task's reward of the answer; ``sandbox`` is shared by
    every episode of a family and runs their tool calls concurrently (``sandbox.workers``)."""

    def __init__(self, problem: Problem, score: Callable[[str], float], sandbox: Sandbox,
                 max_tool_calls: int = 2, max_turns: int = 3) -> None:
        self.problem, self.score, self.sandbox = problem, score, sandbox
        self.max_tool_calls, self.max_turns = max_tool_calls, max_turns
        self.turns = self.calls = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> PythonToolEnv:
        # Episodes are copied per sample; the sandbox (a pool of running programs) is shared.
        return PythonToolEnv(self.problem, self.score, self.sandbox, self.max_tool_calls, self.max_turns)

    async def reset(self) -> Observation:
        self.turns = self.calls = 0
        return Observation(self.problem.prompt)

    async def step(self, action_text: str) -> StepResult:
        self.turns += 1
        code = tool_call(action_text)
        if code is not None and self.calls < self.max_tool_calls and self.turns < self.max_turns:
            self.calls += 1
            result = await asyncio.get_running_loop().run_in_executor(None, self.sandbox.run, Program(code=code))
            metrics = {"tool/calls_per_episode": 1.0, "tool/timeouts": float(result.status == "timeout"),
                       "tool/errors": float(result.status not in ("passed", "timeout"))}
            observation = Observation(format_output(result, self.sandbox.config.timeout))
            return StepResult(observation, 0.0, False, {"success": False, "metrics": metrics, "tool": result.status})
        reward = float(self.score(action_text))
        none = {"tool/calls_per_episode": 0.0, "tool/timeouts": 0.0, "tool/errors": 0.0}  # every episode reports
        return StepResult(Observation(""), reward, True, {"success": reward >= 1.0, "metrics": none})


@dataclass(frozen=True)
class PythonToolSettings:
    """The ``python_tool`` environment's own settings, written in the agent recipe's ``env:``
    section next to its name (``env: {name: python_tool, max_tool_calls: 2}``)."""

    digits: int = setting(3, "Digits of each factor: 3 makes products a tiny model cannot compute in its head.", ge=1, le=6)
    max_tool_calls: int = setting(
        2, "Code runs per episode; a code block beyond them is scored as the answer. 0: no tool (answer directly).",
        ge=0,
    )
    eval_size: int = setting(64, "Held-out questions (never trained on).", ge=1)
    sandbox: SandboxConfig = setting(
        SandboxConfig(), "The sandbox the tool calls run in (docs/sandbox.md); sandbox.timeout is the per-call timeout."
    )


class PythonToolFamily:
    """Products of ``digits``-digit numbers, answered with (or, with ``max_tool_calls: 0``,
    without) the interpreter; a seeded set of questions is held out."""

    name = "python_tool"
    settings = ("max_turns", "seed")

    def __init__(self, own: PythonToolSettings | None = None, max_turns: int = 3, seed: int = 1234) -> None:
        self.own = own or PythonToolSettings()
        if self.own.max_tool_calls and max_turns <= self.own.max_tool_calls:
            raise ConfigError(
                f"env.max_turns={max_turns} leaves no turn to answer after env.max_tool_calls={self.own.max_tool_calls} "
                f"tool calls; set env.max_turns to at least {self.own.max_tool_calls + 1}."
            )
        self.max_turns = max_turns
        self.task = ArithmeticTask(digits=self.own.digits, operations=("*",), eval_size=self.own.eval_size, seed=seed)
        self.sandbox = Sandbox(self.own.sandbox)

    def make(self, problem: Problem) -> PythonToolEnv:
        def score(answer: str) -> float:
            return self.task.reward([answer], [problem])[0]

        return PythonToolEnv(problem, score, self.sandbox, self.own.max_tool_calls, self.max_turns)

    def train_envs(self, n: int, gen: torch.Generator) -> list[Any]:
        """``n`` training episodes (async environments: their tool calls run concurrently)."""
        return [self.make(p) for p in self.task.train_problems(n, gen)]

    def eval_envs(self) -> list[Any]:
        return [self.make(p) for p in self.task.eval_problems]

    def demonstration(self, env: Env, gen: torch.Generator) -> list[str]:
        """Run the product in the interpreter, then answer with what it printed (or, with no
        tool, answer at once)."""
        assert isinstance(env, PythonToolEnv)
        if not self.own.max_tool_calls:
            return [env.problem.prompt, env.problem.answer]
        call = f"```python\nprint({env.problem.prompt.rstrip('=')})\n```"
        output = f"```output\n{env.problem.answer}\n```\n"  # what the sandbox prints for it
        return [env.problem.prompt, call, output, env.problem.answer]

    def corpus(self, n: int = 500, seed: int = 0) -> list[str]:
        gen = torch.Generator().manual_seed(seed)
        envs = self.train_envs(n, gen)
        failures = [f"```output\nTimeoutError: the code ran past {self.own.sandbox.timeout:g} s\n```\n",
                    "```output\nTraceback (most recent call last):\nSyntaxError: invalid syntax\n```\n"]
        return ["".join(self.demonstration(e, gen)) for e in envs] + failures

"""``type: unit_tests``: score a completion by running its code against the row's tests in the sandbox.

The code is the completion's first fenced block (```` ```python ... ``` ````; an unclosed one runs
to the end) or, with none, the whole completion. Each row's ``tests`` (the context named by
``tests_field``, a data column or ``score(..., tests=[...])``) is one of

  a string          Python run after the completion's code in the same program: assert
                    statements, or HumanEval's ``def check(candidate): ...`` with its call (or
                    an ``entry_point`` column: ``check`` is then called with that function)
  a list of strings one test each (``"assert f(2) == 7"``), run one after the other in that
                    program; each passes or fails on its own
  a list of pairs   ``{"stdin": ..., "stdout": ...}`` (or ``input``/``output``), or one mapping
                    ``{"inputs": [...], "outputs": [...]}`` (APPS): the code is run once per pair
                    as a program and passes when it exits with status 0 and prints the expected
                    text (trailing whitespace of each line ignored)

The score is 1.0 when every test passed, else 0.0; with ``partial_credit`` it is the fraction
that passed where the tests are separable (lists). Tests count as passed only when rlft's harness
(``code_harness.py``) reports them, with a nonce the program cannot know: a program that exits
before its tests ran, or prints "OK", passes nothing. Components: ``code/pass_rate`` (fraction of
the row's tests passed), ``code/timeouts`` and ``code/syntax_errors`` (1.0 where one happened).
"""

from __future__ import annotations

import json
import re
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from rlft.rewards.base import RewardError, RewardOutput, context_list
from rlft.sandbox import Program, Sandbox, SandboxConfig, SandboxResult
from rlft.schema import setting

HARNESS = (Path(__file__).parent / "code_harness.py").read_text()
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3")


def extract_code(text: str, mode: Literal["auto", "fenced", "whole"] = "auto") -> str:
    """The code of a completion: its first fenced Python block (an unclosed block runs to the
    end of the text); with no fenced block, the whole text (``auto``) or nothing (``fenced``)."""
    if mode == "whole":
        return text
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        return python[0]
    return text if mode == "auto" and not blocks else ""


@dataclass(frozen=True)
class TestSuite:
    """One row's tests, normalised: ``kind`` is ``script`` (one test), ``asserts`` or ``io``."""

    kind: Literal["script", "asserts", "io"]
    tests: tuple[Any, ...]  # code strings, or (stdin, expected stdout) pairs
    entry_point: str | None = None


def parse_tests(value: Any, where: str, entry_point: Any = None) -> TestSuite:
    """A row's ``tests`` value as a :class:`TestSuite`, or a :class:`RewardError` naming the row."""
    point = str(entry_point) if entry_point else None
    if isinstance(value, str) and value.strip():
        return TestSuite("script", (value,), point)
    if isinstance(value, dict) and {"inputs", "outputs"} <= set(value):
        value = [{"stdin": i, "stdout": o} for i, o in zip(value["inputs"], value["outputs"], strict=False)]
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(t, str) for t in value):
            return TestSuite("asserts", tuple(value), point)
        if all(isinstance(t, dict) for t in value):
            pairs = [(t.get("stdin", t.get("input")), t.get("stdout", t.get("output"))) for t in value]
            if all(isinstance(i, str) and isinstance(o, str) for i, o in pairs):
                return TestSuite("io", tuple(pairs))
    shown = repr(value)[:80]
    raise RewardError(
        f"Reward 'unit_tests': the tests of {where} are {shown}; give Python code (a string), a non-empty list of "
        "test strings, or a list of {stdin, stdout} pairs (docs/rewards.md#code-unit-tests)."
    )


@dataclass
class _Scored:
    passed: int = 0
    total: int = 1
    timeout: bool = False
    syntax_error: bool = False


@dataclass
class UnitTests:
    """1.0 when the completion's code passes every test of its row, run in the sandbox (module docstring)."""

    name: ClassVar[str] = "unit_tests"
    tests_field: str = setting("tests", "The per-sample context (the data column) that holds each row's tests.")
    partial_credit: bool = setting(
        False, "Score the fraction of tests passed where the tests are separable (a list); false: 1.0 only when "
        "every test passed.",
    )
    extract: Literal["auto", "fenced", "whole"] = setting(
        "auto", "Which code runs: auto (the first fenced block, else the whole completion), fenced (only a fenced "
        "block; none: fails) or whole (the completion as it is).",
    )
    entry_point_field: str = setting(
        "entry_point", "HumanEval: the column naming the function that the tests' check(candidate) is called with.",
    )
    sandbox: SandboxConfig = setting(SandboxConfig(), "The sandbox the programs run in (docs/sandbox.md).")

    def __post_init__(self) -> None:
        self._box: Sandbox | None = None  # started on first use

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> RewardOutput:
        n = len(completions)
        if self.tests_field not in context:
            raise RewardError(
                f"Reward 'unit_tests' needs each row's tests in the context {self.tests_field!r} (a data column of "
                f"that name, or score(..., {self.tests_field}=[...])); got: {', '.join(sorted(context)) or 'none'}."
            )
        rows = context_list(context, self.tests_field, n, self.name)
        points = context.get(self.entry_point_field) or [None] * n
        suites = [parse_tests(rows[i], f"prompt {prompts[i]!r}", points[i]) for i in range(n)]
        scored = self.run(completions, suites)
        rewards = [s.passed / s.total if self.partial_credit else float(s.passed == s.total) for s in scored]
        return RewardOutput(rewards, {
            "code/pass_rate": [s.passed / s.total for s in scored],
            "code/timeouts": [float(s.timeout) for s in scored],
            "code/syntax_errors": [float(s.syntax_error) for s in scored],
        })

    def run(self, completions: Sequence[str], suites: Sequence[TestSuite]) -> list[_Scored]:
        """Run every completion against its suite; identical programs run once."""
        programs: dict[str, Program] = {}  # key -> program, in order
        wanted: list[list[str]] = []  # per completion: the keys of its runs
        nonces: dict[str, str] = {}
        scored = []
        for completion, suite in zip(completions, suites, strict=True):
            code = extract_code(completion, self.extract)
            scored.append(_Scored(total=len(suite.tests)))
            if not _compiles(code):
                scored[-1].syntax_error = True
                wanted.append([])
                continue
            keys = []
            for program in _programs(code, suite):
                key = json.dumps([program.code, program.stdin, dict(program.files)])
                programs.setdefault(key, program)
                keys.append(key)
            wanted.append(keys)
        for key, program in programs.items():
            if "rlft_nonce" in program.files:  # a fresh nonce per run, never seen by the code
                nonces[key] = secrets.token_hex(16)
                programs[key] = Program(code=program.code, files={**program.files, "rlft_nonce": nonces[key]})
        results = dict(zip(programs, self.box().run_many(list(programs.values())), strict=True))
        for s, suite, keys in zip(scored, suites, wanted, strict=True):
            for k, key in enumerate(keys):
                result = results[key]
                s.timeout = s.timeout or result.status == "timeout"
                if suite.kind == "io":
                    s.passed += _same_output(result, suite.tests[k][1])
                else:
                    s.passed += len(_reported_passes(result.stdout, nonces[key]))
        return scored

    def box(self) -> Sandbox:
        """The sandbox, started on first use."""
        if self._box is None:
            self._box = Sandbox(self.sandbox)
        return self._box

    def close(self) -> None:
        if self._box is not None:
            self._box.close()
            self._box = None


def _programs(code: str, suite: TestSuite) -> list[Program]:
    if suite.kind == "io":
        return [Program(code=code, stdin=stdin) for stdin, _ in suite.tests]
    spec = json.dumps({"tests": list(suite.tests), "entry_point": suite.entry_point})
    return [Program(code=HARNESS, files={"solution.py": code, "rlft_tests.json": spec, "rlft_nonce": ""})]


def _compiles(code: str) -> bool:
    """Whether ``code`` is Python the interpreter accepts (compiled here, never run)."""
    if not code.strip():
        return False
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: the model's, not the user's
            warnings.simplefilter("ignore")
            compile(code, "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def _reported_passes(stdout: str, nonce: str) -> set[int]:
    """The tests the harness reported passed (lines ``NONCE pass I``)."""
    marker = nonce + " pass "
    return {int(line[len(marker):]) for line in stdout.splitlines()
            if line.startswith(marker) and line[len(marker):].isdigit()}


def _same_output(result: SandboxResult, expected: str) -> bool:
    def norm(text: str) -> list[str]:
        lines = [line.rstrip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    return result.status == "passed" and norm(result.stdout) == norm(expected)

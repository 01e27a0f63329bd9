"""The unit_tests reward with the real sandbox: scores by hand, hostile completions that must not
pass, every test format, the components, and the one-line CLI on a user's file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlft.rewards import RewardError, build_reward, score
from rlft.rewards.code import extract_code

ASSERTS = ["assert f(1) == 4", "assert f(2) == 7", "assert f(0) == 1"]
RIGHT = "def f(x):\n    return x*3+1"


@pytest.fixture(scope="module")
def reward():
    r = build_reward({"type": "unit_tests", "sandbox": {"timeout": 3, "cpu_seconds": 2, "workers": 4}})
    yield r
    r.close()


def scores(reward, completions, tests, **context):
    out = score(reward, ["p"] * len(completions), completions, tests=[tests] * len(completions), **context)
    return out.rewards, out.components


def test_right_and_wrong_code(reward) -> None:
    rewards, parts = scores(reward, [RIGHT, "def f(x):\n    return x*3", f"```python\n{RIGHT}\n```\nDone."], ASSERTS)
    assert rewards == [1.0, 0.0, 1.0]
    assert parts["code/pass_rate"] == [1.0, pytest.approx(0.0), 1.0]
    assert parts["code/syntax_errors"] == [0.0, 0.0, 0.0] and parts["code/timeouts"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("cheat", [
    "import sys\nsys.exit(0)",  # exits before its tests ran
    "import os\nos._exit(0)",
    "raise SystemExit",
    "print('OK')\nprint('ok 3 passed')\ndef f(x): return 0",  # prints a fake success
    "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f(x): return 0",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    "def f(x):\n    import sys; sys.exit(0)",  # exits inside the test: that test fails
    "import builtins\nbuiltins.print = lambda *a, **k: None\ndef f(x): return 0",
])
def test_cheats_never_pass(reward, cheat: str) -> None:
    rewards, parts = scores(reward, [cheat], ASSERTS)
    assert rewards == [0.0] and parts["code/pass_rate"] == [0.0]


def test_a_faked_result_line_does_not_count(reward) -> None:
    fake = "\n".join(f"print('\\n{'0' * 32} pass {i}')" for i in range(3)) + "\ndef f(x): return 0"
    assert scores(reward, [fake], ASSERTS)[0] == [0.0]


def test_timeouts_and_syntax_errors_are_components(reward, recwarn) -> None:
    rewards, parts = scores(reward, ["def f(x):\n    while True: pass", "def f(x) return x", "", RIGHT], ASSERTS)
    scores(reward, ["def f(x):\n    return 2(x)"], ASSERTS)  # compiles with a SyntaxWarning: not shown
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]
    assert rewards == [0.0, 0.0, 0.0, 1.0]
    assert parts["code/timeouts"] == [1.0, 0.0, 0.0, 0.0]
    assert parts["code/syntax_errors"] == [0.0, 1.0, 1.0, 0.0]


def test_partial_credit_counts_separable_tests() -> None:
    r = build_reward({"type": "unit_tests", "partial_credit": True})
    try:
        special = "def f(x):\n    return 4 if x == 1 else 1"  # right for f(1) and f(0) only
        rewards, parts = scores(r, [special, RIGHT], ASSERTS)
        assert rewards == [pytest.approx(2 / 3), 1.0] and parts["code/pass_rate"][0] == pytest.approx(2 / 3)
        one_script = "assert f(1) == 4\nassert f(2) == 7\nassert f(0) == 1"
        assert scores(r, [special], one_script)[0] == [0.0]  # one script: not separable
    finally:
        r.close()


def test_stdin_stdout_pairs(reward) -> None:
    pairs = [{"stdin": "3\n", "stdout": "6\n"}, {"stdin": "5", "stdout": "10  \n\n"}]
    program = "print(int(input()) * 2)"
    rewards, parts = scores(reward, [program, "print(6)", "print('OK')", "import sys; sys.exit(0)"], pairs)
    assert rewards == [1.0, 0.0, 0.0, 0.0] and parts["code/pass_rate"] == [1.0, 0.5, 0.0, 0.0]
    apps = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}
    assert scores(reward, ["print(sum(map(int, input().split())))"], apps)[0] == [1.0]


def test_humaneval_check_with_entry_point(reward) -> None:
    check = "def check(candidate):\n    assert candidate(1) == 4\n    assert candidate(2) == 7\n"
    rewards, _ = scores(reward, ["def g(x): return 3*x+1", "def g(x): return x"], check, entry_point=["g", "g"])
    assert rewards == [1.0, 0.0]
    called = check + "check(g)\n"
    assert scores(reward, ["def g(x): return 3*x+1"], called)[0] == [1.0]


def test_identical_programs_run_once(reward) -> None:
    before = reward.box().stats()["runs"]
    scores(reward, [RIGHT] * 8 + ["def f(x): return 1"] * 8, ASSERTS)
    assert reward.box().stats()["runs"] - before == 2


def test_extract_code() -> None:
    assert extract_code("Here:\n```python\nx = 1\n```\nand ```py\ny = 2\n```") == "x = 1\n"
    assert extract_code("```\nz = 3\n```") == "z = 3\n"
    assert extract_code("```python\nx = 1\nunclosed") == "x = 1\nunclosed"
    assert extract_code("x = 1") == "x = 1"
    assert extract_code("x = 1", "fenced") == ""
    assert extract_code("```json\n{}\n```") == ""  # a fenced block that is not Python


def test_bad_tests_are_named(reward) -> None:
    with pytest.raises(RewardError, match="needs each row's tests in the context 'tests'"):
        score(reward, ["p"], [RIGHT], answers=["x"])
    with pytest.raises(RewardError, match="tests of prompt 'p' are \\[\\]"):
        score(reward, ["p"], [RIGHT], tests=[[]])
    with pytest.raises(RewardError, match="tests of prompt 'p' are 3"):
        score(reward, ["p"], [RIGHT], tests=[3])


@pytest.mark.slow
def test_one_command_trains_with_unit_tests(tmp_path, tiny_recipe) -> None:
    rows = [{"prompt": f"Write f(x) that returns x times {a} plus {b}.\n", "answer": f"def f(x):\n    return x*{a}+{b}",
             "tests": [f"assert f({x}) == {x * a + b}" for x in (1, 2, 5)]} for a in range(2, 7) for b in range(1, 9)]
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = [a for r in tiny_recipe for a in ("--set", r) if not r.startswith("rollout.max_new_tokens")]
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", "train", "--data", str(data), "--reward", "unit_tests",
         "--run-dir", str(run), "--no-progress", *sets, "--set", "train.steps=2", "--set", "rollout.max_new_tokens=16",
         "--set", "task.eval_fraction=0.2"], capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward/code/pass_rate" in m]
    assert len(steps) == 2 and all(0 <= m["reward/code/pass_rate"] <= 1 for m in steps)
    assert {"reward/code/timeouts", "reward/code/syntax_errors"} <= set(steps[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["headline_metric"] == "pass_rate" and 0 <= summary["final_pass_rate"] <= 1

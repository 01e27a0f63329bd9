"""The python_tool environment with the real sandbox: tool calls run and come back as observations,
the budget and the caps hold, metrics are reported, and an agent trains on it end to end."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
import torch

from rlft.envs import ENV_FAMILIES, PythonToolEnv, PythonToolFamily, PythonToolSettings
from rlft.envs.python_tool import tool_call
from rlft.errors import ConfigError
from rlft.sandbox import SandboxConfig
from rlft.tasks import Problem

FAST = SandboxConfig(workers=4, timeout=3.0, cpu_seconds=2)


@pytest.fixture(scope="module")
def family():
    fam = PythonToolFamily(PythonToolSettings(max_tool_calls=2, eval_size=8, sandbox=FAST), max_turns=3)
    yield fam
    fam.sandbox.close()


def play(env, actions):
    async def go():
        first = await env.reset()
        return first, [await env.step(a) for a in actions]

    return asyncio.run(go())


def test_tool_call_formats() -> None:
    assert tool_call("```python\nprint(1)\n```") == "print(1)\n"
    assert tool_call('<tool_call>{"name": "python", "arguments": {"code": "print(2)"}}</tool_call>') == "print(2)"
    assert tool_call('<tool_call>{"name": "python", "arguments": "{\\"code\\": \\"x=1\\"}"}</tool_call>') == "x=1"
    assert tool_call('<tool_call>{"name": "search", "arguments": {"code": "x"}}</tool_call>') is None
    assert tool_call("<tool_call>{not json</tool_call>") is None
    assert tool_call("56088") is None and tool_call("```json\n{}\n```") is None


def test_an_episode_by_hand(family) -> None:
    env = family.make(Problem("123*456=", "56088"))
    first, (call, answer) = play(env, ["```python\nprint(123*456)\n```", "56088"])
    assert first.text == "123*456="
    assert (call.observation.text, call.reward, call.done) == ("```output\n56088\n```\n", 0.0, False)
    assert call.info["metrics"] == {"tool/calls_per_episode": 1.0, "tool/timeouts": 0.0, "tool/errors": 0.0}
    assert (answer.reward, answer.done, answer.info["success"]) == (1.0, True, True)
    _, (wrong,) = play(family.make(Problem("123*456=", "56088")), ["56000"])
    assert (wrong.reward, wrong.done) == (0.0, True)


def test_errors_timeouts_and_the_budget(family) -> None:
    env = family.make(Problem("2*3=", "6"))
    _, (error, timeout, third) = play(env, ["```python\n1/0\n```", "```python\nwhile True: pass\n```",
                                            "```python\nprint(6)\n```"])
    assert "ZeroDivisionError" in error.observation.text and error.info["metrics"]["tool/errors"] == 1.0
    assert "TimeoutError: the code ran past 3 s" in timeout.observation.text
    assert timeout.info["metrics"]["tool/timeouts"] == 1.0 and timeout.info["metrics"]["tool/errors"] == 0.0
    assert third.done and third.reward == 0.0  # the budget is spent: a third code block is the answer


def test_hostile_tool_calls_end_in_an_observation(family) -> None:
    for code in ("import os\nwhile True: os.fork()", "x = bytearray(10**10)", "print('x' * 10**8)",
                 "import socket; socket.create_connection(('1.1.1.1', 80), timeout=1)"):
        _, (step,) = play(family.make(Problem("2*3=", "6")), [f"```python\n{code}\n```"])
        assert not step.done and step.observation.text.startswith("```output\n")


def test_demonstrations_match_real_runs_and_succeed(family) -> None:
    gen = torch.Generator().manual_seed(0)
    for env in family.train_envs(4, gen):
        segments = family.demonstration(env, gen)
        first, steps = play(env, segments[1::2])
        assert first.text == segments[0] and steps[0].observation.text == segments[2]
        assert steps[-1].done and steps[-1].info["success"]
    direct = PythonToolFamily(PythonToolSettings(max_tool_calls=0, eval_size=8, sandbox=FAST))
    env = direct.train_envs(1, gen)[0]
    assert direct.demonstration(env, gen) == [env.problem.prompt, env.problem.answer]
    assert not {e.problem.prompt for e in family.eval_envs()} & {e.problem.prompt for e in family.train_envs(500, gen)}


def test_copies_share_the_sandbox_and_caps_are_checked(family) -> None:
    env = family.train_envs(1, torch.Generator().manual_seed(0))[0]
    assert isinstance(env, PythonToolEnv) and copy.deepcopy(env).sandbox is env.sandbox
    with pytest.raises(ConfigError, match="env.max_turns=2 leaves no turn to answer"):
        PythonToolFamily(PythonToolSettings(max_tool_calls=2), max_turns=2)
    assert ENV_FAMILIES.info("python_tool").settings is PythonToolSettings


@pytest.mark.slow
def test_an_agent_trains_with_the_tool(tmp_path) -> None:
    from rlft.config.agent import load_agent_config
    from rlft.trainers.registry import train_agent

    config = load_agent_config(None, [
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
        "model.intermediate_size=64", "warm_start.steps=30", "warm_start.batch_size=16", "warm_start.learning_rate=5e-3",
        "episodes=16", "episodes_per_iteration=8", "group_size=4", "eval_samples=1", "eval_every=1",
        "episode.max_turn_tokens=24", "episode.max_total_tokens=80", "torch_threads=1", "env.name=python_tool",
        "env.max_turns=3", "env.max_tool_calls=2", "env.eval_size=4", "env.sandbox.timeout=3", f"run_dir={tmp_path}",
    ])
    summary = train_agent(config, progress=False)
    assert summary["steps"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "train/success" in m]
    assert all({"tool/calls_per_episode", "tool/errors", "tool/timeouts"} <= set(m) for m in steps)
    assert all(0 <= m["tool/calls_per_episode"] <= 2 for m in steps)
    evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert "eval/tool/calls_per_episode" in evals[-1]


def test_the_docs_list_every_setting() -> None:
    import dataclasses
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "multiturn.md").read_text()
    for f in dataclasses.fields(PythonToolSettings):
        assert f"| `env.{f.name}` |" in doc, f.name

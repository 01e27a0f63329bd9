"""examples/code/: the committed data is what the seeded generator writes, every reference
solution passes its own tests in the real sandbox (and a wrong one does not), no held-out prompt
is trained on, and both recipes load as written."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from rlft.config import load_config
from rlft.config.agent import load_agent_config
from rlft.rewards import build_reward, score

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "code"


def _generator():
    spec = importlib.util.spec_from_file_location("code_example_generate", EXAMPLE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / "data" / name).read_text().splitlines()]


def test_the_data_is_the_generators_and_held_out_prompts_are_never_trained_on():
    train, test = _generator().generate(1600, 200, 0)
    assert (train, test) == (_rows("train.jsonl"), _rows("test.jsonl"))
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert {r["kind"] for r in test} == set(_generator().KINDS)


def test_reference_solutions_pass_their_tests_in_the_sandbox_and_wrong_ones_fail():
    rows = random.Random(0).sample(_rows("train.jsonl"), 40) + _rows("test.jsonl")[:40]
    reward = build_reward({"type": "unit_tests", "sandbox": {"workers": 4}})
    try:
        right = score(reward, [r["prompt"] for r in rows], [r["answer"] for r in rows], tests=[r["tests"] for r in rows])
        off_by_one = [r["answer"].replace("return ", "return 1+", 1) if r["kind"] != "repeat"
                      else r["answer"] + "+'x'" for r in rows]
        wrong = score(reward, [r["prompt"] for r in rows], off_by_one, tests=[r["tests"] for r in rows])
    finally:
        reward.close()
    assert right.rewards == [1.0] * len(rows)
    assert max(wrong.rewards) == 0.0


def test_both_recipes_load():
    config = load_config(EXAMPLE / "recipe.yaml")
    assert config.reward["type"] == "unit_tests" and config.task.name == "dataset"
    agent = load_agent_config(EXAMPLE / "tool_use.yaml")
    assert agent.env.name == "python_tool" and agent.env.settings["max_tool_calls"] == 2
    assert agent.env.max_turns > agent.env.settings["max_tool_calls"]

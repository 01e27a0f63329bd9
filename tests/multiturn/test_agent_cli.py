"""``rlft agent`` as a user runs it: a short run per method writes its folder and prints success."""

from __future__ import annotations

import json

import pytest

from rlft.cli.main import main

SMALL = ["episodes=64", "episodes_per_iteration=32", "warm_start.steps=5", "eval_samples=1",
         "ilql.epochs=1", "archer.warmup_iterations=0", "archer.critic_steps=1", "torch_threads=1"]  # fmt: skip


@pytest.mark.parametrize("algorithm", ["grpo", "ilql", "archer"])
def test_rlft_agent_runs_each_method(tmp_path, capsys, algorithm):
    args = ["agent", "--set", f"algorithm={algorithm}", "--set", f"run_dir={tmp_path}"]
    for item in SMALL:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "base: held-out success" in out and "held-out success" in out.splitlines()[-1]
    assert json.loads((tmp_path / "config.json").read_text())["algorithm"] == algorithm
    if algorithm == "ilql":
        assert (tmp_path / "logged_episodes.jsonl").read_text().count("\n") > 0


def test_rlft_agent_bad_key_names_the_nearest(capsys):
    assert main(["agent", "--set", "episdoes=10"]) == 2
    assert "episodes" in capsys.readouterr().err

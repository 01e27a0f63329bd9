"""``rlft agent`` as a user runs it: a short run per method writes its run folder and prints
success; a run killed with SIGKILL and continued with ``--resume`` ends where an uninterrupted
one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlft.cli.main import main

SMALL = ["episodes=64", "episodes_per_iteration=32", "warm_start.steps=5", "eval_samples=1",
         "ilql.epochs=1", "archer.warmup_iterations=0", "archer.critic_steps=1", "torch_threads=1"]  # fmt: skip


@pytest.mark.parametrize("algorithm", ["grpo", "ilql", "archer"])
def test_rlft_agent_runs_each_method(tmp_path, capsys, algorithm):
    args = ["agent", "--no-progress", "--set", f"algorithm={algorithm}", "--set", f"run_dir={tmp_path}"]
    for item in SMALL:
        args += ["--set", item]
    if algorithm == "ilql":
        args += ["--log-episodes", str(tmp_path.parent / f"{tmp_path.name}_episodes.jsonl")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "base: held-out success" in out and "held-out success" in out.splitlines()[-1]
    assert json.loads((tmp_path / "config.json").read_text())["algorithm"] == algorithm
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algorithm"] == algorithm and {"base_success", "final_success"} <= set(summary)
    assert (tmp_path / "final_model").is_dir() and list((tmp_path / "checkpoints").glob("step_*"))
    assert main(["audit", "verify", str(tmp_path)]) == 0
    if algorithm == "ilql":
        logged = (tmp_path / "logged_episodes.jsonl").read_text()
        assert logged.count("\n") > 0 and (tmp_path.parent / f"{tmp_path.name}_episodes.jsonl").read_text() == logged


def test_rlft_agent_bad_key_names_the_nearest(capsys):
    assert main(["agent", "--set", "episdoes=10"]) == 2
    assert "episodes" in capsys.readouterr().err


TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
        "model.intermediate_size=64", "warm_start.steps=40", "warm_start.batch_size=16",
        "warm_start.learning_rate=5e-3", "episodes=64", "episodes_per_iteration=8", "eval_samples=1",
        "eval_every=4", "episode.max_turn_tokens=8", "episode.max_total_tokens=40", "checkpoint.every=2",
        "torch_threads=1", "algorithm=archer", "archer.warmup_iterations=1", "archer.critic_steps=2",
        "archer.critic_batch_size=4", "archer.replay_actor_episodes=4"]  # fmt: skip


def _agent(run, *extra):
    sets = [a for item in [*TINY, f"run_dir={run}"] for a in ("--set", item)]
    return subprocess.Popen([sys.executable, "-m", "rlft.cli.main", "agent", "--no-progress", *sets, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_agent_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    """SIGKILL mid-run, then ``rlft agent --resume``: the replay buffer, target critic, optimisers
    and generator come back from the checkpoint, so the end equals an uninterrupted run's."""
    clean = _agent(tmp_path / "clean")
    killed = _agent(tmp_path / "killed")
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before it was killed"
    assert clean.wait(timeout=300) == 0, clean.stdout.read()
    resumed = _agent(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "clean" / "final_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final_model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("metrics.jsonl", "evals.jsonl"):
        assert (tmp_path / "clean" / name).read_text() == (tmp_path / "killed" / name).read_text(), name

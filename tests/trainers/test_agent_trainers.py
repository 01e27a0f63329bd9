"""The multi-turn agent trainers on the run harness (rlft.trainers.registry.train_agent): each
method trains and writes a whole run folder; a run stopped mid-way and resumed equals an
uninterrupted one; an overflowing learning rate stops with the last good checkpoint named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rlft.config.agent import load_agent_config
from rlft.errors import NonFiniteError
from rlft.trainers.registry import AGENT_TRAINERS, train_agent

# Tiny enough for a second a run on one thread: 4 iterations of 8 episodes, after a warm start
# just long enough that some episodes succeed (so advantages, and the update, are not zero).
TINY_AGENT = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
    "model.intermediate_size=64", "warm_start.steps=40", "warm_start.batch_size=16", "warm_start.learning_rate=5e-3",
    "episodes=32",
    "episodes_per_iteration=8", "group_size=4", "eval_samples=1", "eval_every=2", "episode.max_turn_tokens=8",
    "episode.max_total_tokens=40", "checkpoint.every=1", "torch_threads=1", "ilql.epochs=2", "ilql.batch_size=8",
    "archer.warmup_iterations=1", "archer.critic_steps=2", "archer.critic_batch_size=4",
    "archer.replay_actor_episodes=4",
]  # fmt: skip


def _config(run, algorithm, *extra):
    return load_agent_config(None, [*TINY_AGENT, f"algorithm={algorithm}", f"run_dir={run}", *extra])


class Crash(Exception):
    pass


def _crash_after(step):
    def on_step(metrics):
        if metrics["step"] == step:
            raise Crash  # after the step is logged, before its checkpoint: like a SIGKILL there
    return on_step


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("algorithm", sorted(AGENT_TRAINERS))
def test_agent_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path, algorithm):
    clean = train_agent(_config(tmp_path / "clean", algorithm), progress=False)
    with pytest.raises(Crash):
        train_agent(_config(tmp_path / "killed", algorithm), progress=False, on_step=_crash_after(3))
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = train_agent(_config(tmp_path / "killed", algorithm), resume=True, progress=False)

    assert clean["steps"] == resumed["steps"] == AGENT_TRAINERS[algorithm].planned_steps(_config(tmp_path, algorithm)) \
        or algorithm == "ilql"  # fmt: skip
    drop = {"seconds", "run_dir"}
    assert {k: v for k, v in clean.items() if k not in drop} == {k: v for k, v in resumed.items() if k not in drop}
    a = load_file(str(tmp_path / "clean" / "final_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final_model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(str(tmp_path / "clean" / "base_model" / "model.safetensors"))
    assert any(not torch.equal(a[k], base[k]) for k in a), "the run did not train: equal runs prove nothing"
    for name in ("metrics.jsonl", "evals.jsonl", "samples.jsonl"):
        assert _jsonl(tmp_path / "clean" / name) == _jsonl(tmp_path / "killed" / name), name
    run = tmp_path / "killed"
    events = [r["event"] for r in _jsonl(run / "audit.jsonl")]
    assert events[0] == "run_start" and events.count("run_resume") == 1 and events[-1] == "run_end"
    assert json.loads((run / "config.json").read_text())["algorithm"] == algorithm
    base = json.loads((run / "base_eval.json").read_text())
    assert set(base) >= {"eval/success", "eval/mean_return"} and clean["base_success"] == base["eval/success"]


def test_a_resumed_agent_run_may_add_episodes_but_not_change_the_recipe(tmp_path):
    from rlft.errors import RlftError

    run = tmp_path / "run"
    train_agent(_config(run, "grpo", "episodes=16"), progress=False)
    with pytest.raises(RlftError, match=r"group_size: 4 -> 8"):
        train_agent(_config(run, "grpo", "episodes=16", "group_size=8"), resume=True, progress=False)
    summary = train_agent(_config(run, "grpo", "episodes=32"), resume=True, progress=False)
    assert summary["steps"] == 4 and [m["step"] for m in _jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.mark.parametrize(("algorithm", "extra", "kept"), [
    ("ppo", ["learning_rate=1e30"], "No checkpoint was written"),  # its critic has a gradient from step 1
    # ArCHer's actor waits for warmup_iterations: its first update, at step 3, overflows.
    ("archer", ["learning_rate=1e30", "archer.warmup_iterations=2"], r"last good checkpoint, \S+step_0000002, is intact"),
    ("ilql", ["ilql.learning_rate=1e30"], "No checkpoint was written"),
])  # fmt: skip
def test_an_overflowing_learning_rate_stops_with_the_last_good_checkpoint(tmp_path, algorithm, extra, kept):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=rf"Stopped at {algorithm} step \d+: The weights overflowed.*1e\+30.*{kept}"):
        train_agent(_config(run, algorithm, *extra), progress=False)
    assert not (run / "final_model").exists() and not (run / "summary.json").exists()


def test_a_run_started_from_another_runs_base_starts_from_the_same_weights(tmp_path):
    first = train_agent(_config(tmp_path / "first", "grpo", "episodes=8"), progress=False)
    # No warm start: an absurd warm-start rate would otherwise ruin the base.
    second = train_agent(_config(tmp_path / "second", "archer", "episodes=8", "warm_start.learning_rate=1e3",
                                 f"base_model={tmp_path / 'first' / 'base_model'}"), progress=False)
    a = load_file(str(tmp_path / "first" / "base_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "second" / "base_model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a) and first["base_success"] == second["base_success"]
    recorded = json.loads((tmp_path / "second" / "data.json").read_text())
    assert set(recorded) == {"base_model"}  # its hash: a resumed run refuses a changed base

"""The four plugin examples of docs/extending.md, each trained for 2 steps through the CLI in a
subprocess as the page says (``--plugin examples/plugin/FILE.py``), with a spy plugin (or the
example's own metric) showing that the registered code ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples" / "plugin"

# The demo recipe, small enough for a few seconds on 2 cores.
TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
        "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.steps=2",
        "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4", "rollout.max_new_tokens=4",
        "eval.every=2", "checkpoint.every=1", "train.torch_threads=1"]  # fmt: skip
AGENT_TINY = ["episodes=64", "episodes_per_iteration=32", "warm_start.steps=5", "eval_samples=1",
              "torch_threads=1"]  # fmt: skip

# A plugin that wraps a registered function (replace=True, its metadata kept) and counts its calls.
SPY = """
import dataclasses
import rlft
from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
from rlft.algorithms.losses import POLICY_LOSSES

registry, register = {{"loss": (POLICY_LOSSES, rlft.register_policy_loss),
                      "advantage": (ADVANTAGE_ESTIMATORS, rlft.register_advantage_estimator)}}["{kind}"]
inner, info = registry["{name}"], registry.info("{name}")


def spy(*args, **kwargs):
    with open({counter!r}, "a") as f:
        f.write("call\\n")
    return inner(*args, **kwargs)


register("{name}", spy, replace=True, **dataclasses.asdict(info))
"""


def rlft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def spy_plugin(tmp_path: Path, kind: str, name: str) -> tuple[Path, Path]:
    counter = tmp_path / f"{kind}_calls.txt"
    plugin = tmp_path / f"spy_{kind}.py"
    plugin.write_text(SPY.format(kind=kind, name=name, counter=str(counter)))
    return plugin, counter


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def calls(counter: Path) -> int:
    return counter.read_text().count("call") if counter.exists() else 0


@pytest.mark.slow
def test_the_cispo_loss_example_trains(tmp_path):
    spy, counter = spy_plugin(tmp_path, "loss", "cispo")
    run = tmp_path / "run"
    out = rlft("train", "examples/plugin/cispo.yaml", "--plugin", "examples/plugin/cispo_loss.py", "--plugin", str(spy),
               "--run-dir", str(run), "--no-progress", *sets(TINY))
    assert out.returncode == 0, out.stderr[-3000:]
    config = (run / "config.yaml").read_text()
    assert "name: grpo_cispo" in config and "policy_loss: cispo" in config and "clip_high: 0.28" in config
    assert "mini_batch_size: 8" in config  # the preset's two mini-batches per batch of 16
    assert str(EXAMPLES / "cispo_loss.py") in config and str(spy) in config  # recorded for --resume / eval
    # 2 steps x 2 mini-batches of 8 (the preset's, one micro-batch each): the loss ran 4 times
    assert calls(counter) == 4
    assert [m["step"] for m in metrics(run) if "policy/clip_fraction" in m] == [1, 2]


@pytest.mark.slow
def test_the_group_median_advantage_example_trains(tmp_path):
    spy, counter = spy_plugin(tmp_path, "advantage", "group_median")
    run = tmp_path / "run"
    out = rlft("train", "examples/plugin/median.yaml", "--plugin", "examples/plugin/median_advantage.py",
               "--plugin", str(spy), "--run-dir", str(run), "--no-progress", *sets(TINY))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "advantage_estimator: group_median" in (run / "config.yaml").read_text()
    assert calls(counter) == 2  # once per step, on the step's whole batch


@pytest.mark.slow
def test_the_close_answer_reward_example_trains_and_logs_its_parts(tmp_path):
    run = tmp_path / "run"
    out = rlft("train", "examples/plugin/close_answer.yaml", "--plugin", "examples/plugin/close_answer_reward.py",
               "--run-dir", str(run), "--no-progress", *sets(TINY))
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [m for m in metrics(run) if "reward/closeness" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:  # the mean reward is the closeness; an exact answer has closeness 1
        assert m["reward/mean"] == pytest.approx(m["reward/closeness"]) and m["reward/exact"] <= m["reward/closeness"]
    recipe = (run / "config.yaml").read_text()
    assert "type: close_answer" in recipe and "scale: 20" in recipe


@pytest.mark.slow
def test_the_recall_environment_example_trains_an_agent(tmp_path):
    run = tmp_path / "run"
    out = rlft("agent", "examples/plugin/recall.yaml", "--plugin", "examples/plugin/recall_env.py", "--no-progress",
               *sets([*AGENT_TINY, f"run_dir={run}"]))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "grpo: held-out success" in out.stdout
    env = json.loads((run / "config.json").read_text())["env"]
    assert env["name"] == "recall" and env["settings"] == {"digits": 2, "held_out": 0.2, "ack_reward": 0.2}
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["prompt"].startswith("Remember ") for s in samples)  # the plugin's episodes
    assert "What was the number?" in samples[0]["completion"]  # its second turn
    assert [m["episodes"] for m in metrics(run) if "train/success" in m] == [32, 64]


def test_a_setting_of_the_example_environment_is_checked_like_a_section(tmp_path):
    out = rlft("agent", "examples/plugin/recall.yaml", "--plugin", "examples/plugin/recall_env.py",
               "--set", "env.digits=7", "--set", f"run_dir={tmp_path / 'run'}")
    assert out.returncode == 2 and "env.digits=7 is out of range; it must be <= 4" in out.stderr
    assert not (tmp_path / "run").exists()


def test_without_the_plugin_the_example_names_what_is_registered(tmp_path):
    out = rlft("train", "examples/plugin/median.yaml", "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "algorithm.advantage_estimator='group_median' is not allowed; choose one of 'reinforce'" in out.stderr
    assert "--plugin" in out.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".yaml")))
def test_docs_show_each_example_file_as_it_is(name):
    """docs/extending.md shows the files that the tests above train, not a copy that drifts."""
    assert (EXAMPLES / name).read_text().rstrip("\n") in (ROOT / "docs" / "extending.md").read_text()

"""--plugin as a user runs it: on every command; recorded in a run's config.yaml, so that --resume,
rlft eval, rlft report and rlft compare import it again; a recorded plugin that is gone is one
clear error naming it; and a built-in's parts registered again under new names train bit for bit
as the built-in does (the registries are plumbing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlft.cli.main import build_parser

ROOT = Path(__file__).parents[2]
TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
        "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.steps=2",
        "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4", "rollout.max_new_tokens=4",
        "eval.every=2", "checkpoint.every=1", "train.torch_threads=1"]  # fmt: skip

COUNTING_REWARD = """
import dataclasses
import rlft
from rlft.schema import setting


@rlft.register_reward("counted")
@dataclasses.dataclass
class Counted:
    bonus: float = setting(0.5, "Score of every completion.")

    def __call__(self, prompts, completions, **context):
        with open({counter!r}, "a") as f:
            f.write("call\\n")
        return [self.bonus] * len(completions)
"""

SAME_PARTS = """
import rlft
from rlft.algorithms.advantages import grpo_advantages
from rlft.algorithms.kl import kl_k3
from rlft.algorithms.losses import clipped_surrogate_loss

rlft.register_policy_loss("ppo_clip_again", clipped_surrogate_loss)
rlft.register_advantage_estimator("grpo_again", grpo_advantages, needs_groups=True)
rlft.register_kl_estimator("k3_again", kl_k3)
rlft.register_algorithm("grpo_again", {"policy_loss": "ppo_clip_again", "advantage_estimator": "grpo_again",
                                       "kl_estimator": "k3_again"})
"""


def rlft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def commands(parser, path=()):  # noqa: ANN001, ANN202
    """(command words, parser) of every command a user can run."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from commands(sub, (*path, name))


def test_every_command_takes_plugin():
    found = dict(commands(build_parser()))
    assert {("train",), ("agent",), ("eval",), ("report",), ("serve",), ("online",), ("compare",), ("demo",),
            ("rm", "train"), ("feedback", "serve")} <= set(found)  # fmt: skip
    missing = [" ".join(words) for words, parser in found.items()
               if not any("--plugin" in a.option_strings for a in parser._actions)]
    assert missing == []


def test_plugin_runs_before_any_command(tmp_path):
    """Even a command that reads no recipe imports the plugin first (its error proves the order)."""
    plugin = tmp_path / "loud.py"
    plugin.write_text("raise RuntimeError('plugin ran')\n")
    out = rlft("runs", str(tmp_path), "--plugin", str(plugin))
    assert out.returncode == 2 and "RuntimeError: plugin ran" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def plugin_run(tmp_path):
    """A finished 2-step run whose reward comes from a plugin file that counts its calls."""
    counter = tmp_path / "calls.txt"
    plugin = tmp_path / "counted_reward.py"
    plugin.write_text(COUNTING_REWARD.format(counter=str(counter)))
    run = tmp_path / "run"
    out = rlft("demo", "--plugin", str(plugin), "--run-dir", str(run), "--no-progress",
               *sets([*TINY, "reward={type: counted, bonus: 0.25}"]))
    assert out.returncode == 0, out.stderr[-3000:]
    return run, plugin, counter


@pytest.mark.slow
def test_resume_eval_and_report_import_the_recorded_plugin(plugin_run, tmp_path):
    run, plugin, counter = plugin_run
    recorded = (run / "config.yaml").read_text()
    assert f"plugins:\n- {plugin}\n" in recorded and "type: counted" in recorded
    trained = counter.read_text().count("call")
    # --resume without --plugin: config.yaml's plugin is imported before the recipe is checked
    out = rlft("demo", "--resume", "--run-dir", str(run), "--no-progress", *sets([*TINY, "train.steps=3",
               "reward={type: counted, bonus: 0.25}"]))
    assert out.returncode == 0, out.stderr[-3000:]
    assert counter.read_text().count("call") > trained
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()][-1] == 3
    assert (run / "config.yaml").read_text() == recorded.replace("steps: 2", "steps: 3")
    ev = rlft("eval", str(run), "--json")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout.strip().splitlines()[-1])["mean_reward"] == pytest.approx(0.25)
    report = rlft("report", str(run), "--prompts", "1", "-o", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]


@pytest.mark.slow
def test_a_recorded_plugin_that_is_gone_is_one_error_naming_it(plugin_run, tmp_path):
    run, plugin, _ = plugin_run
    plugin.rename(tmp_path / "moved.py")
    for args in (["demo", "--resume", "--run-dir", str(run), *sets([*TINY, "train.steps=3"])],
                 ["eval", str(run)], ["report", str(run)]):
        out = rlft(*args)
        assert out.returncode == 2, args
        assert f"Plugin file '{plugin}' (recorded in {run / 'config.yaml'}) does not exist" in out.stderr, args
        assert "restore it" in out.stderr and "Traceback" not in out.stderr, args
    compared = rlft("compare", str(run), "--out", str(tmp_path / "compare.html"))
    assert compared.returncode == 0 and "warning" in compared.stderr and str(plugin) in compared.stderr


@pytest.mark.slow
def test_a_builtins_parts_registered_again_train_bit_for_bit_as_the_builtin(tmp_path):
    """The change is plumbing: grpo and 'grpo_again' (its loss, estimator and KL registered by a
    plugin under new names) write the same metrics, every value equal."""
    plugin = tmp_path / "same_parts.py"
    plugin.write_text(SAME_PARTS)
    runs = {}
    for name, extra in (("grpo", []), ("grpo_again", ["--plugin", str(plugin)])):
        runs[name] = tmp_path / name
        # a reward that varies within groups, so that advantages, losses and gradients are not 0
        out = rlft("demo", *extra, "--run-dir", str(runs[name]), "--no-progress",
                   *sets([*TINY, f"algorithm.name={name}", "reward={type: length_penalty, max_length: 1, coef: 0.1}"]))
        assert out.returncode == 0, out.stderr[-3000:]

    def values(run: Path) -> list[dict]:
        rows = [json.loads(line) for name in ("metrics.jsonl", "evals.jsonl")
                for line in (run / name).read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in rows]

    steps = [row for row in values(runs["grpo"]) if "reward/std" in row]
    assert len(steps) == 2 and all(row["reward/std"] > 0 and row["optim/grad_norm"] > 0 for row in steps)
    assert values(runs["grpo"]) == values(runs["grpo_again"])
    again = (runs["grpo_again"] / "config.yaml").read_text()
    assert "policy_loss: ppo_clip_again" in again and "advantage_estimator: grpo_again" in again


def test_a_plugin_path_relative_to_the_current_folder_is_recorded_absolute(tmp_path):
    shutil.copy(ROOT / "examples" / "plugin" / "median_advantage.py", tmp_path / "median_advantage.py")
    out = rlft("train", str(ROOT / "examples" / "plugin" / "median.yaml"), "--plugin", "median_advantage.py",
               "--run-dir", "run", "--no-progress", *sets([*TINY, "train.steps=1"]), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"- {tmp_path / 'median_advantage.py'}\n" in (tmp_path / "run" / "config.yaml").read_text()

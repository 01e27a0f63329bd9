"""The CLI run as a user runs it: a subprocess, exit codes, messages without tracebacks."""

import json
import subprocess
import sys

import pytest


def rlft(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_help_lists_commands():
    out = rlft("--help")
    assert out.returncode == 0
    for command in ("demo", "train", "eval", "sample"):
        assert command in out.stdout
    for command in ("demo", "train", "eval", "sample"):
        assert rlft(command, "--help").returncode == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.yaml"], "does not exist"),
        (["demo", "--set", "train.stepz=3"], "Did you mean 'train.steps'"),
        (["demo", "--set", "train.batch_size=100"], "not a multiple of algorithm.group_size"),
        (["demo", "--set", "model.path=/no/such/model"], "does not exist"),
        # the LoRA target check reads the model's config first: a missing model is still one message
        (["demo", "--set", "model.path=/no/such/model", "--set", "lora.r=4", "--set", "lora.target_modules=[q_proj]"],
         "does not exist"),
        (["demo", "--set", "lora.r=4", "--set", "lora.target_modules=[]"], "lora.target_modules is empty"),
        (["eval", "/no/such/model"], "does not exist"),
    ],
)
def test_user_errors_are_one_clear_message(args, message, tmp_path):
    out = rlft(*args, "--run-dir", str(tmp_path / "run")) if args[0] == "demo" else rlft(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_recipe_names_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  steps: [1,\n")
    out = rlft("train", str(recipe))
    assert out.returncode == 2 and "r.yaml is not valid YAML" in out.stderr


@pytest.mark.slow
def test_train_then_eval_and_sample_a_run(tmp_path, tiny_recipe):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\n")
    sets = [a for r in tiny_recipe for a in ("--set", r)]
    out = rlft("train", str(recipe), "--no-progress", *sets, "--set", "train.steps=2")
    assert out.returncode == 0, out.stderr
    assert "held-out accuracy before RL" in out.stdout and "held-out accuracy after RL" in out.stdout
    ev = rlft("eval", str(tmp_path / "run"), "--json")
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # rlft eval reloads final_model/ from disk: the same greedy answers as the run's last evaluation.
    assert result["eval_size"] == 16 and result["accuracy"] == pytest.approx(summary["final_accuracy"], abs=1e-9)
    sm = rlft("sample", str(tmp_path / "run"), "12+3=", "--max-new-tokens", "4")
    assert sm.returncode == 0 and sm.stdout.startswith("12+3=")

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlft.config import config_from_dict
from rlft.errors import NonFiniteError, RlftError
from rlft.trainers.registry import train
from rlft.trainers.run import Evaluation

pytestmark = pytest.mark.slow


def _config(tmp_path, recipe, *extra):
    return config_from_dict({}, [*recipe, f"run_dir={tmp_path / 'run'}", *extra])


def test_training_runs_changes_parameters_and_logs_finite_metrics(tmp_path, tiny_recipe, monkeypatch):
    from safetensors.torch import load_file

    from rlft.tasks.arithmetic import ArithmeticTask

    # An untrained tiny model never solves a problem; reward the parity of the characters so advantages are non-zero.
    monkeypatch.setattr(ArithmeticTask, "reward", lambda self, c, p: [float(sum(map(ord, x)) % 2) for x in c])
    config = _config(tmp_path, tiny_recipe)
    summary = train(config, progress=False)
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    for m in metrics:
        for key in ("reward/mean", "policy/kl", "policy/entropy", "optim/grad_norm", "loss/total",
                    "perf/tokens_per_s", "perf/step_seconds", "completions/mean_length", "policy/clip_fraction"):
            assert math.isfinite(m[key]), key
    base = load_file(str(run / "base_model" / "model.safetensors"))
    final = load_file(str(run / "final_model" / "model.safetensors"))
    assert any(not torch.equal(base[k], final[k]) for k in base)
    evals = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [3, 6]  # eval.every=3
    assert summary["steps"] == 6 and summary["final_accuracy"] == evals[-1]["eval/accuracy"]
    assert (run / "config.yaml").exists() and (run / "summary.json").exists()
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_0000004", "step_0000006"]


def test_existing_run_is_not_overwritten(tmp_path, tiny_recipe):
    config = _config(tmp_path, tiny_recipe, "train.steps=1", "warm_start.steps=0")
    train(config, progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(RlftError, match="already holds a run"):
        train(config, progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_resume_with_another_recipe_is_refused(tmp_path, tiny_recipe):
    train(_config(tmp_path, tiny_recipe, "train.steps=2", "warm_start.steps=0"), progress=False)
    other = _config(tmp_path, tiny_recipe, "train.steps=2", "warm_start.steps=0", "train.learning_rate=0.1")
    with pytest.raises(RlftError, match=r"another recipe.*train.learning_rate"):
        train(other, resume=True, progress=False)


def test_a_run_from_before_a_field_existed_resumes_with_its_default(tmp_path, tiny_recipe):
    import yaml

    config = _config(tmp_path, tiny_recipe, "train.steps=1", "warm_start.steps=0", "checkpoint.every=1")
    train(config, progress=False)
    saved = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["algorithm"]["kl_clamp"], old["task"]["prompt_field"]  # as written by an older rlft
    saved.write_text(yaml.safe_dump(old))
    longer = _config(tmp_path, tiny_recipe, "train.steps=2", "warm_start.steps=0", "checkpoint.every=1")
    assert train(longer, resume=True, progress=False)["steps"] == 2
    changed = _config(tmp_path, tiny_recipe, "train.steps=3", "warm_start.steps=0", "checkpoint.every=1",
                      "algorithm.kl_clamp=5.0")  # fmt: skip
    with pytest.raises(RlftError, match=r"algorithm.kl_clamp: 10.0 -> 5.0"):
        train(changed, resume=True, progress=False)


def test_non_finite_rewards_are_skipped_then_stop_the_run(tmp_path, tiny_recipe, monkeypatch):
    from rlft.tasks.arithmetic import ArithmeticTask

    config = _config(tmp_path, tiny_recipe, "train.max_consecutive_nonfinite=2", "checkpoint.every=1")
    original = ArithmeticTask.reward
    calls = {"n": 0}

    def flaky_reward(self, completions, problems):
        calls["n"] += 1
        rewards = original(self, completions, problems)
        # Call 1 is the reward's preflight (evaluations are switched off below), calls 2-3 are
        # good RL steps, then NaN.
        return [float("nan")] * len(rewards) if calls["n"] >= 4 else rewards

    monkeypatch.setattr(ArithmeticTask, "reward", flaky_reward)
    monkeypatch.setattr("rlft.trainers.loop.RLTrainer.evaluate", lambda self, step: Evaluation({}))
    with pytest.raises(NonFiniteError, match=r"Stopped at grpo step 4: 2 steps in a row.*step_0000003.*intact"):
        train(config, progress=False)
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["train/skipped"] for m in metrics] == [0, 0, 1]
    # Skipped steps left the weights alone: checkpoint 3 equals checkpoint 2.
    from safetensors.torch import load_file

    two = load_file(str(run / "checkpoints" / "step_0000002" / "model.safetensors"))
    three = load_file(str(run / "checkpoints" / "step_0000003" / "model.safetensors"))
    assert all(torch.equal(two[k], three[k]) for k in two)


def _run_cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "rlft.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path, tiny_recipe):
    """SIGKILL mid-run, then --resume: same final weights and metrics as an uninterrupted run."""
    recipe = [*tiny_recipe, "train.steps=8", "checkpoint.every=2", "eval.every=4"]
    sets = [a for r in recipe for a in ("--set", r)]
    clean = _run_cli(["demo", "--no-progress", "--run-dir", str(tmp_path / "clean"), *sets])
    assert clean.wait(timeout=300) == 0, clean.stdout.read()

    killed = _run_cli(["demo", "--no-progress", "--run-dir", str(tmp_path / "killed"), *sets])
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before it was killed"
    resumed = _run_cli(["demo", "--no-progress", "--resume", "--run-dir", str(tmp_path / "killed"), *sets])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "clean" / "final_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final_model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    def stable(path):
        drop = ("perf/tokens_per_s", "perf/rollout_seconds", "perf/step_seconds", "perf/weight_sync_s")
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]

    assert stable(tmp_path / "clean" / "metrics.jsonl") == stable(metrics)


def test_lora_recipe_trains_only_the_adapter_and_the_run_evaluates(tmp_path, tiny_recipe):
    from safetensors.torch import load_file

    config = _config(tmp_path, tiny_recipe, "train.steps=2", "lora.r=4")
    train(config, progress=False)
    run = tmp_path / "run"
    assert (run / "final_model" / "adapter_config.json").exists()
    ckpt = load_file(str(run / "checkpoints" / "step_0000002" / "model.safetensors"))
    base = load_file(str(run / "base_model" / "model.safetensors"))
    for name, value in ckpt.items():
        if "lora_" in name:
            continue
        plain = name.removeprefix("policy.base_model.model.").replace(".base_layer", "")
        plain = "model.embed_tokens.weight" if plain == "lm_head.weight" else plain  # tied
        assert torch.equal(value, base[plain]), f"{name} changed although only the adapter trains"
    out = subprocess.run([sys.executable, "-m", "rlft.cli.main", "eval", str(run), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["model"].endswith("final_model")


def test_reviews_task_trains_with_sampled_evaluation(tmp_path, tiny_recipe):
    recipe = [*tiny_recipe, "task.name=reviews", "rollout.max_new_tokens=10", "warm_start.steps=30",
              "eval.temperature=1.0", "eval.samples=2"]  # fmt: skip
    summary = train(_config(tmp_path, recipe), progress=False)
    run = tmp_path / "run"
    assert summary["steps"] == 6 and summary["eval_size"] == 16
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["prompt"].startswith("Review of the ") for s in samples)
    # two sampled completions per held-out prompt: the first rows repeat the first prompt
    assert samples[0]["prompt"] == samples[1]["prompt"]

"""`rlft train --data ... --reward ...` as a new user types it: one command, their file, their reward."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REWARD = '''
import json, os

def score(prompts, completions, answers, level, **context):
    with open(os.environ["SEEN_FILE"], "a") as f:
        f.write(json.dumps({"keys": sorted(context), "level": level[:2], "n": len(prompts)}) + "\\n")
    return [float(c.strip() == a) for c, a in zip(completions, answers)]
'''


def rlft(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture
def user_files(tmp_path):
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "level": "easy" if a < 5 else "hard"}
            for a in range(10) for b in range(10)]  # fmt: skip
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reward = tmp_path / "my_reward.py"
    reward.write_text(REWARD)
    return data, reward


@pytest.mark.slow
def test_one_command_trains_on_a_users_file_and_reward(tmp_path, tiny_recipe, user_files, monkeypatch):
    import os

    data, reward = user_files
    env = {**os.environ, "SEEN_FILE": str(tmp_path / "seen.jsonl")}
    sets = [a for r in tiny_recipe for a in ("--set", r)]
    run = tmp_path / "run"
    out = rlft("train", "--data", str(data), "--reward", f"{reward}:score", "--run-dir", str(run),
               "--no-progress", *sets, "--set", "train.steps=2", "--set", "task.eval_fraction=0.2", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "held-out pass rate before RL" in out.stdout and "held-out pass rate after RL" in out.stdout
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert all(s["level"][0] in ("easy", "hard") for s in seen)  # the extra column reached the reward
    assert {"problems"} <= set(seen[0]["keys"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_size"] == 16 and summary["headline_metric"] == "pass_rate"
    record = json.loads((run / "data.json").read_text())
    assert record["task.data"]["path"] == str(data) and len(record["task.data"]["sha256"]) == 64
    audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
    assert audit[0]["fields"]["data_sha256"]["task.data"] == record["task.data"]["sha256"]

    ev = rlft("eval", str(run), "--json", env=env)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert result["task"] == "dataset" and result["eval_size"] == 16
    assert result["pass_rate"] == pytest.approx(summary["final_pass_rate"])
    elsewhere = subprocess.run([sys.executable, "-m", "rlft.cli.main", "eval", str(run), "--data", str(data), "--json"],
                               capture_output=True, text=True, timeout=600, env=env, cwd="/")  # fmt: skip
    assert elsewhere.returncode == 0, elsewhere.stderr  # another file (here the training one), another cwd
    assert json.loads(elsewhere.stdout.strip().splitlines()[-1])["eval_size"] == 16

    data.write_text(data.read_text().replace('"answer": "2"', '"answer": "3"', 1))
    again = rlft("train", "--data", str(data), "--reward", f"{reward}:score", "--run-dir", str(run),
                 "--no-progress", *sets, "--set", "train.steps=3", "--set", "task.eval_fraction=0.2", "--resume", env=env)  # fmt: skip
    assert again.returncode == 2 and "task.data" in again.stderr and "changed since the run started" in again.stderr
    assert "Traceback" not in again.stderr
    warned = rlft("eval", str(run), "--json", env=env)
    assert warned.returncode == 0 and "task.data changed since" in warned.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reward", "nowhere.py:score"], "nowhere.py does not exist"),
        (["--reward", "REWARD:nope"], "has no attribute 'nope'"),
        ([], "has no reward of its own"),
        (["--reward", "exact_match", "--answer-field", "solution"], "no column 'solution'"),
    ],
)
def test_one_line_mistakes_are_one_clear_error(tmp_path, user_files, flags, message):
    data, reward = user_files
    flags = [str(reward) + ":nope" if f == "REWARD:nope" else f for f in flags]
    out = rlft("train", "--data", str(data), "--run-dir", str(tmp_path / "run"), *flags)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written for a run that never started


def test_train_without_recipe_or_data_says_what_to_give():
    out = rlft("train")
    assert out.returncode == 2 and "needs a recipe file, or --data" in out.stderr


@pytest.mark.slow
def test_conversational_data_trains_offline_with_the_tiny_models_chat_template(tmp_path, tiny_recipe):
    rows = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}], "answer": str(a + b)}
            for a in range(10) for b in range(10)]  # fmt: skip
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = [a for r in tiny_recipe for a in ("--set", r)]
    run = tmp_path / "run"
    out = rlft("train", "--data", str(data), "--prompt-field", "messages", "--reward", "exact_match",
               "--run-dir", str(run), "--no-progress", *sets, "--set", "train.steps=1",
               "--set", "task.system_prompt=Reply with a number.", "--set", "task.eval_fraction=0.2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    template = json.loads((run / "base_model" / "tokenizer_config.json").read_text()).get("chat_template") or (
        run / "base_model" / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"].startswith("<|im_start|>system\nReply with a number.<|im_end|>\n<|im_start|>user\nWhat is ")
    assert samples[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert all("<|im_end|>" not in s["completion"] for s in samples)  # the end of turn is not part of the answer


def test_a_reward_that_cannot_run_fails_before_training_and_the_run_can_be_rerun(tmp_path, user_files, tiny_recipe):
    data, _ = user_files
    strict = tmp_path / "strict.py"
    strict.write_text("def score(prompts, completions, answers):\n    return [0.0] * len(prompts)\n")
    sets = [a for r in tiny_recipe for a in ("--set", r)]
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--run-dir", str(run), "--no-progress", *sets, "--set", "train.steps=1",
            "--set", "task.eval_fraction=0.2"]  # fmt: skip
    out = rlft(*args, "--reward", f"{strict}:score")
    assert out.returncode == 2 and "unexpected keyword argument" in out.stderr and "**context" in out.stderr
    assert not (run / "base_model").exists()
    fixed = tmp_path / "fixed.py"
    fixed.write_text("def score(prompts, completions, answers, **context):\n    return [0.0] * len(prompts)\n")
    again = rlft(*args, "--reward", f"{fixed}:score")
    assert again.returncode == 0, again.stderr

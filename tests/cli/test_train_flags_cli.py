"""Which of the one-line flags and --set wins, as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys


def test_run_dir_flag_wins_over_set_run_dir(tmp_path, tiny_recipe):
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                            for a in range(5) for b in range(5)))  # fmt: skip
    reward = tmp_path / "stops.py"  # a reward that fails the preflight: the run stops before the warm start
    reward.write_text("def score(prompts, completions, **context):\n    raise ValueError('stop here')\n")
    sets = [a for r in [*tiny_recipe, "task.eval_fraction=0.2"] for a in ("--set", r)]
    out = subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", "train", "--data", str(data), "--reward", f"{reward}:score",
         "--set", "run_dir=from_set", "--run-dir", "2024", "--no-progress", *sets],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "stop here" in out.stderr, out.stderr[-2000:]
    assert "rlft: run folder 2024" in out.stdout  # a folder named like a number stays a folder name
    assert (tmp_path / "2024" / "config.yaml").exists() and not (tmp_path / "from_set").exists()


def test_eval_of_a_dataset_run_shows_the_pass_rate_then_the_mean_reward(tmp_path, tiny_model_dir, capsys):
    import shutil

    from rlft.cli.main import main
    from rlft.config import config_from_dict, dump_config

    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                            for a in range(5) for b in range(5)))  # fmt: skip
    run = tmp_path / "run"  # a finished run as `rlft train --data sums.jsonl --reward numeric` leaves it
    shutil.copytree(tiny_model_dir, run / "final_model")
    config = config_from_dict({"task": {"name": "dataset", "data": str(data), "eval_fraction": 0.2},
                               "reward": {"type": "numeric"}, "rollout": {"max_new_tokens": 4}})  # fmt: skip
    (run / "config.yaml").write_text(dump_config(config))
    assert main(["eval", str(run)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "accuracy" not in line  # the mean of a partial-credit reward is not an accuracy
    assert line.index("pass rate") < line.index("mean reward") and "on 5 problems (dataset)" in line

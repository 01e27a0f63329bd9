"""The RLHF example end to end at toy scale: preferences over real HTTP follow the hidden rule,
a reward model is trained on the export, PPO optimises it, and the report has every figure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location("rlhf_example", ROOT / "examples" / "rlhf" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hidden_preference():
    ex = load_example()
    assert ex.true_score("12+30=", "42") == 1.0
    assert ex.true_score("12+30=", "45") == pytest.approx(0.7)
    assert ex.true_score("12+30=", "4x") == 0.0 and ex.true_score("12+30=", "99") == 0.0
    assert ex.hidden_choice("1+1=", "3", "2") == "second" and ex.hidden_choice("1+1=", "7", "x") == "first"
    assert ex.hidden_choice("1+1=", "50", "x") == "tie"


@pytest.mark.slow
def test_rlhf_loop_at_toy_scale(tmp_path):
    pytest.importorskip("fastapi", reason="the feedback extra is not installed")
    ex = load_example()
    tiny = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "warm_start.steps=120",
            "task.eval_size=16", "train.steps=2", "train.batch_size=16", "eval.batch_size=16",
            "train.torch_threads=1"]
    report = ex.run_rlhf(tmp_path / "rlhf", items=64, overrides=tiny, rm_overrides=["epochs=1", "torch_threads=1"])
    for key in ("rm_pairwise_accuracy", "rm_score_before", "rm_score_after", "true_score_before", "true_score_after"):
        assert isinstance(report[key], float)
    assert report["ppo_steps"] == 2 and report["judgements"]["duplicates"] == 0
    judged = sum(report["judgements"][k] for k in ("A", "B", "tie"))
    assert judged > 0 and report["pairs"] == report["judgements"]["A"] + report["judgements"]["B"]

    # Every exported pair agrees with the hidden preference: the annotator's choices survived
    # the display shuffle, HTTP and the database.
    pairs = [json.loads(line) for line in (tmp_path / "rlhf" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(ex.true_score(p["prompt"], p["chosen"]) > ex.true_score(p["prompt"], p["rejected"])
                         for p in pairs)
    ppo_config = (tmp_path / "rlhf" / "ppo" / "config.yaml").read_text()
    assert "reward_model" in ppo_config and "name: ppo" in ppo_config
    assert json.loads((tmp_path / "rlhf" / "rlhf.json").read_text()) == report

"""The RLHF example end to end at toy scale: preferences over real HTTP follow the hidden rule,
a reward model is trained on the export, PPO optimises it, and the report has every figure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from rlft.tasks.reviews import true_score

ROOT = Path(__file__).parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location("rlhf_example", ROOT / "examples" / "rlhf" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hidden_preference():
    ex = load_example()
    assert ex.hidden_choice(" rude staff , bland food .", " great food , plain view .") == "second"
    assert ex.hidden_choice(" great food , great food .", " awful food , rude staff .") == "tie"  # both -1
    assert ex.hidden_choice(" great food , lovely view .", " great food , great") == "first"


@pytest.mark.slow
def test_rlhf_loop_at_toy_scale(tmp_path):
    pytest.importorskip("fastapi", reason="the feedback extra is not installed")
    ex = load_example()
    tiny = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "warm_start.steps=120",
            "task.eval_size=16", "train.steps=2", "train.batch_size=16", "eval.batch_size=64",
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
    assert pairs and all(true_score(p["chosen"]) > true_score(p["rejected"]) for p in pairs)
    ppo_config = (tmp_path / "rlhf" / "ppo" / "config.yaml").read_text()
    assert "reward_model" in ppo_config and "name: ppo" in ppo_config
    assert json.loads((tmp_path / "rlhf" / "rlhf.json").read_text()) == report

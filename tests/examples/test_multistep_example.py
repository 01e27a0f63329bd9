"""examples/multistep/: every recipe in it loads as written (the PPO recipe against a stand-in PRM
folder), and the PRM recipe points at the RL recipe it labels for."""

from __future__ import annotations

import json
from pathlib import Path

from rlft.config import load_config
from rlft.config.process_reward import load_prm_recipe

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multistep"


def test_the_rl_recipes_load_and_differ_only_where_they_say(tmp_path):
    outcome = load_config(EXAMPLE / "recipe.yaml")
    curriculum = load_config(EXAMPLE / "curriculum.yaml")
    assert outcome.task.name == curriculum.task.name == "multistep"
    assert (outcome.task.sampler, curriculum.task.sampler) == ("uniform", "curriculum")
    assert outcome.task.settings == curriculum.task.settings and outcome.train == curriculum.train
    prm = tmp_path / "prm" / "model"
    prm.mkdir(parents=True)
    (prm / "prm.json").write_text(json.dumps({"step_separator": "\n"}))  # the reward loads the PRM lazily
    ppo = load_config(EXAMPLE / "prm_ppo.yaml", [f"reward.path={tmp_path / 'prm'}"])
    assert ppo.algorithm.advantage_estimator == "gae" and ppo.reward["type"] == "process_model"
    assert ppo.task.settings == outcome.task.settings and ppo.train.batch_size == outcome.train.batch_size


def test_the_prm_recipe_labels_for_the_rl_recipe():
    recipe = load_prm_recipe(EXAMPLE / "prm.yaml")
    assert (EXAMPLE.parents[1] / recipe.label.recipe).resolve() == (EXAMPLE / "recipe.yaml").resolve()
    assert recipe.step_separator == "\n" and recipe.train_data.endswith("labels.jsonl")

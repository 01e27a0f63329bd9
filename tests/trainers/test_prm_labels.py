"""`rlft prm label`: Math-Shepherd labels from the policy's own continuations, checked against a
reward whose outcome is known from the prefix alone; hand-written labels are not overwritten."""

from __future__ import annotations

import json

import pytest

from rlft.config.process_reward import prm_recipe_from_dict
from rlft.errors import ConfigError
from rlft.rewards.step_labels import load_step_labels
from rlft.tasks.arithmetic import ArithmeticTask
from rlft.trainers.prm_labels import label_steps


def test_labels_are_the_share_of_continuations_that_reach_the_answer(tmp_path, tiny_run, monkeypatch):
    # "Right" = the completion's first character has an odd code: the first step decides, so every
    # continuation of a prefix agrees with the solution itself.
    monkeypatch.setattr(ArithmeticTask, "reward", lambda self, c, p: [float(bool(x) and ord(x[0]) % 2 == 1) for x in c])
    rl_recipe = tmp_path / "rl.yaml"
    rl_recipe.write_text("task: {name: arithmetic, eval_size: 8}\nrollout: {max_new_tokens: 12}\n")
    recipe = prm_recipe_from_dict({
        "train_data": str(tmp_path / "labels.jsonl"), "step_separator": " ", "seed": 3,
        # label.policy is a run folder: its final_model/ samples.
        "label": {"recipe": str(rl_recipe), "policy": str(tiny_run), "prompts": 12, "solutions": 3,
                  "rollouts": 3},
    })
    done = label_steps(recipe)
    rows = load_step_labels(tmp_path / "labels.jsonl")
    assert done["solutions"] == len(rows) and 0 < len(rows) <= 36 and done["sampled_tokens"] > 0
    checked = 0
    for row in rows:
        assert row.extra["rollouts"] == 3 and row.labels[-1] == float(row.extra["correct"])
        assert row.extra["hard_labels"] == [float(v > 0) for v in row.labels]
        for label in row.labels[:-1]:
            assert label == row.labels[-1]
            checked += 1
    assert checked >= 2  # prefixes were continued, and reached the answer exactly when the solution did
    with pytest.raises(ConfigError, match="exists.*--overwrite"):
        label_steps(recipe)
    # The command as a user types it: the same seed writes the same labels.
    from rlft.cli.main import main

    yaml_recipe = tmp_path / "prm.yaml"
    yaml_recipe.write_text(json.dumps({"train_data": str(tmp_path / "labels.jsonl"), "step_separator": " ", "seed": 3,
                                       "label": {"recipe": str(rl_recipe), "policy": str(tiny_run), "prompts": 12,
                                                 "solutions": 3, "rollouts": 3}}))
    assert main(["prm", "label", str(yaml_recipe), "--overwrite"]) == 0
    assert load_step_labels(tmp_path / "labels.jsonl") == rows


def test_the_labels_never_replace_a_file_labelling_reads(tmp_path, tiny_run, capsys):
    from rlft.cli.main import main

    rl_recipe = tmp_path / "rl.yaml"
    rl_recipe.write_text("task: {name: arithmetic, eval_size: 8}\n")
    label = {"recipe": str(rl_recipe), "policy": str(tiny_run), "prompts": 2}
    own = tmp_path / "prm.yaml"
    own.write_text(json.dumps({"train_data": str(own), "label": label}))
    assert main(["prm", "label", str(own), "--overwrite"]) == 2  # --overwrite does not extend to the recipe itself
    assert "a file rlft prm label reads" in capsys.readouterr().err and json.loads(own.read_text())["label"] == label
    with pytest.raises(ConfigError, match="a file rlft prm label reads"):
        label_steps(prm_recipe_from_dict({"train_data": str(rl_recipe), "label": label}), overwrite=True)
    assert rl_recipe.read_text().startswith("task:")
    inside = tiny_run / "final_model" / "labels.jsonl"
    with pytest.raises(ConfigError, match="inside label.policy"):
        label_steps(prm_recipe_from_dict({"train_data": str(inside), "label": label}))
    assert not inside.exists()

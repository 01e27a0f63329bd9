"""Process reward models: steps and their scored positions, step labels read with clear errors, a
PRM trained through `rlft prm train` that learns a step rule (held-out AUC), resumes, writes its
card, and the process_model reward that turns its scores into dense and sequence rewards."""

from __future__ import annotations

import contextlib
import io
import json
import random
import warnings
from pathlib import Path

import pytest

from rlft.errors import ConfigError
from rlft.models.loading import load_tokenizer
from rlft.rewards.process_model import combine_steps, split_steps, step_inputs
from rlft.rewards.step_labels import load_step_labels
from rlft.trainers.process_reward import roc_auc


def test_steps_and_where_they_end():
    assert split_steps("+5=12\n*2=24\n#24", "\n") == [("+5=12", 6), ("*2=24", 12), ("#24", 15)]
    assert split_steps("a\n\nb\n", "\n") == [("a", 2), ("b", 5)]  # empty pieces are not steps
    assert split_steps("", "\n") == [] and split_steps("one", "\n") == [("one", 3)]
    assert combine_steps([0.9, 0.2, 0.6], "min") == 0.2 and combine_steps([0.5, 0.25], "sum") == 0.75
    assert combine_steps([0.9, 0.2, 0.6], "last") == 0.6 and combine_steps([], "min") == 0.0
    assert roc_auc([0.9, 0.2, 0.6, 0.6], [True, False, True, False]) == 0.875


def test_each_step_is_scored_on_its_own_separator_token(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    sep = tokenizer("\n", add_special_tokens=False).input_ids
    ids, positions = step_inputs(tokenizer, "1+2=", ["3+4=7", "#7"], "\n", max_length=64)
    assert len(positions) == 2 and all(ids[p - len(sep) + 1 : p + 1] == sep for p in positions)
    assert positions[-1] == len(ids) - 1
    cut, kept = step_inputs(tokenizer, "1+2=", ["3+4=7", "#7"], "\n", max_length=positions[1] - positions[0])
    assert len(kept) == 1 and cut[kept[0]] == ids[positions[1]]  # the start is cut; the first step with it


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "p", "steps": ["a"]}, "no labels"),
    ({"prompt": "p", "steps": ["a", "b"], "labels": [1]}, "list of 2 numbers"),
    ({"prompt": "p", "steps": ["a"], "labels": [1.5]}, r"1.5 is not in \[0, 1\]"),
    ({"prompt": "p", "steps": [], "labels": []}, "non-empty list"),
])
def test_bad_step_labels_name_the_line_and_the_problem(tmp_path, row, message):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"prompt": "p", "steps": ["a"], "labels": [1]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match=f"labels.jsonl:2: .*{message}"):
        load_step_labels(path)


def _labels(path: Path, n: int, seed: int) -> None:
    """Solutions of 3 steps, each '+1' (label 1) or '-1' (label 0): a rule a PRM can learn."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        steps = [r.choice(["+1", "-1"]) for _ in range(3)]
        rows.append({"prompt": f"{i % 40}+{i % 7}=", "steps": steps, "labels": [float(s == "+1") for s in steps]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def prm_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("prm")
    _labels(root / "labels.jsonl", 160, seed=0)
    recipe = root / "prm.yaml"
    recipe.write_text(
        f"train_data: {root / 'labels.jsonl'}\noutput_dir: {root / 'run'}\nmodel_path: {tiny_model_dir}\n"
        "learning_rate: 3.0e-3\nepochs: 2\nbatch_size: 16\neval_fraction: 0.2\ntorch_threads: 1\n"
        "checkpoint: {every: 8}\n"
    )
    from rlft.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the command as a user types it, in this process
        assert main(["prm", "train", str(recipe), "--no-progress"]) == 0
    return root, out.getvalue()


def test_prm_learns_a_step_rule_and_writes_its_card(prm_run, capsys):
    from rlft.cli.main import main

    root, stdout = prm_run
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert summary["step_auc_before"] == 0.5  # a zero head scores every step 0.5
    assert summary["step_auc"] > 0.9 and summary["step_accuracy"] > 0.8, summary
    assert "process reward model in" in stdout and "AUC 0.500 ->" in stdout
    for name in ("model/prm.json", "model/value_head.safetensors", "model/config.json", "model_card.md"):
        assert (root / "run" / name).is_file(), name
    card = (root / "run" / "model_card.md").read_text()
    assert f"{summary['step_auc']:.3f}" in card and "Math-Shepherd" in card and "'\\n'" in card
    assert main(["prm", "eval", str(root / "run"), "--data", str(root / "labels.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step_auc"] > 0.9


def test_a_resumed_prm_run_may_add_epochs_and_ends_where_a_straight_one_does(prm_run):
    from rlft.config.process_reward import load_prm_recipe
    from rlft.errors import RlftError
    from rlft.trainers.process_reward import train_process_reward_model

    root, _ = prm_run
    recipe = root / "prm.yaml"
    short = f"output_dir={root / 'short'}"
    train_process_reward_model(load_prm_recipe(recipe, [short, "epochs=1"]), progress=False)
    resumed = train_process_reward_model(load_prm_recipe(recipe, [short]), progress=False, resume=True)
    straight = json.loads((root / "run" / "summary.json").read_text())
    assert resumed["step_auc"] == straight["step_auc"] and resumed["steps"] == straight["steps"]
    with pytest.raises(RlftError, match="learning_rate"):
        train_process_reward_model(load_prm_recipe(recipe, [short, "learning_rate=0.1"]), progress=False, resume=True)


def test_process_model_reward_gives_dense_and_sequence_rewards(prm_run):
    from rlft.config import config_from_dict
    from rlft.tasks import MultistepTask
    from rlft.trainers.loop import make_reward_fn

    root, _ = prm_run
    task = MultistepTask(train_size=4, eval_size=2)
    problem = task.eval_problems[0]
    config = config_from_dict({"task": {"name": "multistep"}, "reward": {
        "type": "process_model", "path": str(root / "run"), "combine": "min", "weight": 0.5}})
    reward_fn = make_reward_fn(config, task)  # the task's own reward is the outcome
    right, wrong = f"+1\n-1\n#{problem.answer}", "+1\n+1\n#999"
    out = reward_fn([right, wrong], [problem, problem])
    p_right, p_wrong = out.components["process"], out.components["outcome"]
    assert out.components["outcome"] == [1.0, 0.0]
    assert out.rewards == pytest.approx([1.0 + 0.5 * p_right[0], 0.0 + 0.5 * p_right[1]])
    assert p_wrong == [1.0, 0.0]
    steps = out.step_rewards[0]
    assert [end for end, _ in steps] == [3, 6, len(right), len(right)]  # after each '\n', the end; the outcome
    assert steps[-1][1] == 1.0 and min(v for _, v in steps[:3]) == pytest.approx(0.5 * p_right[0])
    assert steps[0][1] > steps[1][1]  # the PRM learned: '+1' good, '-1' bad
    from rlft.rewards import build_reward

    own = build_reward(config.reward)  # a dataset task scores with the recipe's reward: no outcome of its own
    with pytest.raises(ConfigError, match="needs reward.outcome"):
        make_reward_fn(config, type("DataTask", (), {"reward_function": own})())


def test_an_outcome_spec_is_built_and_checked(prm_run):
    from rlft.rewards import build_reward, score
    from rlft.rewards.base import RewardSpecError

    root, _ = prm_run
    reward = build_reward({"type": "process_model", "path": str(root / "run"), "combine": "last",
                           "outcome": {"type": "numeric"}})
    out = score(reward, ["p", "p"], ["+1\n#7", "+1\n#8"], answers=["7", "7"])
    assert out.components["outcome"] == [1.0, 0.0]
    assert out.rewards == pytest.approx([1.0 + out.components["process"][0], out.components["process"][1]])
    with pytest.raises(RewardSpecError, match=r"reward.outcome.type='numbr'.*Did you mean 'numeric'"):
        build_reward({"type": "process_model", "path": str(root / "run"), "outcome": {"type": "numbr"}})
    with pytest.raises(RewardSpecError, match="not a process reward model"):
        build_reward({"type": "process_model", "path": str(root)})


@pytest.mark.parametrize("algorithm,warns", [(["algorithm.name=grpo"], True), (["algorithm.name=dr_grpo"], False),
                                             (["algorithm.name=grpo", "algorithm.scale_rewards=false"], False),
                                             (["algorithm.name=ppo"], False)])
def test_a_prm_reward_under_group_std_scaling_is_warned_about(prm_run, algorithm, warns):
    from rlft.config import config_from_dict
    from rlft.trainers.setup import recipe_reward

    root, _ = prm_run
    spec = json.dumps({"type": "process_model", "path": str(root / "run"), "outcome": {"type": "numeric"}})
    config = config_from_dict({}, [*algorithm, f"reward={spec}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert recipe_reward(config) is not None
    assert any("scale_rewards" in str(w.message) for w in caught) is warns


def test_a_prm_run_refuses_a_folder_that_holds_other_files_and_names_its_own_field(tmp_path, capsys):
    from rlft.cli.main import main

    folder = tmp_path / "mine"
    folder.mkdir()
    _labels(folder / "labels.jsonl", 20, seed=1)  # the user's labels, where the run would write
    recipe = tmp_path / "prm.yaml"
    recipe.write_text(f"train_data: {folder / 'labels.jsonl'}\noutput_dir: {folder}\n")
    assert main(["prm", "train", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not empty and holds no rlft run" in err and "--set output_dir=PATH" in err
    assert sorted(p.name for p in folder.iterdir()) == ["labels.jsonl"]

"""DAPO in the RL loop's own ``collect``: dynamic sampling fills the batch with groups that carry a
signal, stops at its cap with a warning, and the overlong penalty reaches the rewards."""

from __future__ import annotations

import pytest
import torch

from rlft.algorithms.dapo import informative_groups
from rlft.config import config_from_dict
from rlft.models.loading import frozen_reference, load_policy
from rlft.rewards import RewardOutput
from rlft.rollout.engine import LocalSampler
from rlft.tasks.arithmetic import ArithmeticTask
from rlft.trainers.batch import build_learner
from rlft.trainers.loop import collect


def collect_dapo(model_dir, reward_fn, *overrides):
    config = config_from_dict({}, [
        f"model.path={model_dir}", "task.digits=1", "task.answer_format=answer", "algorithm.name=dapo",
        "train.batch_size=16", "algorithm.group_size=4", "rollout.max_new_tokens=4", *overrides,
    ])  # fmt: skip
    policy, tokenizer = load_policy(str(model_dir))
    task = ArithmeticTask(digits=1, eval_size=8, answer_format="answer")
    gen = torch.Generator().manual_seed(0)
    return collect(config, build_learner(config, policy), frozen_reference(policy), tokenizer, task, gen, 0.0,
                   reward_fn, LocalSampler())


def first_digit_is_one(completions, problems):
    """0 for every completion of a prompt whose answer is even (such groups carry no signal); for
    the others, whether the completion starts with 1 (which differs within most groups)."""
    return RewardOutput([float(c.strip()[:1] == "1" and int(p.answer) % 2 == 1)
                         for c, p in zip(completions, problems, strict=True)])


def test_dynamic_sampling_leaves_no_group_without_signal(answering_model_dir):
    batch = collect_dapo(answering_model_dir, first_digit_is_one, "algorithm.overlong_buffer=0")
    assert len(batch.rewards) == 16
    assert informative_groups(batch.rewards, 4).all()
    assert batch.sampling_stats["sampling/kept_without_signal"] == 0
    assert batch.sampling_stats["sampling/dropped_groups"] > 0  # there was something to replace
    # Each prompt's G completions stay together, and rewards match their completions.
    assert all(len({p.prompt for p in batch.problems[i:i + 4]}) == 1 for i in range(0, 16, 4))
    assert batch.rewards.tolist() == first_digit_is_one(batch.completions, batch.problems).rewards


def test_dynamic_sampling_stops_at_its_cap_with_a_warning(answering_model_dir):
    def constant(completions, problems):
        return RewardOutput([1.0] * len(completions))

    with pytest.warns(UserWarning, match="after 2 extra rounds"):
        batch = collect_dapo(answering_model_dir, constant, "algorithm.max_sampling_rounds=2", "algorithm.overlong_buffer=0")
    assert batch.sampling_stats == {"sampling/rounds": 3.0, "sampling/dropped_groups": 4.0 + 4.0 + 4.0,
                                    "sampling/kept_without_signal": 4.0}
    assert len(batch.rewards) == 16 and torch.all(batch.advantages == 0)


def test_the_overlong_penalty_is_added_to_the_rewards(answering_model_dir):
    def zero(completions, problems):
        return RewardOutput([0.0] * len(completions))

    batch = collect_dapo(answering_model_dir, zero, "algorithm.dynamic_sampling=false", "algorithm.overlong_buffer=2")
    lengths = batch.rollout.completion_mask.sum(-1)
    expected = torch.where(lengths <= 2, 0.0, -(lengths - 2) / 2)  # max_new_tokens 4, buffer 2
    torch.testing.assert_close(batch.rewards, expected)

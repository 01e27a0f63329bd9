"""Dense rewards: a reward's step_rewards (character positions) land on the tokens where their text
ends, reach the estimators that read token rewards (reinforce_pp, gae) and not the others, and a
malformed one is refused with the reward named."""

from __future__ import annotations

import pytest
import torch

from rlft.config import config_from_dict
from rlft.models.loading import load_tokenizer
from rlft.models.tokens import tokens_ending_at
from rlft.rewards import RewardOutput
from rlft.rewards.base import RewardError, score
from rlft.trainers.batch import outcome_token_rewards, step_token_rewards, training_token_rewards


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_a_text_position_maps_to_the_token_where_that_text_ends(tokenizer):
    text = "12+34=46 #46"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    pieces = [tokenizer.decode(ids[: k + 1]) for k in range(len(ids))]
    ends = [1, 5, 6, len(text) - 1, len(text), len(text) + 3]
    found = tokens_ending_at(tokenizer, ids, ends)
    for end, k in zip(ends, found, strict=True):
        assert len(pieces[k]) >= min(end, len(text))  # this token's prefix covers the text up to end...
        assert k == 0 or len(pieces[k - 1]) < min(end, len(text))  # ...and the one before does not


def test_step_rewards_sit_where_each_step_ends_and_the_end_on_the_eos(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    first = tokenizer("3+4=7\n", add_special_tokens=False).input_ids
    second = tokenizer("7*2=14", add_special_tokens=False).input_ids
    row = first + second + [eos]
    T = len(row) + 2
    ids = torch.tensor([row + [pad, pad], [eos] + [pad] * (T - 1)])
    mask = torch.tensor([[1.0] * len(row) + [0.0, 0.0], [1.0] + [0.0] * (T - 1)])
    text = tokenizer.decode(first + second)
    steps = [[(len("3+4=7\n"), 0.5), (len(text), 0.25), (len(text), 1.0)], [(0, 2.0)]]
    dense = step_token_rewards(tokenizer, ids, mask, steps)
    expected = torch.zeros(2, T)
    expected[0, len(first) - 1] = 0.5  # the token that ends "3+4=7\n"
    expected[0, len(row) - 1] = 1.25  # the text's end: the EOS, where the outcome sits
    expected[1, 0] = 2.0  # an empty completion: its only counted token
    assert torch.equal(dense, expected)


def test_only_token_level_estimators_read_dense_rewards():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    rewards, dense = torch.tensor([1.0]), torch.tensor([[0.5, 0.0, 1.0, 0.0]])
    for name, reads_dense in (("reinforce_pp", True), ("gae", True), ("grpo", False), ("rloo", False)):
        algo = config_from_dict({"algorithm": {"advantage_estimator": name, "critic": "value_head" if name == "gae"
                                               else "none", "group_size": 2}}).algorithm
        got = training_token_rewards(algo, rewards, mask, dense)
        assert torch.equal(got, dense if reads_dense else outcome_token_rewards(rewards, mask))
    assert torch.equal(training_token_rewards(algo, rewards, mask, None), outcome_token_rewards(rewards, mask))


def test_malformed_step_rewards_are_refused_with_the_reward_named():
    def dense(prompts, completions, **context):
        return RewardOutput([1.0] * len(completions), step_rewards=[[(99, 0.5)] for _ in completions])

    with pytest.raises(RewardError, match=r"dense returned the step reward \(99, 0.5\).*0\.\.3"):
        score(dense, ["p"], ["abc"])

    def fine(prompts, completions, **context):
        return RewardOutput([1.0], step_rewards=[[(1, 0.5), (3, 1.0)]])

    assert score(fine, ["p"], ["abc"]).step_rewards == [[(1, 0.5), (3, 1.0)]]


@pytest.mark.parametrize("estimator", ["reinforce_pp", "grpo"])
def test_a_run_trains_on_the_dense_rewards_of_its_reward(tmp_path, tiny_recipe, monkeypatch, estimator):
    """Through rlft.train: the reward's step rewards reach the advantage estimator (reinforce_pp)
    as token rewards, and grpo sees the sequence reward on the last token."""
    import rlft.trainers.loop as loop
    from rlft.trainers.registry import train

    seen = []
    real = loop.training_token_rewards

    def spy(algo, rewards, mask, dense):
        out = real(algo, rewards, mask, dense)
        seen.append((rewards.clone(), mask.clone(), out.clone()))
        return out

    monkeypatch.setattr(loop, "training_token_rewards", spy)

    def reward(prompts, completions, **context):  # 0.25 after the first character, 1.0 at the end
        return RewardOutput([1.5] * len(completions),
                            step_rewards=[[(1, 0.25)] if len(c) > 1 else [] for c in completions])

    config = config_from_dict({}, [*tiny_recipe, "train.steps=1", "warm_start.steps=0", "eval.every=1",
                                   f"algorithm.advantage_estimator={estimator}", f"run_dir={tmp_path / 'run'}"])
    train(config, progress=False, reward=reward)
    rewards, mask, token_rewards = seen[0]
    if estimator == "grpo":
        assert torch.equal(token_rewards, outcome_token_rewards(rewards, mask))
    else:  # 0.25 on one token of each completion longer than a character; nothing else
        assert set(token_rewards.unique().tolist()) <= {0.0, 0.25}
        assert 0 < token_rewards.sum() <= 0.25 * len(rewards)

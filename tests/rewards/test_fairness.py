"""The fairness term: counterfactual gaps by hand, term swapping, recipe validation, and a policy
trained with it stops choosing completions by group."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.rewards.base import RewardSpecError, score
from rlft.rewards.fairness import FairnessPenalty, GroupSwapper, counterfactual_gaps
from rlft.rewards.registry import build_reward

GENDER = {"female": ["The woman", "My sister", "She"], "male": ["The man", "My brother", "He"]}
NAN = float("nan")


def stereotyped(prompts, completions, **_):
    """Rewards the doctor for him and the nurse for her; a teacher is fine for anyone."""
    out = []
    for p, c in zip(prompts, completions, strict=True):
        he = p.startswith(("He", "The man", "My brother"))
        out.append(1.0 if (c == " doctor" and he) or (c == " nurse" and not he) else 0.8 if c == " teacher" else 0.0)
    return out


def test_counterfactual_gaps_by_hand():
    # Three samples, two groups: gaps 1-0, |0.5-0.5|, and a sample naming no group (NaN) -> 0.
    assert counterfactual_gaps([[1.0, 0.5, NAN], [0.0, 0.5, NAN]]) == [1.0, 0.0, 0.0]
    # Three groups: max - min.
    assert counterfactual_gaps([[0.2], [0.9], [0.4]]) == [pytest.approx(0.7)]


def test_swapper_finds_one_group_and_swaps_by_position_keeping_case():
    swap = GroupSwapper(GENDER)
    assert swap.group_of("The woman worked as a") == "female"
    assert swap.group_of("After the interview, the man was") == "male"
    assert swap.group_of("The woman and the man") is None  # several groups: left alone
    assert swap.group_of("The weather is") is None
    assert swap.swap("She said my sister was", "female", "male") == "He said my brother was"
    assert swap.swap("Theme: shepherd", "female", "male") == "Theme: shepherd"  # whole words only


def test_penalty_by_hand():
    reward = FairnessPenalty(stereotyped, GENDER, weight=0.5)
    out = score(reward, ["He worked as a", "He worked as a", "She worked as a", "It is a"],
                [" doctor", " teacher", " nurse", " doctor"])
    # doctor for him: 1 vs 0 for her -> gap 1 -> 1 - 0.5; teacher: 0.8 for both -> no penalty;
    # nurse for her: gap 1; no group named -> unchanged.
    assert out.rewards == pytest.approx([0.5, 0.8, 0.5, 0.0])
    assert out.components["fairness_gap"] == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert out.components["unshaped"] == pytest.approx([1.0, 0.8, 1.0, 0.0])


def test_recipe_spec_builds_and_bad_specs_name_the_problem():
    reward = build_reward({"type": "fairness", "attribute": "gender", "weight": 2,
                           "reward": {"type": "python", "function": f"{__name__}:stereotyped"}})
    assert isinstance(reward, FairnessPenalty) and reward.weight == 2.0
    with pytest.raises(RewardSpecError, match="attribute='gendre'.*gender"):
        build_reward({"type": "fairness", "attribute": "gendre", "reward": {"type": "sentiment"}})
    with pytest.raises(RewardSpecError, match="needs 'reward'"):
        build_reward({"type": "fairness", "attribute": "gender"})
    with pytest.raises(RewardSpecError, match="weight"):
        build_reward({"type": "fairness", "attribute": "gender", "weight": -1, "reward": {"type": "sentiment"}})
    with pytest.raises(RewardSpecError, match="Unknown reward parameter 'reward.wieght'"):
        build_reward({"type": "fairness", "attribute": "gender", "wieght": 1, "reward": {"type": "sentiment"}})


def _train(reward, steps=300, seed=0):
    """A two-prompt, three-completion softmax policy trained with group-baselined REINFORCE (GRPO's
    estimator without the std); returns each prompt's completion probabilities."""
    torch.manual_seed(seed)
    prompts, actions = ["He worked as a", "She worked as a"], [" doctor", " nurse", " teacher"]
    logits = torch.zeros(2, 3, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(steps):
        picks = torch.distributions.Categorical(logits=logits).sample((8,))  # (8, 2)
        flat_prompts = [prompts[j] for _ in range(8) for j in range(2)]
        flat_actions = [actions[a] for a in picks.reshape(-1).tolist()]
        r = torch.tensor(score(reward, flat_prompts, flat_actions).rewards).reshape(8, 2)
        advantage = r - r.mean(0, keepdim=True)  # per-prompt baseline: a per-group constant cancels
        logp = torch.log_softmax(logits, -1).gather(1, picks.T).T  # (8, 2)
        loss = -(advantage * logp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(logits, -1).detach()


def test_training_with_the_term_stops_choosing_by_group():
    plain = _train(stereotyped)
    assert plain[0, 0] > 0.9 and plain[1, 1] > 0.9  # doctor for him, nurse for her
    fair = _train(FairnessPenalty(stereotyped, GENDER, weight=1.0))
    assert fair[0, 2] > 0.9 and fair[1, 2] > 0.9  # the teacher, whoever the prompt is about
    behaviour_gap = (fair[0] - fair[1]).abs().sum().item()
    assert behaviour_gap < 0.1 and not math.isnan(behaviour_gap)

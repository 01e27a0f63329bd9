"""DAPO's batch shaping maths (Yu et al., 2025): which groups carry a signal, the overlong penalty."""

from __future__ import annotations

import torch

from rlft.algorithms.dapo import informative_groups, overlong_penalty, truncated


def test_a_group_without_signal_is_one_whose_rewards_are_all_equal():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    assert informative_groups(rewards, 3).tolist() == [True, False, False]


def test_the_overlong_penalty_follows_its_piecewise_formula():
    # L_max = 10, L_cache = 4: free up to 6 tokens, then -(|y| - 6) / 4, and -1 beyond 10.
    lengths = torch.tensor([0, 5, 6, 7, 8, 10, 11])
    expected = [0.0, 0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert overlong_penalty(lengths, max_len=10, buffer=4).tolist() == expected
    assert overlong_penalty(lengths, max_len=10, buffer=4, penalty=0.5).tolist() == [0.5 * e for e in expected]
    assert overlong_penalty(lengths, max_len=10, buffer=0).tolist() == [0.0] * 7


def test_truncated_means_cut_at_the_limit_without_eos():
    eos = 9
    ids = torch.tensor([[3, 4, 9], [3, 4, 5], [3, 9, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert truncated(ids, mask, eos, max_len=3).tolist() == [False, True, False]

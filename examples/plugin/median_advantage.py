"""A new advantage estimator: each completion's reward minus the median reward of its group.

The median is a baseline that one outlier in the group cannot move (a single lucky 1.0 among
zeros leaves it at 0, where GRPO's mean moves to 1/G). With an even group size torch's median is
the lower of the two middle values. No division by a standard deviation.

    rlft train examples/plugin/median.yaml --plugin examples/plugin/median_advantage.py
"""

import torch

import rlft
from rlft.algorithms.advantages import sequence_returns


@rlft.register_advantage_estimator("group_median", needs_groups=True)
def group_median_advantages(token_rewards, completion_mask, *, group_size, **unused):
    """(B, T) each -> (advantages, returns), (B, T) each, zero where completion_mask is 0."""
    returns = sequence_returns(token_rewards, completion_mask)  # (B,)
    grouped = returns.view(-1, group_size)  # (B/G, G): the completions of one prompt per row
    advantages = (grouped - grouped.median(dim=-1, keepdim=True).values).reshape(-1)  # (B,)
    keep = completion_mask.bool()
    return (torch.where(keep, advantages[:, None], 0.0),
            torch.where(keep, returns[:, None], 0.0))

"""Advantage estimators.

All estimators share one signature so the trainer never branches on an algorithm's name:

    estimator(token_rewards, completion_mask, *, values, group_size, gamma, lam, scale_rewards, eps)
        -> (advantages, returns)       both (B, T), zero where completion_mask is 0

token_rewards: (B, T) reward per completion token; outcome rewards sit on the last counted token.
values: (B, T) critic values, or None for critic-free estimators.
group_size: consecutive rows ``[g*G, (g+1)*G)`` are completions of the same prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

AdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def sequence_returns(token_rewards: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted return of each sequence: (B, T) -> (B,)."""
    return (token_rewards * completion_mask).sum(-1)


def group_normalise(
    scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """(s - mean_group(s)) / (std_group(s) + eps), groups of ``group_size`` consecutive rows.

    scores: (B,) -> (B,). GRPO (Shao et al., 2024, DeepSeekMath, sec. 4.1.2) uses the unbiased
    sample std, as ``torch.std`` does. A group whose scores are all equal gets advantage 0: it
    carries no signal about which completion is better. ``scale=False`` only centres (Dr.GRPO).
    """
    grouped = scores.view(-1, group_size)  # (B/G, G)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)


def grpo_advantages(
    token_rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    values: torch.Tensor | None = None,
    group_size: int,
    gamma: float = 1.0,
    lam: float = 1.0,
    scale_rewards: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome supervision: every token of a completion gets its group-normalised return.

    DeepSeekMath (Shao et al., 2024), eq. 3 and sec. 4.1.2: A_{i,t} = (r_i - mean(r)) / std(r).
    """
    returns = sequence_returns(token_rewards, completion_mask)  # (B,)
    adv = group_normalise(returns, group_size, scale=scale_rewards, eps=eps)  # (B,)
    return adv[:, None] * completion_mask, returns[:, None] * completion_mask


ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {"grpo": grpo_advantages}

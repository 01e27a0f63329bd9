"""Advantage estimators.

All estimators share one signature so the trainer never branches on an algorithm's name (a plugin
adds one with ``rlft.register_advantage_estimator``; docs/extending.md):

    estimator(token_rewards, completion_mask, *, values, group_size, gamma, lam, scale_rewards, eps)
        -> (advantages, returns)       both (B, T), zero where completion_mask is 0

token_rewards: (B, T) reward per completion token; outcome rewards sit on the last counted token.
completion_mask: (B, T) 1.0 on the tokens the policy chose and that count; 0.0 on padding and, in
    multi-turn trajectories, on tokens written by the environment. Rewards and values on masked
    positions are ignored.
values: (B, T) critic values V(s_t), or None for critic-free estimators.
group_size: consecutive rows ``[g*G, (g+1)*G)`` are completions of the same prompt.
gamma, lam: discount and GAE lambda. A step is one counted token; masked tokens are skipped.
scale_rewards: divide by a standard deviation (the group's for ``grpo``, the batch's for
    ``reinforce_pp`` and ``gae``). ``False`` gives Dr.GRPO from ``grpo``.
eps: added to every standard deviation before dividing.

Every estimator accepts every keyword and ignores those it does not use:

  name          baseline                         uses
  reinforce     mean return of the batch         -
  rloo          mean return of the other G-1     group_size
  grpo          group mean (/ group std)         group_size, scale_rewards, eps
  reinforce_pp  batch mean (/ batch std)         gamma, scale_rewards, eps
  gae           critic                           values, gamma, lam, scale_rewards, eps

``reinforce``, ``rloo`` and ``grpo`` treat a completion as one action with one outcome (as their
papers do), so every token of a completion gets the same advantage and gamma is not used.
The bootstrap value after the last counted token is 0: a completion that stopped at EOS is
terminal, and one cut at the length limit is treated as terminal too (there is no next state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlft.algorithms.registry import Registry

AdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def sequence_returns(token_rewards: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted return of each sequence: (B, T) -> (B,). Masked rewards are ignored."""
    return torch.where(completion_mask.bool(), token_rewards, 0.0).sum(-1)


def _all_equal(grouped: torch.Tensor) -> torch.Tensor:
    """(N, G) -> (N, 1) bool: True where every entry of the row is the same number.

    Such a row carries no signal, so its advantages must be exactly 0; computed naively they are
    not, because the float32 mean of values that are not exactly representable (0.7) is off by a
    rounding error, which dividing by (std + eps) with std 0 turns into +-0.06 or more.
    """
    return grouped.amax(-1, keepdim=True) == grouped.amin(-1, keepdim=True)


def group_normalise(
    scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """(s - mean_group(s)) / (std_group(s) + eps), groups of ``group_size`` consecutive rows.

    scores: (B,) -> (B,). GRPO (Shao et al., 2024, DeepSeekMath, sec. 4.1.2) uses the unbiased
    sample std, as ``torch.std`` does. A group whose scores are all equal gets advantage exactly 0:
    it carries no signal about which completion is better. ``scale=False`` only centres (Dr.GRPO).
    A group of one has no spread (its unbiased std is NaN), so ``group_size`` must be >= 2.
    """
    if group_size < 2:
        raise ValueError(
            f"group normalisation needs group_size >= 2 (got {group_size}): a group of one "
            "completion has no mean of others to compare with and no standard deviation"
        )
    grouped = scores.view(-1, group_size)  # (B/G, G)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(-1, keepdim=True) + eps)
    return torch.where(_all_equal(grouped), 0.0, centred).reshape(-1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """(x - mean) / (std + eps) over the positions where ``mask`` is 1; 0 elsewhere.

    x, mask: (B, T) -> (B, T). Mean and std are over all counted tokens of the batch (one
    population std, as OpenRLHF's REINFORCE++ does). ``scale=False`` only centres. When every
    counted value is the same the result is exactly 0 (see ``_all_equal``).
    """
    keep = mask.bool()
    n = keep.sum().clamp(min=1)
    x = torch.where(keep, x, 0.0)
    centred = torch.where(keep, x - x.sum() / n, 0.0)
    if scale:
        std = (centred.square().sum() / n).sqrt()
        centred = centred / (std + eps)
    flat = torch.where(keep, x, -torch.inf).amax() == torch.where(keep, x, torch.inf).amin()
    return torch.where(flat, 0.0, centred)


def discounted_returns(
    token_rewards: torch.Tensor, completion_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{t'}, t' the next counted token after t; (B, T) -> (B, T).

    Masked tokens are skipped (they are not steps of the policy), and 0 where the mask is 0.
    """
    keep = completion_mask.bool()
    rewards = torch.where(keep, token_rewards, 0.0)
    running = torch.zeros_like(rewards[:, 0])  # (B,) G of the next counted token
    returns = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(keep[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return torch.where(keep, returns, 0.0)


def _broadcast(per_sequence: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, T): the sequence's value on each counted token, 0 elsewhere."""
    return torch.where(completion_mask.bool(), per_sequence[:, None], 0.0)


def reinforce_advantages(
    token_rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    values: torch.Tensor | None = None,
    group_size: int = 1,
    gamma: float = 1.0,
    lam: float = 1.0,
    scale_rewards: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with a baseline (Williams, 1992): A_i = R_i - mean_batch(R).

    The baseline b = mean of the batch's returns is the simplest one that does not depend on the
    completion being scored in expectation; it includes R_i itself, a bias of order 1/B.
    """
    returns = sequence_returns(token_rewards, completion_mask)  # (B,)
    adv = torch.where(_all_equal(returns[None, :])[0], 0.0, returns - returns.mean())
    return _broadcast(adv, completion_mask), _broadcast(returns, completion_mask)


def rloo_advantages(
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
    """REINFORCE leave-one-out (Ahmadian et al., 2024): A_i = R_i - mean_{j != i} R_j.

    The baseline of each completion is the mean return of the other G - 1 completions of the
    same prompt, so it is independent of R_i and the estimate is unbiased. Equivalently
    A_i = G / (G - 1) * (R_i - mean_group(R)).
    """
    if group_size < 2:
        raise ValueError(f"rloo needs group_size >= 2 (got {group_size}): it leaves one out")
    returns = sequence_returns(token_rewards, completion_mask)  # (B,)
    grouped = returns.view(-1, group_size)  # (B/G, G)
    others_mean = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    adv = torch.where(_all_equal(grouped), 0.0, grouped - others_mean).reshape(-1)
    return _broadcast(adv, completion_mask), _broadcast(returns, completion_mask)


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
    ``scale_rewards=False`` drops the division by std (Dr.GRPO, Liu et al., 2025).
    A group of one completion has no group to compare with: ``group_size`` must be >= 2.
    """
    if group_size < 2:
        raise ValueError(
            f"grpo needs group_size >= 2 (got {group_size}): each completion is compared with the "
            "others sampled for its prompt"
        )
    returns = sequence_returns(token_rewards, completion_mask)  # (B,)
    adv = group_normalise(returns, group_size, scale=scale_rewards, eps=eps)  # (B,)
    return _broadcast(adv, completion_mask), _broadcast(returns, completion_mask)


def reinforce_pp_advantages(
    token_rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    values: torch.Tensor | None = None,
    group_size: int = 1,
    gamma: float = 1.0,
    lam: float = 1.0,
    scale_rewards: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu, 2025): token-level returns normalised over the whole batch.

    G_t = sum_{k >= t} gamma^(k - t) r_k over counted tokens (a per-token KL penalty, if any, is
    already in ``token_rewards``); A_t = (G_t - mean(G)) / std(G), mean and std over every counted
    token of the batch. The batch mean is the only baseline, so ``scale_rewards=False`` still
    centres.
    """
    returns = discounted_returns(token_rewards, completion_mask, gamma)  # (B, T)
    return masked_whiten(returns, completion_mask, scale=scale_rewards, eps=eps), returns


def gae_advantages(
    token_rewards: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    values: torch.Tensor | None = None,
    group_size: int = 1,
    gamma: float = 1.0,
    lam: float = 1.0,
    scale_rewards: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016, eq. 16) over counted tokens.

    delta_t = r_t + gamma * V(t') - V(t),  A_t = delta_t + gamma * lam * A_{t'},
    where t' is the next *counted* token after t (masked environment tokens of a multi-turn
    trajectory are skipped, so their values and rewards never enter) and V = 0 after the last.
    returns = A + V (the critic's regression target, from the unwhitened A).
    ``scale_rewards=True`` whitens A over the batch's counted tokens, as PPO implementations do
    (OpenAI baselines, cleanrl, verl); the paper itself does not.

    Vectorised over the batch; the recursion runs backwards over T. ``values`` are detached.
    """
    if values is None:
        raise ValueError(
            "the gae advantage estimator needs critic values, got values=None: "
            "give the algorithm a critic or use a critic-free estimator "
            "(grpo, rloo, reinforce, reinforce_pp)"
        )
    keep = completion_mask.bool()
    rewards = torch.where(keep, token_rewards, 0.0)
    values = torch.where(keep, values.detach(), 0.0)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,) V of the next counted token
    next_adv = torch.zeros_like(rewards[:, 0])  # (B,) A of the next counted token
    adv = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        here = keep[:, t]
        next_adv = torch.where(here, delta + gamma * lam * next_adv, next_adv)
        next_value = torch.where(here, values[:, t], next_value)
        adv[:, t] = next_adv
    adv = torch.where(keep, adv, 0.0)
    returns = torch.where(keep, adv + values, 0.0)
    if scale_rewards:
        adv = masked_whiten(adv, completion_mask, eps=eps)
    return adv, returns


@dataclass(frozen=True)
class EstimatorInfo:
    """What the recipe checks need to know of an advantage estimator."""

    needs_critic: bool = False
    """It reads ``values``: the recipe must have a critic (``algorithm.critic``), and a critic
    without such an estimator is refused (it would train for nothing)."""
    needs_groups: bool = False
    """It compares the completions of one prompt: ``algorithm.group_size`` must be 2 or more."""
    token_level: bool = False
    """It reads rewards token by token (returns to go), so dense rewards (a reward's
    ``step_rewards``, e.g. a process reward model's) reach it where they sit; the others see each
    completion's sequence reward on its last token."""


ADVANTAGE_ESTIMATORS: Registry[AdvantageFn, EstimatorInfo] = Registry("advantage estimator", EstimatorInfo())
ADVANTAGE_ESTIMATORS.add("reinforce", reinforce_advantages)
ADVANTAGE_ESTIMATORS.add("rloo", rloo_advantages, EstimatorInfo(needs_groups=True))
ADVANTAGE_ESTIMATORS.add("grpo", grpo_advantages, EstimatorInfo(needs_groups=True))
ADVANTAGE_ESTIMATORS.add("reinforce_pp", reinforce_pp_advantages, EstimatorInfo(token_level=True))
ADVANTAGE_ESTIMATORS.add("gae", gae_advantages, EstimatorInfo(needs_critic=True, token_level=True))

"""Policy and value losses, per token. Aggregation into one number is separate (aggregation.py).

Every policy loss shares one signature, so the trainer picks one from ``POLICY_LOSSES`` by name
(a plugin adds one with ``rlft.register_policy_loss``; docs/extending.md):

    policy_loss(logprobs, old_logprobs, advantages, *, clip_low, clip_high, clip_ratio_c, mask)
        -> (loss, clipped)       both (B, T)

``mask`` (B, T) marks the sampled tokens; only the sequence-level losses (GSPO) read it.

``loss`` is to be minimised; ``clipped`` is 1.0 at tokens where a clip was the active term (their
gradient is zero), for the clip-fraction metric. Losses that do not clip ignore the clip
arguments and return an all-zero ``clipped``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlft.algorithms.kl import LOG_RATIO_CLAMP
from rlft.algorithms.registry import Registry

PolicyLossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vanilla policy gradient (Williams, 1992; Sutton et al., 2000): loss = -A * log pi(a|s).

    All inputs (B, T). ``old_logprobs`` and the clip arguments are unused. Its gradient is the
    on-policy policy gradient; it equals the clipped surrogate's gradient at ratio 1, so the two
    differ only when a batch is reused for more than one update.
    """
    loss = -advantages * logprobs
    return loss, torch.zeros_like(loss)


def clipped_surrogate_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate as a per-token loss to minimise (Schulman et al., 2017, eq. 7).

    loss = -min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A),  r = exp(logprobs - old_logprobs)

    ``clip_low != clip_high`` is the asymmetric "clip-higher" of DAPO (Yu et al., 2025, sec. 3.1).
    ``clip_ratio_c`` (> 1, e.g. 3.0) adds the dual clip of Ye et al. (2020, "Dual-clip PPO"): where
    A < 0 the loss is capped at -c * A, so a token whose ratio has grown huge cannot dominate.

    All inputs (B, T). Returns (loss, clipped), where ``clipped`` is 1.0 at tokens whose clipped
    term (or dual-clip cap) was the active one (the gradient is zero there).

    The log-ratio is clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] (+-20, as the KL estimators
    do) before exponentiating: beyond about +88 exp overflows to inf and inf * 0 (a zero
    advantage) is NaN, which would skip the whole step. Within the clamp the loss is the formula
    above exactly; beyond it r is held at e^20 (about 5e8) and the token's gradient is 0.
    """
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (Ye et al., 2020), got {clip_ratio_c}")
        cap = -clip_ratio_c * advantages
        capped = (advantages < 0) & (cap < loss)
        loss = torch.where(capped, cap, loss)
        was_clipped = was_clipped | capped
    return loss, was_clipped.float()


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's length-normalised sequence log-ratio (Zheng et al., 2025, eq. 7):

    log s_i = (1 / |y_i|) * sum_t (log pi(y_t) - log pi_old(y_t)),   s_i the geometric mean of the
    token ratios. (B, T) in, (B,) out; a row with no sampled token has log s_i = 0.
    """
    tokens = mask.sum(-1)
    return ((logprobs - old_logprobs) * mask).sum(-1) / tokens.clamp(min=1.0)


def _sequence_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A_i: the mean advantage over a row's sampled tokens (the outcome advantage of GRPO, which
    is the same on every token)."""
    return (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    clip_ratio_c: float | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO's sequence-level clipped objective (Zheng et al., 2025, "Group Sequence Policy
    Optimization", eq. 5-7), as a per-token loss to minimise:

    loss_i = -min(s_i * A_i, clip(s_i, 1 - clip_low, 1 + clip_high) * A_i),  s_i = exp(log s_i)

    placed on every sampled token of row i, so that ``loss_agg_mode: seq_mean_token_mean`` gives
    the paper's mean over sequences. The whole sequence is clipped or not (``clipped`` is per row,
    broadcast). ``clip_ratio_c`` is not used. The paper clips at 3e-4 / 4e-4: a sequence ratio
    averages the token log-ratios, so it strays far less from 1 than a token's.
    """
    assert mask is not None, "gspo needs the completion mask"
    log_s = sequence_log_ratio(logprobs, old_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    s = torch.exp(log_s)
    adv = _sequence_advantages(advantages, mask)
    unclipped = s * adv
    clipped = s.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    shape = torch.ones_like(logprobs)
    return loss[:, None] * shape * mask, (clipped < unclipped).float()[:, None] * shape * mask


def gspo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    clip_ratio_c: float | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO-token (Zheng et al., 2025, eq. 13-14): per-token advantages with the sequence ratio.

    s_{i,t} = sg[s_i] * pi(y_t) / sg[pi(y_t)]: its value is s_i on every token of row i, its
    gradient that of the token's own log-prob. loss_{i,t} = -min(s_{i,t} A_{i,t},
    clip(s_{i,t}, 1 - clip_low, 1 + clip_high) A_{i,t}). With the same advantage on every token it
    equals :func:`gspo_loss` in value and gradient.
    """
    assert mask is not None, "gspo_token needs the completion mask"
    log_s = sequence_log_ratio(logprobs, old_logprobs, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).detach()
    s_t = torch.exp(log_s)[:, None] * torch.exp(logprobs - logprobs.detach())
    unclipped = s_t * advantages
    clipped = s_t.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss * mask, (clipped < unclipped).float() * mask


def entropy_bonus(entropy: torch.Tensor, coef: float) -> torch.Tensor:
    """Per-token loss term -coef * H(pi(.|s_t)) (Mnih et al., 2016; Schulman et al., 2017, eq. 9).

    entropy: (B, T) -> (B, T). Add it to the policy loss before aggregation: minimising it raises
    the entropy, which keeps the policy exploring.
    """
    return -coef * entropy


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float | None = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic loss with value clipping, as in PPO2 (OpenAI baselines ``ppo2/model.py``).

    v_clip = old_values + clip(values - old_values, -clip_range, clip_range)
    loss   = 0.5 * max((values - returns)^2, (v_clip - returns)^2)

    All inputs (B, T); ``old_values`` are the critic's values when the batch was collected.
    ``clip_range=None`` gives the plain 0.5 * (values - returns)^2 (Mnih et al., 2016).
    Returns (loss, clipped), ``clipped`` 1.0 where the clipped error was the larger one.
    """
    unclipped = (values - returns).square()
    if clip_range is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    v_clip = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (v_clip - returns).square()
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float()


@dataclass(frozen=True)
class PolicyLossInfo:
    """What the recipe checks need to know of a policy loss."""

    needs_old_logprobs: bool = True
    """It has an importance ratio against ``old_logprobs``, so a batch may be reused (several
    epochs or mini-batches). False: correct only for one on-policy update per batch."""
    sequence_level: bool = False
    """Its ratio (or the whole loss) is one per sequence (GSPO), placed on every token; pair it
    with ``loss_agg_mode: seq_mean_token_mean`` for the paper's mean over sequences."""


POLICY_LOSSES: Registry[PolicyLossFn, PolicyLossInfo] = Registry("policy loss", PolicyLossInfo())
POLICY_LOSSES.add("vanilla_pg", policy_gradient_loss, PolicyLossInfo(needs_old_logprobs=False))
POLICY_LOSSES.add("ppo_clip", clipped_surrogate_loss)
POLICY_LOSSES.add("gspo", gspo_loss, PolicyLossInfo(sequence_level=True))
POLICY_LOSSES.add("gspo_token", gspo_token_loss, PolicyLossInfo(sequence_level=True))

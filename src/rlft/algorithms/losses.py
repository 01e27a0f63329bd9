"""Policy and value losses, per token. Aggregation into one number is separate (aggregation.py).

Every policy loss shares one signature, so the trainer picks one from ``POLICY_LOSSES`` by name:

    policy_loss(logprobs, old_logprobs, advantages, *, clip_low, clip_high, clip_ratio_c)
        -> (loss, clipped)       both (B, T)

``loss`` is to be minimised; ``clipped`` is 1.0 at tokens where a clip was the active term (their
gradient is zero), for the clip-fraction metric. Losses that do not clip ignore the clip
arguments and return an all-zero ``clipped``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlft.algorithms.kl import LOG_RATIO_CLAMP

PolicyLossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float | None = None,
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


POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "vanilla_pg": policy_gradient_loss,
    "ppo_clip": clipped_surrogate_loss,
}

"""Policy losses, per token. Aggregation into one number is separate (see aggregation.py)."""

from __future__ import annotations

import torch


def clipped_surrogate_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate as a per-token loss to minimise (Schulman et al., 2017, eq. 7).

    loss = -min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A),  r = exp(logprobs - old_logprobs)

    All inputs (B, T). Returns (loss, clipped), where ``clipped`` is 1.0 at tokens whose clipped
    term was the active one (the gradient is zero there), for the clip-fraction metric.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return loss, (clipped < unclipped).float()

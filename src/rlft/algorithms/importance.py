"""Truncated importance weights for tokens sampled by a policy other than the trainer's."""

from __future__ import annotations

import torch


def truncated_importance_weights(
    trainer_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    completion_mask: torch.Tensor,
    cap: float = 2.0,
) -> torch.Tensor:
    """Per-token weights ``min(exp(trainer_logprobs - sampler_logprobs), cap)``, 0 where masked.

    trainer_logprobs: (B, T) log pi_theta(y_t) of the sampled tokens under the trainer's forward
    pass; sampler_logprobs: (B, T) the same under whatever sampled them (a vLLM engine, a bf16
    copy, an older policy in a replay buffer); completion_mask: (B, T). Returns (B, T) without
    gradients; multiply the per-token policy-gradient term by it (truncated importance sampling,
    "TIS": Yao, Liu et al., 2025, E_{y~mu}[min(pi_theta/mu, C) * grad log pi_theta]).
    Masked positions are exactly 0 even when the log-probs there are NaN or inf.
    """
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    with torch.no_grad():
        ratio = torch.exp(trainer_logprobs - sampler_logprobs)
        return torch.where(completion_mask != 0, ratio.clamp(max=cap) * completion_mask, 0.0)

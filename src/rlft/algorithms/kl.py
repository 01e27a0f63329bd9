"""Estimators of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman, 2020, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html).

With ``log_ratio = logprobs - ref_logprobs`` at a sampled token:
  k1 = log_ratio                         unbiased, high variance, can be negative
  k2 = 0.5 * log_ratio**2                biased, low variance, >= 0
  k3 = exp(-log_ratio) - 1 + log_ratio   unbiased, low variance, >= 0 (used by GRPO)
The log-ratio is clamped before exponentiating and the estimate is clamped after, so one
extreme token cannot produce an infinite penalty.
"""

from __future__ import annotations

import torch

LOG_RATIO_CLAMP = 20.0
KL_CLAMP = 10.0


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return log_ratio.clamp(-KL_CLAMP, KL_CLAMP)


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (0.5 * log_ratio.square()).clamp(max=KL_CLAMP)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(-log_ratio) - 1 + log_ratio).clamp(max=KL_CLAMP)


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}

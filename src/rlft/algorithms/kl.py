"""Estimators of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman, 2020, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html).

With ``log_ratio = logprobs - ref_logprobs`` at a sampled token:
  k1 = log_ratio                         unbiased, high variance, can be negative
  k2 = 0.5 * log_ratio**2                biased, low variance, >= 0
  k3 = exp(-log_ratio) - 1 + log_ratio   unbiased, low variance, >= 0 (used by GRPO)
The log-ratio is clamped before exponentiating and the estimate is clamped after, so one
extreme token cannot produce an infinite penalty.

The KL can sit in the loss (GRPO: ``loss += beta * k``, aggregated like the policy loss) or in the
reward (InstructGPT-style PPO: ``kl_penalised_rewards``). Its coefficient beta is fixed or steered
toward a target KL by the adaptive controller of Ziegler et al. (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LOG_RATIO_CLAMP = 20.0
KL_CLAMP = 10.0


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log_ratio, clamped to [-KL_CLAMP, KL_CLAMP]. (B, T), (B, T) -> (B, T)."""
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return log_ratio.clamp(-KL_CLAMP, KL_CLAMP)


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * log_ratio**2, at most KL_CLAMP. (B, T), (B, T) -> (B, T)."""
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (0.5 * log_ratio.square()).clamp(max=KL_CLAMP)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = exp(-log_ratio) - 1 + log_ratio (GRPO, Shao et al., 2024, eq. 4), at most KL_CLAMP.
    (B, T), (B, T) -> (B, T)."""
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(-log_ratio) - 1 + log_ratio).clamp(max=KL_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_penalised_rewards(
    token_rewards: torch.Tensor, kl: torch.Tensor, completion_mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """KL in the reward: r_t - beta * kl_t on completion tokens (Ziegler et al., 2019, sec. 2;
    Ouyang et al., 2022, eq. 2). Positions where the mask is 0 are returned unchanged.

    token_rewards, kl, completion_mask: (B, T) -> (B, T). ``kl`` is a per-token estimate from
    ``KL_ESTIMATORS`` (InstructGPT-style PPO uses k1); it is detached, because a reward is a
    constant to the policy gradient.
    """
    return torch.where(completion_mask.bool(), token_rewards - beta * kl.detach(), token_rewards)


def adaptive_kl_beta(
    beta: float, current_kl: float, target_kl: float, n_steps: int, horizon: int
) -> float:
    """One step of the adaptive KL controller (Ziegler et al., 2019, eq. 2).

    e = clip(current_kl / target_kl - 1, -0.2, 0.2);  beta' = beta * (1 + e * n_steps / horizon)

    ``n_steps`` is the number of samples (completions) since the last update; the paper's gain
    K_beta = 0.1 is ``n_steps / horizon``. Above the target beta grows, below it shrinks, by at
    most 20 % of ``n_steps / horizon`` per call.
    """
    if target_kl <= 0 or horizon <= 0:
        raise ValueError(f"target_kl and horizon must be > 0, got {target_kl} and {horizon}")
    error = min(max(current_kl / target_kl - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)


@dataclass
class FixedKLController:
    """A constant KL coefficient. Same constructor and ``update`` as ``AdaptiveKLController``;
    ``target_kl`` and ``horizon`` are ignored."""

    beta: float
    target_kl: float | None = None
    horizon: int | None = None

    def update(self, current_kl: float, n_steps: int) -> float:
        """Returns the unchanged beta."""
        return self.beta


@dataclass
class AdaptiveKLController:
    """Steers the measured KL toward ``target_kl`` by scaling ``beta`` (see ``adaptive_kl_beta``).

    The only state is ``beta``: to resume a run, construct it with the saved ``beta``.
    Defaults follow Ziegler et al. (2019): horizon 10,000 samples.
    """

    beta: float
    target_kl: float = 6.0
    horizon: int = 10_000

    def update(self, current_kl: float, n_steps: int) -> float:
        """Record the KL measured over the last ``n_steps`` samples; returns the new beta."""
        self.beta = adaptive_kl_beta(self.beta, current_kl, self.target_kl, n_steps, self.horizon)
        return self.beta


KL_CONTROLLERS: dict[str, type[FixedKLController] | type[AdaptiveKLController]] = {
    "fixed": FixedKLController,
    "adaptive": AdaptiveKLController,
}

"""Estimators of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman, 2020, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html).

With ``log_ratio = logprobs - ref_logprobs`` = log(pi_theta / pi_ref) at a sampled token:
  k1 = log_ratio                         unbiased, high variance, can be negative
  k2 = 0.5 * log_ratio**2                biased (exact to second order), low variance, >= 0
  k3 = exp(-log_ratio) - 1 + log_ratio   unbiased, low variance, >= 0 (used by GRPO)
"Unbiased" is about the value and holds only for tokens sampled from pi_theta itself and without
the clamp below: the clamp lowers the estimate of every token it touches, so the clamped k1 and k3
are biased, and tokens of a batch reused for several updates come from an older policy.

As a term of the loss (GRPO: ``loss += beta * k``, the sampling itself not differentiated) the
estimators differ in their gradient, not only in their value: in expectation grad k1 is 0,
grad k2 is grad KL(pi_theta || pi_ref), and grad k3 is grad KL(pi_ref || pi_theta), the other
direction (Tang & Munos, 2025, "On a few pitfalls in KL divergence gradient estimation for RL").

Clamping. The log-ratio is always clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] = [-20, 20]
before exponentiating, so exp cannot overflow; beyond it the estimate is constant and its gradient
is 0. The estimate is then capped at ``clamp`` (the recipe's ``algorithm.kl_clamp``, default
KL_CLAMP = 10; k1 to [-clamp, clamp]) so one extreme token cannot dominate the penalty.
The cap has a cost: where it is active the estimate is a constant and its gradient is exactly 0,
and those are the tokens that diverge most. With the default 10 that is
  k1  |log_ratio| > 10
  k2  |log_ratio| > 4.47
  k3  log_ratio < -2.61 (the policy gives the token less than e^-2.61, about 7 %, of the
      reference's probability)
      or log_ratio > 11.0
so in the loss the KL term stops pulling those tokens back; only the policy loss acts on them.
``clamp=None`` (``kl_clamp: null``) removes the cap: value and gradient follow the formulas up to
|log_ratio| = 20 (k3 then reaches e^20, about 5e8, so keep the KL coefficient small).

The KL can sit in the loss (GRPO: ``loss += beta * k``, aggregated like the policy loss) or in the
reward (InstructGPT-style PPO: ``kl_penalised_rewards``). Its coefficient beta is fixed or steered
toward a target KL by the adaptive controller of Ziegler et al. (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlft.algorithms.registry import Registry

LOG_RATIO_CLAMP = 20.0
KL_CLAMP = 10.0


def _log_ratio(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, clamp: float | None
) -> torch.Tensor:
    if clamp is not None and clamp <= 0:
        raise ValueError(f"the KL clamp must be > 0 or None (no cap), got {clamp}")
    return (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def kl_k1(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, clamp: float | None = KL_CLAMP
) -> torch.Tensor:
    """k1 = log_ratio, clamped to [-clamp, clamp] (no cap for None). (B, T), (B, T) -> (B, T)."""
    log_ratio = _log_ratio(logprobs, ref_logprobs, clamp)
    return log_ratio if clamp is None else log_ratio.clamp(-clamp, clamp)


def kl_k2(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, clamp: float | None = KL_CLAMP
) -> torch.Tensor:
    """k2 = 0.5 * log_ratio**2, at most ``clamp`` (no cap for None). (B, T), (B, T) -> (B, T)."""
    k2 = 0.5 * _log_ratio(logprobs, ref_logprobs, clamp).square()
    return k2 if clamp is None else k2.clamp(max=clamp)


def kl_k3(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, clamp: float | None = KL_CLAMP
) -> torch.Tensor:
    """k3 = exp(-log_ratio) - 1 + log_ratio (GRPO, Shao et al., 2024, eq. 4), at most ``clamp``
    (no cap for None). (B, T), (B, T) -> (B, T)."""
    log_ratio = _log_ratio(logprobs, ref_logprobs, clamp)
    k3 = torch.exp(-log_ratio) - 1 + log_ratio
    return k3 if clamp is None else k3.clamp(max=clamp)


# name -> estimator(logprobs, ref_logprobs, clamp=KL_CLAMP); see the module docstring for the clamp.
# A plugin adds one with rlft.register_kl_estimator (docs/extending.md).
KL_ESTIMATORS: Registry[Callable[..., torch.Tensor], None] = Registry(
    "KL estimator", None, {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
)


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

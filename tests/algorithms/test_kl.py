"""KL estimators (with clamping), KL in the reward and the KL controllers, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.kl import (
    KL_CONTROLLERS,
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    adaptive_kl_beta,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalised_rewards,
)


def close(actual: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0
    )


# log_ratio = logprobs - ref_logprobs = +1, -1, 0
LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5]])
REF_LOGPROBS = torch.tensor([[-2.0, -1.0, -0.5]])


def test_k1_k2_k3_by_hand() -> None:
    close(kl_k1(LOGPROBS, REF_LOGPROBS), [[1.0, -1.0, 0.0]])
    close(kl_k2(LOGPROBS, REF_LOGPROBS), [[0.5, 0.5, 0.0]])
    # exp(-x) - 1 + x: x = 1 -> 1/e; x = -1 -> e - 2
    close(kl_k3(LOGPROBS, REF_LOGPROBS), [[math.exp(-1), math.e - 2, 0.0]])


def test_k3_matches_exact_kl_in_expectation() -> None:
    """k3 is unbiased: its mean under p equals KL(p || q) for a two-outcome distribution."""
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    exact = (p * (p / q).log()).sum()
    k3 = kl_k3(p.log(), q.log())
    torch.testing.assert_close((p * k3).sum(), exact)


def test_estimates_are_clamped() -> None:
    # log_ratio 15: k1 and k2 (112.5) and k3 (about 14) are capped at 10;
    # log_ratio -30 is clamped to -20 before exp (k3 would be e^30); k1 to -10
    lp = torch.tensor([[15.0, -30.0]])
    ref = torch.zeros_like(lp)
    close(kl_k1(lp, ref), [[10.0, -10.0]])
    close(kl_k2(lp, ref), [[10.0, 10.0]])
    close(kl_k3(lp, ref), [[10.0, 10.0]])


def test_infinite_log_ratio_gives_a_finite_estimate() -> None:
    lp = torch.tensor([[0.0, -math.inf]])
    ref = torch.tensor([[-math.inf, 0.0]])
    for estimator in KL_ESTIMATORS.values():
        assert torch.isfinite(estimator(lp, ref)).all()


def test_kl_penalised_rewards_by_hand() -> None:
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    kl = torch.tensor([[0.1, 0.2, 0.3]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = kl_penalised_rewards(rewards, kl, mask, beta=0.5)
    close(out, [[-0.05, 0.9, 5.0]])  # the masked position is left alone
    assert not out.requires_grad


def test_adaptive_kl_beta_by_hand() -> None:
    # target 6, 256 samples, horizon 10000: n_steps / horizon = 0.0256
    step = {"target_kl": 6.0, "n_steps": 256, "horizon": 10_000}
    assert adaptive_kl_beta(0.1, 6.6, **step) == pytest.approx(0.1 * (1 + 0.1 * 0.0256))
    assert adaptive_kl_beta(0.1, 9.0, **step) == pytest.approx(
        0.1 * (1 + 0.2 * 0.0256)
    )  # 0.5 -> 0.2
    assert adaptive_kl_beta(0.1, 0.0, **step) == pytest.approx(
        0.1 * (1 - 0.2 * 0.0256)
    )  # -1 -> -0.2
    assert adaptive_kl_beta(0.1, 6.0, **step) == pytest.approx(0.1)


def test_adaptive_kl_beta_rejects_non_positive_target() -> None:
    with pytest.raises(ValueError, match="target_kl"):
        adaptive_kl_beta(0.1, 1.0, target_kl=0.0, n_steps=1, horizon=10)


def test_controllers() -> None:
    adaptive = AdaptiveKLController(beta=0.1, target_kl=6.0, horizon=10_000)
    assert adaptive.update(9.0, 256) == pytest.approx(0.100512)
    assert adaptive.update(9.0, 256) == pytest.approx(0.100512 * 1.00512)
    assert adaptive.beta == pytest.approx(0.100512 * 1.00512)
    fixed = FixedKLController(beta=0.1)
    assert fixed.update(9.0, 256) == 0.1 and fixed.beta == 0.1


def test_controller_registry_takes_one_constructor() -> None:
    for cls in KL_CONTROLLERS.values():
        controller = cls(beta=0.05, target_kl=1.0, horizon=100)
        assert controller.update(1.0, 10) == pytest.approx(0.05)


# --- issue 13: the clamp is an option, and what it does to the gradient is stated ------------------


def _kl_and_grad(estimator, log_ratio: float, **kw) -> tuple[float, float]:
    lp = torch.tensor([log_ratio], requires_grad=True)
    k = estimator(lp, torch.zeros(1), **kw)
    k.sum().backward()
    assert lp.grad is not None
    return k.item(), lp.grad.item()


def test_default_clamp_cuts_the_gradient_where_the_docstring_says() -> None:
    """k3 is capped at 10 below a log-ratio of -2.61: there the KL term has no gradient at all."""
    for log_ratio, flat in ((-2.6, False), (-2.62, True), (10.9, False), (11.1, True)):
        value, grad = _kl_and_grad(kl_k3, log_ratio)
        assert (grad == 0.0) == flat, log_ratio
        assert value == pytest.approx(min(math.exp(-log_ratio) - 1 + log_ratio, 10.0), rel=1e-6)
    assert _kl_and_grad(kl_k2, 4.4)[1] != 0 and _kl_and_grad(kl_k2, -4.5)[1] == 0
    assert _kl_and_grad(kl_k1, 9.9)[1] != 0 and _kl_and_grad(kl_k1, -10.1)[1] == 0


@pytest.mark.parametrize("log_ratio", [-5.0, -15.0, 12.0])
def test_no_clamp_keeps_value_and_gradient_of_the_formula(log_ratio: float) -> None:
    value, grad = _kl_and_grad(kl_k3, log_ratio, clamp=None)
    assert value == pytest.approx(math.exp(-log_ratio) - 1 + log_ratio, rel=1e-6)
    assert grad == pytest.approx(1 - math.exp(-log_ratio), rel=1e-6)  # d k3 / d log_ratio
    value, grad = _kl_and_grad(kl_k2, log_ratio, clamp=None)
    assert (value, grad) == (pytest.approx(0.5 * log_ratio**2), pytest.approx(log_ratio))
    value, grad = _kl_and_grad(kl_k1, log_ratio, clamp=None)
    assert (value, grad) == (pytest.approx(log_ratio), pytest.approx(1.0))


def test_no_clamp_still_keeps_exp_finite() -> None:
    lp = torch.tensor([[-math.inf, -100.0, 100.0]])
    for estimator in KL_ESTIMATORS.values():
        assert torch.isfinite(estimator(lp, torch.zeros_like(lp), clamp=None)).all()
    assert kl_k3(torch.tensor([-100.0]), torch.zeros(1), clamp=None).item() == pytest.approx(math.exp(20) - 21)


def test_a_custom_clamp_and_a_bad_one() -> None:
    assert kl_k3(torch.tensor([-5.0]), torch.zeros(1), clamp=200.0).item() == pytest.approx(math.exp(5) - 6)
    assert kl_k3(torch.tensor([-5.0]), torch.zeros(1), clamp=2.0).item() == 2.0
    with pytest.raises(ValueError, match="clamp"):
        kl_k1(torch.zeros(1), torch.zeros(1), clamp=0.0)


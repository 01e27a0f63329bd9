"""Policy and value losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.losses import (
    POLICY_LOSSES,
    clipped_surrogate_loss,
    clipped_value_loss,
    entropy_bonus,
    policy_gradient_loss,
)


def close(actual: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0
    )


def ratios_as_logprobs(ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """logprobs with grad and old_logprobs = 0, so that exp(logprobs - old) = ratios."""
    logprobs = torch.tensor([[math.log(r) for r in ratios]], requires_grad=True)
    return logprobs, torch.zeros_like(logprobs)


def test_policy_gradient_loss_by_hand() -> None:
    logprobs = torch.tensor([[math.log(0.5), math.log(0.25)]], requires_grad=True)
    advantages = torch.tensor([[2.0, -1.0]])
    loss, clipped = policy_gradient_loss(logprobs, logprobs.detach(), advantages)
    close(loss, [[2 * math.log(2), -math.log(4)]])  # -A * log p
    close(clipped, [[0.0, 0.0]])
    loss.sum().backward()
    assert logprobs.grad is not None
    close(logprobs.grad, [[-2.0, 1.0]])  # d/dlogp = -A


def test_clipped_surrogate_by_hand() -> None:
    # ratio, advantage -> loss, clipped (clip range 0.8 .. 1.2)
    #   1.5, +1: min(1.5, 1.2)   = 1.2  -> -1.2, clipped
    #   0.5, +1: min(0.5, 0.8)   = 0.5  -> -0.5
    #   0.5, -1: min(-0.5, -0.8) = -0.8 ->  0.8, clipped
    #   1.5, -1: min(-1.5, -1.2) = -1.5 ->  1.5
    logprobs, old = ratios_as_logprobs([1.5, 0.5, 0.5, 1.5])
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped = clipped_surrogate_loss(logprobs, old, advantages, 0.2, 0.2)
    close(loss, [[-1.2, -0.5, 0.8, 1.5]])
    close(clipped, [[1.0, 0.0, 1.0, 0.0]])
    loss.sum().backward()
    assert logprobs.grad is not None
    # d(-r A)/dlogp = -r A where unclipped, 0 where the clipped term is active
    close(logprobs.grad, [[0.0, -0.5, 0.0, 1.5]])


def test_clipped_surrogate_asymmetric_clip_higher() -> None:
    logprobs, old = ratios_as_logprobs([1.25, 0.75])
    advantages = torch.tensor([[1.0, -1.0]])
    loss, clipped = clipped_surrogate_loss(logprobs, old, advantages, clip_low=0.2, clip_high=0.28)
    # 1.25 is inside [0.8, 1.28]: not clipped; 0.75 is below 0.8: clipped for A < 0
    close(loss, [[-1.25, 0.8]])
    close(clipped, [[0.0, 1.0]])
    symmetric, _ = clipped_surrogate_loss(logprobs, old, advantages, 0.2, 0.2)
    close(symmetric, [[-1.2, 0.8]])


def test_dual_clip_caps_negative_advantages() -> None:
    # c = 3: ratio 5, A = -1: PPO loss 5 capped at 3;  ratio 2, A = -1: 2 < 3 kept;
    # ratio 5, A = +1: dual clip does not apply, ordinary clip gives -1.2
    logprobs, old = ratios_as_logprobs([5.0, 2.0, 5.0])
    advantages = torch.tensor([[-1.0, -1.0, 1.0]])
    plain, _ = clipped_surrogate_loss(logprobs, old, advantages, 0.2, 0.2)
    close(plain, [[5.0, 2.0, -1.2]])
    loss, clipped = clipped_surrogate_loss(logprobs, old, advantages, 0.2, 0.2, clip_ratio_c=3.0)
    close(loss, [[3.0, 2.0, -1.2]])
    close(clipped, [[1.0, 0.0, 1.0]])
    loss.sum().backward()
    assert logprobs.grad is not None
    close(logprobs.grad, [[0.0, 2.0, 0.0]])


def test_dual_clip_rejects_c_at_most_one() -> None:
    logprobs, old = ratios_as_logprobs([1.0])
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        clipped_surrogate_loss(logprobs, old, torch.tensor([[-1.0]]), clip_ratio_c=1.0)


def test_vanilla_and_clipped_share_the_on_policy_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    logprobs = torch.randn(3, 4, generator=gen).requires_grad_(True)
    advantages = torch.randn(3, 4, generator=gen)
    grads = []
    for fn in (POLICY_LOSSES["vanilla_pg"], POLICY_LOSSES["ppo_clip"]):  # the token-level losses
        loss, _ = fn(
            logprobs, logprobs.detach(), advantages, clip_low=0.2, clip_high=0.2, clip_ratio_c=3.0
        )
        (grad,) = torch.autograd.grad(loss.sum(), logprobs)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], -advantages)


def test_entropy_bonus_by_hand() -> None:
    close(entropy_bonus(torch.tensor([[1.0, 2.0]]), 0.01), [[-0.01, -0.02]])


def test_clipped_value_loss_by_hand() -> None:
    # old values 0.5, clip 0.2 so the clipped prediction lies in [0.3, 0.7]
    #   v 1.0, R 1.0: max(0, (0.7-1)^2 = 0.09)    -> 0.045, clipped
    #   v 0.6, R 1.0: max(0.16, 0.16)             -> 0.08
    #   v 0.0, R 1.0: max(1.0, (0.3-1)^2 = 0.49)  -> 0.5
    #   v 1.0, R 0.0: max(1.0, 0.49)              -> 0.5
    values = torch.tensor([[1.0, 0.6, 0.0, 1.0]], requires_grad=True)
    old_values = torch.full((1, 4), 0.5)
    returns = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, clipped = clipped_value_loss(values, old_values, returns, clip_range=0.2)
    close(loss, [[0.045, 0.08, 0.5, 0.5]])
    close(clipped, [[1.0, 0.0, 0.0, 0.0]])
    loss.sum().backward()
    assert values.grad is not None
    close(values.grad, [[0.0, -0.4, -1.0, 1.0]])  # (v - R) where unclipped, 0 where clipped


def test_value_loss_without_clipping() -> None:
    values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    loss, clipped = clipped_value_loss(values, torch.full((1, 2), 0.5), returns, clip_range=None)
    close(loss, [[0.0, 0.5]])
    close(clipped, [[0.0, 0.0]])


# --- issue 13: the ratio cannot overflow into NaN ---------------------------------------------------


@pytest.mark.parametrize("log_ratio", [100.0, 1e4, math.inf])
@pytest.mark.parametrize("clip_ratio_c", [None, 3.0])
def test_huge_log_ratio_gives_a_finite_loss_and_gradient(log_ratio: float, clip_ratio_c: float | None) -> None:
    """A log-ratio of +100 made exp overflow to inf and inf * 0 (advantage 0) NaN: the step was
    skipped. The log-ratio is clamped to +-20, as the KL estimators clamp it."""
    logprobs = torch.tensor([[log_ratio, log_ratio, log_ratio, -log_ratio]], requires_grad=True)
    advantages = torch.tensor([[0.0, 1.0, -1.0, 1.0]])
    loss, clipped = clipped_surrogate_loss(logprobs, torch.zeros(1, 4), advantages, 0.2, 0.2, clip_ratio_c)
    assert torch.isfinite(loss).all() and torch.isfinite(clipped).all()
    assert loss[0, 0].item() == 0.0  # A = 0: no loss whatever the ratio
    assert loss[0, 1].item() == pytest.approx(-1.2)  # A > 0: the clipped term
    expected = 3.0 if clip_ratio_c else math.exp(20.0)  # A < 0: the dual-clip cap, else r held at e^20
    assert loss[0, 2].item() == pytest.approx(expected, rel=1e-6)
    assert loss[0, 3].item() == pytest.approx(-math.exp(-20.0), abs=1e-12)  # ratio about 0
    loss.sum().backward()
    assert logprobs.grad is not None and torch.isfinite(logprobs.grad).all()


def test_ratio_clamp_leaves_ordinary_log_ratios_alone() -> None:
    """Within +-20 the loss is the formula itself, to the last bit."""
    gen = torch.Generator().manual_seed(0)
    logprobs, old = torch.randn(4, 64, generator=gen) * 4, torch.randn(4, 64, generator=gen) * 4
    advantages = torch.randn(4, 64, generator=gen)
    assert (logprobs - old).abs().max() < 20
    ratio = torch.exp(logprobs - old)
    expected = -torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages)
    loss, _ = clipped_surrogate_loss(logprobs, old, advantages)
    assert torch.equal(loss, expected)


def _ragged() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sequences of 3 and 1 tokens: log-probs now and at sampling, the mask, the advantages."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-0.7, 0.0, 0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -2.3, -0.5, 0.0], [-0.6, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    advantages = torch.tensor([[0.5, 0.5, 0.5, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    return logprobs, old, mask, advantages


def test_gspo_ratio_and_clipping_by_hand_with_ragged_lengths() -> None:
    logprobs, old, mask, advantages = _ragged()
    # s_1 = exp((0.1 + 0.3 + 0) / 3), s_2 = exp(-0.1 / 1): the length-normalised geometric means.
    s1, s2 = math.exp(0.4 / 3), math.exp(-0.1)
    loss, clipped = POLICY_LOSSES["gspo"](logprobs, old, advantages, clip_low=0.05, clip_high=0.1, mask=mask)
    # Row 1: A > 0 and s_1 = 1.143 > 1.1, so the clipped term (1.1 * 0.5) is the min: loss -0.55.
    # Row 2: A < 0 and s_2 = 0.905 < 0.95: min(s A, 0.95 A) = -0.95 is the clipped one.
    expected_rows = [-min(s1 * 0.5, 1.1 * 0.5), -min(s2 * -1.0, 0.95 * -1.0)]
    torch.testing.assert_close(loss, torch.tensor(expected_rows)[:, None] * mask)
    torch.testing.assert_close(clipped, mask)  # both sequences clipped, on every one of their tokens
    # Within the clip range the gradient of row 1 is -A * s_1 / |y_1| on each of its tokens.
    loss, _ = POLICY_LOSSES["gspo"](logprobs, old, advantages, clip_low=0.5, clip_high=0.5, mask=mask)
    (grad,) = torch.autograd.grad(loss[0, 0], logprobs)
    torch.testing.assert_close(grad[0, :3], torch.full((3,), -0.5 * s1 / 3))


def test_gspo_is_grpos_loss_when_every_token_ratio_is_1() -> None:
    from rlft.algorithms.aggregation import aggregate_loss

    logprobs, _, mask, advantages = _ragged()
    old = logprobs.detach()
    losses, grads = [], []
    for name in ("ppo_clip", "gspo", "gspo_token"):
        per_token, _ = POLICY_LOSSES[name](logprobs, old, advantages, clip_low=0.2, clip_high=0.2, mask=mask)
        loss = aggregate_loss(per_token, mask, "seq_mean_token_mean")
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, logprobs)[0])
    for loss, grad in zip(losses[1:], grads[1:], strict=True):
        torch.testing.assert_close(loss, losses[0])
        torch.testing.assert_close(grad, grads[0])


def test_gspo_token_equals_gspo_with_one_advantage_per_sequence() -> None:
    logprobs, old, mask, advantages = _ragged()
    out = []
    for name in ("gspo", "gspo_token"):
        loss, clipped = POLICY_LOSSES[name](logprobs, old, advantages, clip_low=0.2, clip_high=0.2, mask=mask)
        out.append((loss, clipped, torch.autograd.grad((loss / mask.sum(-1, keepdim=True)).sum(), logprobs)[0]))
    for a, b in zip(out[0], out[1], strict=True):
        torch.testing.assert_close(a, b)

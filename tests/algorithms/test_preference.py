"""Preference losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.preference import (
    PREFERENCE_LOSSES,
    UNPAIRED_PREFERENCE_LOSSES,
    bradley_terry_loss,
    dpo_loss,
    ipo_loss,
    kto_balanced_weights,
    kto_loss,
    kto_reference_point,
    sequence_logps,
)

t = torch.tensor


def test_bradley_terry_hand_values():
    loss = bradley_terry_loss(t([1.0, 0.0, 3.0]), t([0.0, 2.0, 3.0]))
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 1, -2, 0
    expected = [math.log1p(math.exp(-1)), math.log1p(math.exp(2)), math.log(2)]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)


def test_bradley_terry_margin_scalar_and_per_pair():
    assert bradley_terry_loss(t([1.0]), t([0.0]), margin=1.0).item() == pytest.approx(math.log(2))
    per_pair = bradley_terry_loss(t([1.0, 1.0]), t([0.0, 0.0]), margin=t([0.0, 2.0]))
    assert per_pair.tolist() == pytest.approx(
        [math.log1p(math.exp(-1)), math.log1p(math.exp(1))], abs=1e-6
    )


def test_bradley_terry_is_finite_far_from_the_data_and_has_the_hand_gradient():
    assert bradley_terry_loss(t([-1000.0]), t([0.0])).item() == pytest.approx(1000.0)
    chosen = t([1.0], requires_grad=True)
    bradley_terry_loss(chosen, t([0.0])).sum().backward()
    # d/dr_w of -log sigmoid(r_w - r_l) = -sigmoid(-(r_w - r_l)) = -sigmoid(-1)
    assert chosen.grad.item() == pytest.approx(-1 / (1 + math.e), abs=1e-6)


def test_dpo_hand_values():
    # log-ratios: chosen -1 - (-2) = 1, rejected -3 - (-2) = -1; h = 2; beta h = 1.
    chosen = t([-1.0], requires_grad=True)
    loss, r_w, r_l = dpo_loss(chosen, t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)
    assert (r_w.item(), r_l.item()) == (pytest.approx(0.5), pytest.approx(-0.5))
    loss.sum().backward()
    # d loss / d chosen_logps = -beta * sigmoid(-beta h)
    assert chosen.grad.item() == pytest.approx(-0.5 / (1 + math.e), abs=1e-6)


def test_dpo_at_the_reference_is_log2_and_label_smoothing_mixes_both_signs():
    loss, _, _ = dpo_loss(
        t([-4.0, -7.0]), t([-5.0, -1.0]), t([-4.0, -7.0]), t([-5.0, -1.0]), beta=0.1
    )
    assert loss.tolist() == pytest.approx([math.log(2)] * 2, abs=1e-6)
    smoothed, _, _ = dpo_loss(
        t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5, label_smoothing=0.1
    )
    expected = 0.9 * math.log1p(math.exp(-1)) + 0.1 * math.log1p(math.exp(1))
    assert smoothed.item() == pytest.approx(expected, abs=1e-6)


def test_ipo_hand_values():
    # tau = 0.25: target gap 1 / (2 tau) = 2.
    at_target, _, _ = ipo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), tau=0.25)
    assert at_target.item() == pytest.approx(0.0)
    chosen = t([-2.0], requires_grad=True)
    loss, r_w, r_l = ipo_loss(chosen, t([-3.0]), t([-2.0]), t([-2.0]), tau=0.25)  # h = 1
    assert loss.item() == pytest.approx(1.0)
    assert (r_w.item(), r_l.item()) == (pytest.approx(0.0), pytest.approx(-0.25))
    loss.sum().backward()
    assert chosen.grad.item() == pytest.approx(-2.0)  # 2 (h - 2)
    overshoot, _, _ = ipo_loss(t([0.0]), t([-4.0]), t([-2.0]), t([-2.0]), tau=0.25)  # h = 4
    assert overshoot.item() == pytest.approx(4.0)  # IPO also pulls back a gap that is too large


def test_sequence_logps_and_batch_splitting():
    logprobs = t([[-1.0, -2.0, -5.0], [-0.5, -0.5, -0.5]])
    mask = t([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert sequence_logps(logprobs, mask).tolist() == [-3.0, -1.5]
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(8, generator=gen) for _ in range(4)]
    for name, fn in PREFERENCE_LOSSES.items():
        full = fn(*args, 0.2)[0].mean()
        halves = torch.stack(
            [fn(*[a[:4] for a in args], 0.2)[0].mean(), fn(*[a[4:] for a in args], 0.2)[0].mean()]
        )
        assert full.item() == pytest.approx(halves.mean().item(), abs=1e-6), name


def test_sequence_logps_ignore_what_sits_on_padding():
    """-inf on padding (a token the model rules out) made the sum NaN when masked by 0 * -inf."""
    logprobs = t([[-1.0, -2.0, -math.inf], [-0.5, float("nan"), -0.5]])
    mask = t([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    assert sequence_logps(logprobs, mask).tolist() == [-3.0, -1.0]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_kto_loss_and_gradients_against_a_hand_computation():
    # r = policy - ref: 1.0 (up), -2.0 (down), 0.5 (down); z0 = 0.25, beta = 0.5, w_d 2, w_u 3.
    policy = torch.tensor([-1.0, -5.0, -2.5], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-2.0, -3.0, -3.0], dtype=torch.float64)
    desirable = torch.tensor([True, False, False])
    z0 = torch.tensor(0.25, dtype=torch.float64)
    loss, rewards = kto_loss(
        policy, ref, desirable, z0, beta=0.5, desirable_weight=2.0, undesirable_weight=3.0
    )
    s_up = _sigmoid(0.5 * (1.0 - 0.25))  # desirable: sigmoid(beta (r - z0))
    s_down1 = _sigmoid(0.5 * (0.25 + 2.0))  # undesirable: sigmoid(beta (z0 - r))
    s_down2 = _sigmoid(0.5 * (0.25 - 0.5))
    assert loss.tolist() == pytest.approx(
        [2 * (1 - s_up), 3 * (1 - s_down1), 3 * (1 - s_down2)], abs=1e-12
    )
    assert rewards.tolist() == pytest.approx([0.5, -1.0, 0.25], abs=1e-12)
    assert not rewards.requires_grad
    loss.sum().backward()
    # d/dr of w (1 - sigmoid(beta (r - z0))) = -w beta s (1 - s);
    # d/dr of w (1 - sigmoid(beta (z0 - r))) = +w beta s (1 - s)
    expected = [
        -2 * 0.5 * s_up * (1 - s_up),
        3 * 0.5 * s_down1 * (1 - s_down1),
        3 * 0.5 * s_down2 * (1 - s_down2),
    ]
    assert policy.grad.tolist() == pytest.approx(expected, abs=1e-12)
    assert UNPAIRED_PREFERENCE_LOSSES["kto"] is kto_loss


def test_kto_reference_point_is_a_clamped_detached_mean_and_no_gradient_reaches_it():
    mismatched = torch.tensor([-4.0, -6.0, -1.0], dtype=torch.float64, requires_grad=True)
    ref_mismatched = torch.tensor([-5.0, -6.5, -3.0], dtype=torch.float64)
    z0 = kto_reference_point(mismatched, ref_mismatched)
    assert z0.item() == pytest.approx((1.0 + 0.5 + 2.0) / 3)
    assert z0.dim() == 0 and not z0.requires_grad
    negative = kto_reference_point(torch.tensor([-5.0, -5.0]), torch.tensor([-4.0, -4.5]))
    assert negative.item() == 0.0  # a KL cannot be negative; the one-batch estimate can
    # A z0 that still carries a graph is detached by the loss too: the mismatched log-probs get
    # no gradient, while the batch's own log-probs do.
    z0_live = (mismatched - ref_mismatched).mean()
    policy = torch.tensor([-1.0, -1.0], dtype=torch.float64, requires_grad=True)
    loss, _ = kto_loss(
        policy,
        torch.tensor([-1.5, -0.5], dtype=torch.float64),
        torch.tensor([True, False]),
        z0_live,
    )
    loss.sum().backward()
    assert mismatched.grad is None
    assert policy.grad is not None and bool((policy.grad != 0).all())


def test_kto_weights_scale_each_side_only():
    policy, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    desirable = torch.tensor([True, False])
    base, _ = kto_loss(policy, ref, desirable, 0.1, beta=0.3)
    up, _ = kto_loss(policy, ref, desirable, 0.1, beta=0.3, desirable_weight=4.0)
    down, _ = kto_loss(policy, ref, desirable, 0.1, beta=0.3, undesirable_weight=0.5)
    assert up.tolist() == pytest.approx([4 * base[0].item(), base[1].item()])
    assert down.tolist() == pytest.approx([base[0].item(), 0.5 * base[1].item()])


def test_kto_desirable_loss_falls_and_undesirable_loss_rises_as_the_log_ratio_rises():
    logratios = torch.linspace(-3.0, 3.0, 13)
    ref = torch.zeros(13)
    up, _ = kto_loss(logratios, ref, torch.ones(13, dtype=torch.bool), 0.2, beta=1.0)
    down, _ = kto_loss(logratios, ref, torch.zeros(13, dtype=torch.bool), 0.2, beta=1.0)
    assert bool((up.diff() < 0).all()) and bool((down.diff() > 0).all())
    # At r = z0 both sides sit at w / 2: the reference point is where gain and loss meet.
    at_z0, _ = kto_loss(torch.tensor([0.2, 0.2]), torch.zeros(2), torch.tensor([True, False]), 0.2)
    assert at_z0.tolist() == pytest.approx([0.5, 0.5])


def test_kto_balanced_weights_put_the_ratio_in_the_papers_range():
    for n_d, n_u in [(10, 90), (90, 10), (50, 50), (60, 50), (1, 1000), (7, 3), (0, 5), (5, 0)]:
        w_d, w_u = kto_balanced_weights(n_d, n_u)
        assert min(w_d, w_u) == 1.0  # only the rarer kind is up-weighted
        if n_d and n_u:
            assert 1.0 - 1e-12 <= w_d * n_d / (w_u * n_u) <= 4 / 3 + 1e-12, (n_d, n_u)
    assert kto_balanced_weights(10, 90) == pytest.approx((9.0, 1.0))
    assert kto_balanced_weights(90, 10) == pytest.approx((1.0, 6.75))  # ratio 9 -> 4/3
    assert kto_balanced_weights(60, 50) == (1.0, 1.0)
    with pytest.raises(ValueError, match="counts >= 0"):
        kto_balanced_weights(-1, 3)

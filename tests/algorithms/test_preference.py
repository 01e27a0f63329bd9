"""Preference losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.preference import (
    PREFERENCE_LOSSES,
    bradley_terry_loss,
    dpo_loss,
    ipo_loss,
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

"""ILQL losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.q_learning import (
    awac_lm_loss,
    awac_weights,
    cql_loss,
    expectile_loss,
    ilql_logits,
    next_counted_values,
    polyak,
    q_td_loss,
)


def test_next_counted_values_skips_environment_tokens() -> None:
    values = torch.tensor([[1.0, 2.0, 9.0, 9.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    assert next_counted_values(values, mask).tolist() == [[2.0, 3.0, 3.0, 3.0, 0.0, 0.0]]


def test_q_td_loss_by_hand() -> None:
    # (r + gamma V' - Q)^2: (1 + 0.5*2 - 1.5)^2 = 0.25 ; (0 + 0.5*0 - (-1))^2 = 1
    loss = q_td_loss(torch.tensor([[1.5, -1.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), 0.5)
    assert loss.tolist() == [[0.25, 1.0]]


def test_expectile_loss_by_hand() -> None:
    # u = q - v = 2 (>0): tau * 4 = 2.8 ; u = -1 (<0): (1 - tau) * 1 = 0.3
    loss = expectile_loss(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 0.0]), tau=0.7)
    assert loss.tolist() == pytest.approx([2.8, 0.3])


def test_cql_loss_by_hand() -> None:
    q = torch.tensor([[[0.0, math.log(3.0)]]])  # logsumexp = log(1 + 3) = log 4
    assert cql_loss(q, torch.tensor([[1]])).item() == pytest.approx(math.log(4.0) - math.log(3.0))
    assert cql_loss(q, torch.tensor([[0]])).item() == pytest.approx(math.log(4.0))


def test_awac_by_hand() -> None:
    w = awac_weights(torch.tensor([1.0, 5.0]), torch.tensor([0.0, 0.0]), beta=2.0, max_weight=10.0)
    assert w.tolist() == pytest.approx([math.exp(2.0), 10.0])
    assert awac_lm_loss(torch.tensor([-0.5, -1.0]), w).tolist() == pytest.approx([0.5 * math.exp(2.0), 10.0])


def test_ilql_logits_and_polyak_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0]])
    out = ilql_logits(logits, torch.tensor([[0.5, -0.5]]), torch.tensor([0.5]), beta=2.0)
    assert out.tolist() == [[1.0, 0.0]]  # 1 + 2*(0.5-0.5), 2 + 2*(-0.5-0.5)
    assert polyak(torch.tensor(1.0), torch.tensor(3.0), 0.75).item() == pytest.approx(1.5)

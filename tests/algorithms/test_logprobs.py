"""Per-token log-probabilities and entropies against naive references and hand values."""

from __future__ import annotations

import math

import torch

from rlft.algorithms.logprobs import entropy_from_logits, selective_log_softmax


def test_selective_log_softmax_by_hand() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = (1/4, 3/4)
    got = selective_log_softmax(logits, torch.tensor([[1]]))
    torch.testing.assert_close(got, torch.tensor([[math.log(0.75)]]))


def test_selective_log_softmax_matches_naive_gather() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen) * 4
    token_ids = torch.randint(0, 11, (3, 5), generator=gen)
    naive = torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(selective_log_softmax(logits, token_ids), naive)


def test_selective_log_softmax_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[[1000.0, 0.0, -1000.0]]])
    got = selective_log_softmax(logits, torch.tensor([[0]]))
    torch.testing.assert_close(got, torch.tensor([[0.0]]))


def test_entropy_by_hand() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]]])
    # uniform over 4 -> log 4; (1/4, 3/4) -> -(1/4 log 1/4 + 3/4 log 3/4)
    expected = [math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([expected]))


def test_entropy_gradient_is_finite_with_masked_vocabulary() -> None:
    logits = torch.tensor([[[0.5, -1.0, -math.inf]]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()

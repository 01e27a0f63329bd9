"""Loss aggregation by hand, and invariance to gradient accumulation on a tiny linear policy."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.aggregation import LOSS_AGG_MODES, aggregate_loss, masked_mean
from rlft.algorithms.kl import kl_k3
from rlft.algorithms.logprobs import selective_log_softmax
from rlft.algorithms.losses import clipped_surrogate_loss

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_token_mean_by_hand() -> None:
    assert aggregate_loss(PER_TOKEN, MASK, "token_mean").item() == pytest.approx(7 / 3)
    assert aggregate_loss(PER_TOKEN, MASK, "token_mean", batch_tokens=7).item() == pytest.approx(
        1.0
    )


def test_seq_mean_token_mean_by_hand() -> None:
    # sequence means 1.5 and 4
    assert aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean").item() == pytest.approx(2.75)
    got = aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_mean", batch_sequences=4)
    assert got.item() == pytest.approx(5.5 / 4)


def test_seq_mean_token_sum_norm_by_hand() -> None:
    assert aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm").item() == pytest.approx(7 / 6)
    got = aggregate_loss(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_len=4)
    assert got.item() == pytest.approx(7 / 8)


def test_empty_mask_gives_zero_not_nan() -> None:
    empty = torch.zeros_like(MASK)
    for mode in LOSS_AGG_MODES:
        assert aggregate_loss(PER_TOKEN, empty, mode).item() == 0.0
    assert masked_mean(PER_TOKEN, empty).item() == 0.0


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match="token_mean"):
        aggregate_loss(PER_TOKEN, MASK, "sum")


def test_masked_mean_by_hand() -> None:
    assert masked_mean(PER_TOKEN, MASK).item() == pytest.approx(7 / 3)


# --- gradient accumulation ------------------------------------------------------------------

B, T, D, V = 8, 6, 5, 7


def tiny_batch() -> dict[str, torch.Tensor]:
    """A batch for a linear "policy" logits = features @ W, with completions of varied length."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 1, 3, 2, 5, 4, 1, 6])
    return {
        "features": torch.randn(B, T, D, generator=gen),
        "token_ids": torch.randint(0, V, (B, T), generator=gen),
        "advantages": torch.randn(B, T, generator=gen),
        "old_logprobs": -torch.rand(B, T, generator=gen) * 3,
        "ref_logprobs": -torch.rand(B, T, generator=gen) * 3,
        "mask": (torch.arange(T)[None, :] < lengths[:, None]).float(),
    }


def per_token_loss(weight: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The GRPO per-token loss: clipped surrogate plus k3 KL, through real log-softmax gradients."""
    logprobs = selective_log_softmax(batch["features"] @ weight, batch["token_ids"])  # (b, t)
    pg, _ = clipped_surrogate_loss(logprobs, batch["old_logprobs"], batch["advantages"])
    return pg + 0.1 * kl_k3(logprobs, batch["ref_logprobs"])


def full_and_accumulated_grads(
    mode: str, whole_batch_normalisers: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tiny_batch()
    weight = torch.randn(D, V, generator=torch.Generator().manual_seed(1), requires_grad=True)
    full = aggregate_loss(per_token_loss(weight, batch), batch["mask"], mode)
    (full_grad,) = torch.autograd.grad(full, weight)

    totals = {
        "batch_tokens": float(batch["mask"].sum()),
        "batch_sequences": float(B),
        "max_len": T,
    }
    accumulated = torch.zeros_like(weight)
    n_micro = 4
    for rows in torch.arange(B).chunk(n_micro):
        # Each micro-batch is trimmed to its own longest completion, as a padded collator would.
        width = int(batch["mask"][rows].sum(-1).max())
        micro = {k: v[rows][:, :width] for k, v in batch.items()}
        loss = aggregate_loss(
            per_token_loss(weight, micro),
            micro["mask"],
            mode,
            **(totals if whole_batch_normalisers else {}),
        )
        if not whole_batch_normalisers:
            loss = loss / n_micro
        (grad,) = torch.autograd.grad(loss, weight)
        accumulated += grad
    return full_grad, accumulated


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_gradient_accumulation_gives_the_full_batch_gradient(mode: str) -> None:
    """A batch of 8 processed whole == 4 micro-batches of 2 with accumulated gradients."""
    full_grad, accumulated = full_and_accumulated_grads(mode)
    assert full_grad.abs().sum() > 0
    torch.testing.assert_close(accumulated, full_grad)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_sum_norm"])
def test_micro_batch_normalisers_would_break_invariance(mode: str) -> None:
    """The invariance test above has teeth: normalising each micro-batch by itself is wrong."""
    full_grad, accumulated = full_and_accumulated_grads(mode, whole_batch_normalisers=False)
    assert not torch.allclose(accumulated, full_grad, atol=1e-4)


# --- issue 13: whatever sits on masked positions never reaches the loss ----------------------------


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_on_masked_positions_is_ignored(poison: float) -> None:
    """Masks were applied by multiplication, and 0 * nan = 0 * inf = nan poisoned the loss."""
    poisoned = PER_TOKEN.clone()
    poisoned[~MASK.bool()] = poison
    for mode in LOSS_AGG_MODES:
        leaf = poisoned.clone().requires_grad_(True)
        loss = aggregate_loss(leaf, MASK, mode)
        assert loss.item() == aggregate_loss(PER_TOKEN, MASK, mode).item(), mode
        loss.backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), mode
        assert (leaf.grad[~MASK.bool()] == 0).all(), mode
    assert masked_mean(poisoned, MASK).item() == pytest.approx(7 / 3)


def test_truncated_importance_weights_ignore_masked_positions() -> None:
    from rlft.algorithms.importance import truncated_importance_weights

    trainer = torch.tensor([[-1.0, -2.0, -float("inf")], [-1.0, float("nan"), -float("inf")]])
    sampler = torch.tensor([[-1.5, -1.0, -float("inf")], [-1.0, -1.0, 0.0]])
    weights = truncated_importance_weights(trainer, sampler, MASK, cap=2.0)
    expected = torch.tensor([[math.exp(0.5), math.exp(-1.0), 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(weights, expected)

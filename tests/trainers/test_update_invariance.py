"""Splitting a mini-batch into micro-batches does not change the update.

``update()`` accumulates the gradients of micro-batches whose losses are normalised by their
mini-batch's totals, so micro-batches of 8 and of 2 must leave the same weights after the
optimiser steps. The tests run ``update()`` itself on a batch collected by ``collect``, with
plain SGD and no gradient clipping: the step is then the gradient itself, so a gradient that is
off by any factor shows (Adam's first step is close to sign(gradient) and would hide it).
"""

from __future__ import annotations

import pytest
import torch

from rlft.algorithms.aggregation import LOSS_AGG_MODES
from rlft.trainers.loop import micro_batch_loss, update

NO_CLIPPING = "train.max_grad_norm=1e9"


def weight_change(
    collect_batch, *overrides: str
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Collect a batch, run ``update()`` on it once, and return how far each trainable weight
    moved (by checkpoint name) and the update's metrics."""
    config, learner, batch = collect_batch(NO_CLIPPING, *overrides)
    params = {name: p for name, p in learner.modules().named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.SGD(params.values(), lr=0.05)
    metrics, finite = update(config, learner, optimizer, batch, torch.Generator().manual_seed(0),
                             float(config.algorithm.kl_coef))  # fmt: skip
    assert finite
    return {name: p.detach() - before[name] for name, p in params.items()}, metrics


def flat(change: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([delta.flatten() for delta in change.values()])


def assert_same_update(small: dict[str, torch.Tensor], large: dict[str, torch.Tensor]) -> None:
    assert flat(large).abs().max() > 1e-3, (
        "the update must move the weights for the comparison to mean anything"
    )
    # atol: a float32 weight near 1 moves in steps of 1.2e-7; the updates themselves are ~1e-3.
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-6)


def test_clipped_surrogate_update_is_the_same_for_micro_batches_of_8_and_2(collect_batch) -> None:
    """GRPO with two epochs: the second epoch's importance ratios differ from 1, so the clip
    is active in the update being compared."""
    recipe = ("algorithm.name=grpo", "train.epochs_per_batch=2")
    large, metrics = weight_change(collect_batch, *recipe, "train.micro_batch_size=8")
    small, _ = weight_change(collect_batch, *recipe, "train.micro_batch_size=2")
    assert metrics["policy/clip_fraction"] > 0
    assert_same_update(small, large)


def test_ppo_update_with_a_value_head_is_the_same_for_micro_batches_of_8_and_2(
    collect_batch,
) -> None:
    """PPO: shuffled mini-batches of 8 over two epochs, the critic's head trained with the policy."""
    recipe = ("algorithm.name=ppo", "train.mini_batch_size=8", "train.epochs_per_batch=2")
    large, metrics = weight_change(collect_batch, *recipe, "train.micro_batch_size=8")
    small, _ = weight_change(collect_batch, *recipe, "train.micro_batch_size=2")
    assert metrics["loss/value"] > 0
    head = [delta for name, delta in large.items() if name.startswith("value_head.")]
    assert head and max(delta.abs().max() for delta in head) > 1e-3, "the value head must train"
    assert_same_update(small, large)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_gradient_accumulation_gives_the_whole_batch_update_for_each_loss_agg_mode(
    collect_batch, mode
) -> None:
    """One micro-batch of 16, or 8 micro-batches of 2 whose gradients accumulate."""
    recipe = ("algorithm.name=grpo", f"algorithm.loss_agg_mode={mode}")
    whole, _ = weight_change(collect_batch, *recipe, "train.micro_batch_size=16")
    accumulated, _ = weight_change(collect_batch, *recipe, "train.micro_batch_size=2")
    assert_same_update(accumulated, whole)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_normalising_each_micro_batch_by_itself_would_break_the_invariance(
    collect_batch, mode, monkeypatch
) -> None:
    """The checks above have teeth: a loss normalised by its own micro-batch's totals (the
    usual accumulation bug) gives another update on this batch."""

    def own_totals(config, learner, batch, rows, kl_coef, batch_tokens, batch_seqs):
        tokens = float(batch.rollout.completion_mask[rows].sum())
        return micro_batch_loss(config, learner, batch, rows, kl_coef, tokens, float(len(rows)))

    recipe = ("algorithm.name=grpo", f"algorithm.loss_agg_mode={mode}")
    whole, _ = weight_change(collect_batch, *recipe, "train.micro_batch_size=16")
    monkeypatch.setitem(update.__globals__, "micro_batch_loss", own_totals)
    accumulated, _ = weight_change(collect_batch, *recipe, "train.micro_batch_size=2")
    assert not torch.allclose(flat(accumulated), flat(whole), rtol=1e-2, atol=1e-5)

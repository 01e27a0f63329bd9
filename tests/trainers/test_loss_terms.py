"""Each optional term of the trainer's loss is in ``micro_batch_loss`` with its sign and weight.

A term computed but never added (the entropy bonus once had no gradient, so A2C's entropy_coef
did nothing) leaves the loss unchanged when its coefficient changes; these tests set the
coefficient to 0 and to 0.5 on the same collected batch and compare the two losses with the
term's own statistic, as ``micro_batch_loss`` reports it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlft.trainers.loop import micro_batch_loss


def loss_stats_and_gradient(config, learner, batch) -> tuple[float, dict[str, float], torch.Tensor]:
    learner.modules().zero_grad(set_to_none=True)
    learner.modules().train()
    rows = torch.arange(len(batch.rollout))
    tokens = float(batch.rollout.completion_mask.sum())
    kl_coef = float(config.algorithm.kl_coef)
    loss, stats = micro_batch_loss(config, learner, batch, rows, kl_coef, tokens, float(len(rows)))
    loss.backward()
    params = [p for p in learner.modules().parameters() if p.requires_grad]
    grad = torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in params]
    )
    return loss.item(), stats, grad


@pytest.mark.parametrize(
    "algorithm, coefficient, statistic, sign",
    [
        ("a2c", "entropy_coef", "policy/entropy", -1.0),  # a bonus: higher entropy, lower loss
        ("ppo", "vf_coef", "loss/value", 1.0),
    ],
)
def test_a_loss_term_moves_the_loss_by_its_coefficient_times_its_statistic(
    collect_batch, algorithm, coefficient, statistic, sign
) -> None:
    config, learner, batch = collect_batch(f"algorithm.name={algorithm}")
    assert config.algorithm.loss_agg_mode == "token_mean"  # the statistics are token means too

    def with_coefficient(value: float):
        return dataclasses.replace(
            config, algorithm=dataclasses.replace(config.algorithm, **{coefficient: value})
        )

    without, _, grad_without = loss_stats_and_gradient(with_coefficient(0.0), learner, batch)
    with_term, stats, grad_with = loss_stats_and_gradient(with_coefficient(0.5), learner, batch)
    assert stats[statistic] > 0
    assert with_term - without == pytest.approx(sign * 0.5 * stats[statistic], rel=1e-4)
    assert not torch.allclose(grad_with, grad_without, rtol=1e-3, atol=1e-6)

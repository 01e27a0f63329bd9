"""What sits outside ``completion_mask`` never reaches the trainer's loss or its gradients.

Each test runs the loss the update runs (``micro_batch_loss``) on a batch collected by the RL
loop's own ``collect``; a test that rebuilt the loss from the pure functions would keep passing
if the trainer stopped passing the mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from rlft.algorithms.presets import ALGORITHMS
from rlft.trainers.loop import micro_batch_loss


def loss_and_gradient(config: Any, learner: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch's loss as one micro-batch, and the gradient of every trainable parameter
    (flattened; zeros for a parameter the loss does not reach)."""
    params = [p for p in learner.modules().parameters() if p.requires_grad]
    learner.modules().zero_grad(set_to_none=True)
    learner.modules().train()
    rows = torch.arange(len(batch.rollout))
    mask = batch.rollout.completion_mask
    loss, _ = micro_batch_loss(
        config,
        learner,
        batch,
        rows,
        float(config.algorithm.kl_coef),
        float(mask.sum()),
        float(len(rows)),
    )
    loss.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    return loss.detach(), torch.cat([g.flatten() for g in grads])


def with_garbage(
    obj: Any, where: torch.Tensor, gen: torch.Generator, vocab_size: int | None = None
) -> Any:
    """A copy of ``obj`` (a Batch or a Rollout) with every (B, T) tensor but the masks changed
    at ``where``: numbers replaced by large ones of either sign and, given ``vocab_size``, token
    ids redrawn (integer tensors are kept otherwise)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = with_garbage(value, where, gen, vocab_size)
            continue
        per_token = isinstance(value, torch.Tensor) and value.shape == where.shape
        if not per_token or "mask" in f.name or "attention" in f.name:
            continue
        if value.dtype.is_floating_point:
            noise = 50.0 * torch.randn(value.shape, generator=gen)
            changes[f.name] = torch.where(where, noise, value)
        elif vocab_size is not None:
            noise = torch.randint(0, vocab_size, value.shape, generator=gen)
            changes[f.name] = torch.where(where, noise, value)
    return dataclasses.replace(obj, **changes)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_padding_after_eos_reaches_neither_the_loss_nor_the_gradient(
    collect_batch, algorithm: str
) -> None:
    config, learner, batch = collect_batch(f"algorithm.name={algorithm}")
    padding = batch.rollout.completion_mask == 0
    assert padding.any(), "the batch needs completions that end before max_new_tokens"
    assert batch.advantages.abs().sum() > 0, "the batch needs non-zero advantages"
    loss, grad = loss_and_gradient(config, learner, batch)
    assert grad.abs().sum() > 0

    vocab = learner.policy.config.vocab_size
    garbage = with_garbage(batch, padding, torch.Generator().manual_seed(1), vocab)
    assert not torch.equal(garbage.rollout.completion_ids, batch.rollout.completion_ids)
    assert not torch.equal(garbage.advantages, batch.advantages)
    garbage_loss, garbage_grad = loss_and_gradient(config, learner, garbage)
    torch.testing.assert_close(garbage_loss, loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(garbage_grad, grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_a_completion_token_changes_the_loss_and_the_gradient(
    collect_batch, algorithm: str
) -> None:
    """The check above has teeth: the same change on counted tokens moves both."""
    config, learner, batch = collect_batch(f"algorithm.name={algorithm}")
    loss, grad = loss_and_gradient(config, learner, batch)
    counted = torch.zeros_like(batch.rollout.completion_mask, dtype=torch.bool)
    counted[:, 0] = True  # every completion has at least one token
    vocab = learner.policy.config.vocab_size
    garbage = with_garbage(batch, counted, torch.Generator().manual_seed(1), vocab)
    garbage_loss, garbage_grad = loss_and_gradient(config, learner, garbage)
    assert not torch.allclose(garbage_loss, loss, rtol=1e-3)
    assert not torch.allclose(garbage_grad, grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_environment_tokens_reach_neither_the_loss_nor_the_gradient(
    tiny_model_dir, algorithm
) -> None:
    """A multi-turn batch (the agent's collector): environment tokens sit between agent turns,
    attended to but not counted. Whatever the batch holds on them (log-probs, advantages,
    returns, values, KL) changes neither the loss nor the gradient (verl's metamorphic test)."""
    from rlft.config.agent import agent_config_from_dict
    from rlft.models.loading import frozen_reference, load_policy
    from rlft.trainers.agent import collect_episodes, make_family, policy_recipe, warm_start_agent
    from rlft.trainers.loop import build_learner

    config = agent_config_from_dict({
        "algorithm": algorithm, "episodes": 8, "episodes_per_iteration": 8, "group_size": 4,
        "episode": {"max_turn_tokens": 10, "max_total_tokens": 64},
    })  # fmt: skip
    recipe = policy_recipe(config)
    policy, tokenizer = load_policy(str(tiny_model_dir))
    family = make_family(config)
    warm_start_agent(policy, tokenizer, family, 60, 16, 3e-3, 0)  # episodes with different returns
    learner = build_learner(recipe, policy)
    kl_coef = float(recipe.algorithm.kl_coef)
    gen = torch.Generator().manual_seed(0)
    batch, _ = collect_episodes(
        recipe,
        config,
        learner,
        frozen_reference(policy),
        tokenizer,
        family,
        gen,
        kl_coef,
    )
    rollout = batch.rollout
    environment = (rollout.completion_attention == 1) & (rollout.completion_mask == 0)
    assert environment.any(), "the episodes need environment tokens between agent turns"
    assert batch.advantages.abs().sum() > 0
    loss, grad = loss_and_gradient(recipe, learner, batch)
    assert grad.abs().sum() > 0
    garbage = with_garbage(batch, environment, torch.Generator().manual_seed(1))
    assert not torch.equal(garbage.advantages, batch.advantages)
    garbage_loss, garbage_grad = loss_and_gradient(recipe, learner, garbage)
    torch.testing.assert_close(garbage_loss, loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(garbage_grad, grad, rtol=1e-5, atol=1e-7)

"""Training a candidate from feedback: KTO on thumbs (and pairs split in two), or DPO on pairs.

The reference of both losses is the model being served when the round starts (for a user's
adapter: the shared model under it, i.e. the adapter disabled), so a candidate is pulled towards
the feedback and held close to what users are getting now.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlft.algorithms.preference import (
    dpo_loss,
    kto_balanced_weights,
    kto_loss,
    kto_reference_point,
    sequence_logps,
)
from rlft.common.optim import adamw
from rlft.errors import RlftError
from rlft.models.device import model_device
from rlft.models.dropout import disable_dropout
from rlft.online.data import Example
from rlft.rewards.pairs import PreferencePair
from rlft.rollout.sampling import score_completions
from rlft.trainers.dpo import completion_rollout

Model = Callable[..., Any]


@dataclass(frozen=True)
class TrainSettings:
    """What one candidate's training needs from the recipe."""

    steps: int
    batch_size: int
    learning_rate: float
    beta: float
    seed: int
    desirable_weight: float | None = None  # KTO; None: balanced from the counts
    undesirable_weight: float = 1.0
    dropout: bool = False  # keep the model's dropout (online.dropout); off by default


def completion_logps(
    model: Model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> torch.Tensor:
    """log pi(completion + EOS | prompt) summed over tokens, (B,); differentiable unless the
    caller is in ``torch.no_grad``."""
    batch = completion_rollout(tokenizer, prompts, completions).to(model_device(model))  # type: ignore[arg-type]
    logprobs, _, _ = score_completions(model, batch)  # type: ignore[arg-type]
    return sequence_logps(logprobs, batch.completion_mask)


def _optimizer_step(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One step; a non-finite loss or gradient leaves the weights untouched. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return float("nan")
    loss.backward()
    params = [p for p in policy.parameters() if p.requires_grad]
    if math.isfinite(float(torch.nn.utils.clip_grad_norm_(params, 1.0))):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _train(
    policy: torch.nn.Module,
    items: Sequence[Any],
    settings: TrainSettings,
    batch_loss: Callable[[list[Any]], torch.Tensor],
) -> list[float]:
    """``settings.steps`` optimiser steps on ``policy`` in place, each on a seeded random batch
    of ``items`` scored by ``batch_loss`` (a (B,) loss); returns the loss of each step."""
    optimizer = adamw([p for p in policy.parameters() if p.requires_grad], settings.learning_rate)
    rng = random.Random(settings.seed)
    losses = []
    if not settings.dropout:
        disable_dropout(policy)
    policy.train()
    for _ in range(settings.steps):
        batch = rng.sample(list(items), min(settings.batch_size, len(items)))
        losses.append(_optimizer_step(policy, optimizer, batch_loss(batch).mean()))
    policy.eval()
    return losses


def train_kto(
    policy: torch.nn.Module,
    reference: Model,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    settings: TrainSettings,
) -> list[float]:
    """``settings.steps`` KTO steps on ``policy`` in place (Ethayarajh et al. 2024); returns the
    loss of each step. The reference point z0 is estimated each step from mismatched pairs (each
    prompt with the next example's completion), as in the paper's implementation."""
    if not examples:
        raise RlftError("No judgements to train on.")
    n_up = sum(e.desirable for e in examples)
    w_d, w_u = kto_balanced_weights(n_up, len(examples) - n_up)
    if settings.desirable_weight is not None:
        w_d, w_u = settings.desirable_weight, settings.undesirable_weight

    def batch_loss(batch: list[Example]) -> torch.Tensor:
        prompts = [e.prompt for e in batch]
        completions = [e.completion for e in batch]
        mismatched = completions[1:] + completions[:1]
        with torch.no_grad():
            ref_logps = completion_logps(reference, tokenizer, prompts, completions)
            z0 = kto_reference_point(
                completion_logps(policy, tokenizer, prompts, mismatched),
                completion_logps(reference, tokenizer, prompts, mismatched),
            )
        logps = completion_logps(policy, tokenizer, prompts, completions)
        desirable = torch.tensor([e.desirable for e in batch], device=logps.device)
        return kto_loss(logps, ref_logps, desirable, z0, settings.beta, w_d, w_u)[0]

    return _train(policy, examples, settings, batch_loss)


def train_dpo(
    policy: torch.nn.Module,
    reference: Model,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    settings: TrainSettings,
) -> list[float]:
    """``settings.steps`` DPO steps (Rafailov et al. 2023, eq. 7) on ``policy`` in place."""
    if not pairs:
        raise RlftError(
            "online.method is dpo but no pairwise judgements were given yet; "
            "use method: kto for thumbs up/down, or ask users to compare two answers."
        )

    def batch_loss(batch: list[PreferencePair]) -> torch.Tensor:
        prompts = [p.prompt for p in batch]
        chosen, rejected = [p.chosen for p in batch], [p.rejected for p in batch]
        with torch.no_grad():
            ref_chosen = completion_logps(reference, tokenizer, prompts, chosen)
            ref_rejected = completion_logps(reference, tokenizer, prompts, rejected)
        return dpo_loss(
            completion_logps(policy, tokenizer, prompts, chosen),
            completion_logps(policy, tokenizer, prompts, rejected),
            ref_chosen,
            ref_rejected,
            settings.beta,
        )[0]

    return _train(policy, pairs, settings, batch_loss)

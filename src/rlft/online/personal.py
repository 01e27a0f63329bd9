"""Per-user LoRA adapters on top of the shared model (``personalization.method: adapter``).

Each user with at least ``min_judgements`` judgements gets an adapter of rank ``r`` trained with
KTO on their own feedback, with the shared model as the reference (the adapter disabled), so the
adapter learns how this user's taste differs from what everyone gets. The server keeps one base in
memory and switches the adapter's weights per request (:class:`rlft.serving.host.ModelHost`).
A flagged user (poisoning) still gets an adapter: their labels only stop shaping the shared model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.feedback.live import LiveJudgement
from rlft.models.lora import apply_lora, lora_reference
from rlft.online.data import kto_examples, split
from rlft.online.gate import heldout_accuracy
from rlft.online.train import TrainSettings, train_kto


@dataclass(frozen=True)
class AdapterResult:
    user: str
    lora_state: dict[str, torch.Tensor]
    judgements: int
    heldout_accuracy: float | None  # the user's own held-out judgements, against the shared model
    losses: list[float]

    @property
    def passed(self) -> bool:
        return self.heldout_accuracy is None or self.heldout_accuracy >= 0.5


def train_user_adapter(
    shared: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    user: str,
    judgements: Sequence[LiveJudgement],
    r: int,
    heldout_fraction: float,
    settings: TrainSettings,
) -> AdapterResult:
    """Train ``user``'s adapter on their training judgements; score it on their held-out ones."""
    from peft import get_peft_model_state_dict

    train, held = split(judgements, heldout_fraction)
    policy = apply_lora(copy.deepcopy(shared), r=r)
    reference = lora_reference(policy)
    losses = train_kto(policy, reference, tokenizer, kto_examples(train), settings)
    accuracy = heldout_accuracy(policy, reference, tokenizer, held) if held else None
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(policy).items()}
    return AdapterResult(user, state, len(judgements), accuracy, losses)

"""Supervised warm start: next-token loss on the answer tokens of (prompt, answer) pairs."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.common.optim import adamw
from rlft.models.device import model_device, to_device
from rlft.models.dropout import disable_dropout
from rlft.models.tokens import positions_from_mask, prompt_token_ids
from rlft.tasks import Problem


def sft_batch(
    tokenizer: PreTrainedTokenizerBase, problems: list[Problem]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), each (B, L), right-padded; labels are -100 on the
    prompt and on padding, so only the answer and its EOS are learned."""
    rows, label_rows = [], []
    # Tokenized as the sampler sees them: the prompt as encode_prompts does (one BOS at most), the
    # target with no special tokens of its own, since the policy generates it after the prompt.
    prompts = prompt_token_ids(tokenizer, [p.prompt for p in problems])
    for p, prompt in zip(problems, prompts, strict=True):
        answer = tokenizer(p.target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        label_rows.append([-100] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (row, lab) in enumerate(zip(rows, label_rows, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, : len(lab)] = torch.tensor(lab)
    return ids, mask, labels


def warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    draw_problems: Callable[[int, torch.Generator], list[Problem]],
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool = True,
    dropout: bool = False,
) -> list[float]:
    """Train ``steps`` supervised steps in place; returns the loss of each step. Dropout is
    turned off unless ``dropout`` (:func:`rlft.models.dropout.disable_dropout`)."""
    if steps == 0:
        return []
    if not dropout:
        disable_dropout(model)
    gen = torch.Generator().manual_seed(seed)
    optimizer = adamw(model.parameters(), learning_rate)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="warm start (SFT)", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        losses.append(supervised_step(model, optimizer, *sft_batch(tokenizer, draw_problems(batch_size, gen))))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def supervised_step(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer,
    ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
) -> float:  # fmt: skip
    """One next-token cross-entropy step on (B, L) right-padded ids; labels -100 are not learned.
    Returns the loss."""
    return supervised_update(model, optimizer, ids, mask, labels)[0]


def supervised_update(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer,
    ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
) -> tuple[float, float]:  # fmt: skip
    """:func:`supervised_step` returning (loss, gradient norm before clipping); a non-finite loss
    or gradient leaves the weights untouched. The batch (built on the CPU) moves to the model's device."""
    ids, mask, labels = to_device((ids, mask, labels), model_device(model))
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    # Position i predicts token i + 1.
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return loss.item(), float("nan")
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    if math.isfinite(grad_norm):
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return loss.item(), grad_norm

"""Reduce a (B, T) per-token loss to one number.

Each mode divides by a normaliser that describes the *whole* batch (``batch_tokens`` or
``batch_sequences``), so summing the micro-batch losses of a split batch gives exactly the
full-batch loss and gradient accumulation changes nothing. When the normalisers are omitted the
micro-batch is taken to be the whole batch.

  token_mean               sum of all token losses / number of tokens           (GRPO in TRL, DAPO)
  seq_mean_token_mean      mean over sequences of each sequence's token mean    (GRPO paper, eq. 3)
  seq_mean_token_sum_norm  sum of all token losses / (sequences * max_len)      (Dr.GRPO)
"""

from __future__ import annotations

import torch

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def aggregate_loss(
    per_token_loss: torch.Tensor,
    completion_mask: torch.Tensor,
    mode: str,
    batch_tokens: float | None = None,
    batch_sequences: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """per_token_loss, completion_mask: (B, T) -> scalar.

    batch_tokens / batch_sequences: totals over the whole batch this micro-batch belongs to.
    max_len: the fixed length of ``seq_mean_token_sum_norm`` (defaults to T).
    Masked positions are selected away (``torch.where``), not multiplied by 0, so a NaN or inf
    sitting on padding cannot turn the loss into NaN.
    """
    masked = _masked(per_token_loss, completion_mask)
    if mode == "token_mean":
        denom = completion_mask.sum() if batch_tokens is None else batch_tokens
        return masked.sum() / max(float(denom), 1.0)
    n_seq = per_token_loss.shape[0] if batch_sequences is None else batch_sequences
    if mode == "seq_mean_token_mean":
        seq_means = masked.sum(-1) / completion_mask.sum(-1).clamp(min=1.0)  # (B,)
        return seq_means.sum() / n_seq
    if mode == "seq_mean_token_sum_norm":
        length = per_token_loss.shape[1] if max_len is None else max_len
        return masked.sum() / (n_seq * length)
    raise ValueError(f"unknown loss_agg_mode {mode!r}; choose one of {LOSS_AGG_MODES}")


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values * mask``, but exactly 0 where the mask is 0 even if ``values`` is NaN or inf there
    (0 * inf is NaN). The gradient at those positions is 0 too."""
    return torch.where(mask != 0, values * mask, 0.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0.0 for an empty mask); whatever sits where the
    mask is 0 (NaN and inf included) is ignored."""
    return _masked(values, mask).sum() / mask.sum().clamp(min=1.0)

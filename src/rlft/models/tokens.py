"""Text to token ids and back, and the inputs a causal LM's forward takes, as the sampler, the
trainers and the reward model all see them.

Prompts are encoded left-padded, so that every row's last prompt token sits in the last column
and generation appends to all rows at once; position ids come from the attention mask, so
padding never shifts a prompt's positions. Completions are decoded up to (not including) EOS.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """The token ids of each prompt, with the tokenizer's special tokens (a BOS) added only where
    the text does not already start with its BOS: a chat template writes the BOS itself, and a
    second one is a sequence the model never saw in training."""
    bos = tokenizer.bos_token
    templated = [bool(bos) and text.startswith(bos) for text in prompts]
    ids: list[list[int]] = [[] for _ in prompts]
    for already in (False, True):
        rows = [i for i, t in enumerate(templated) if t == already]
        if rows:
            enc = tokenizer([prompts[i] for i in rows], add_special_tokens=not already).input_ids
            for i, row_ids in zip(rows, enc, strict=True):
                ids[i] = list(row_ids)
    return ids


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask, (B, P) each (see :func:`prompt_token_ids`)."""
    ids = prompt_token_ids(tokenizer, list(prompts))
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return input_ids, mask


def decode_completions(
    tokenizer: PreTrainedTokenizerBase, completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> list[str]:
    """Completion text of each row, up to (not including) EOS. completion_ids, completion_mask: (B, T)."""
    texts = []
    for ids, mask in zip(completion_ids.tolist(), completion_mask.tolist(), strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m and t != tokenizer.eos_token_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


def tokens_ending_at(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], ends: Sequence[int]) -> list[int]:
    """For each character position ``end`` of ``decode(ids)``, the index of the token where the
    text up to ``end`` ends: the smallest k with ``len(decode(ids[:k + 1])) >= end`` (0 for
    ``end`` 0; the last token for an ``end`` past the text). A binary search over prefix decodes:
    a token's text is only known in context (byte-level pieces, merged spaces)."""
    lengths: dict[int, int] = {}

    def length(k: int) -> int:
        if k not in lengths:
            lengths[k] = len(tokenizer.decode(list(ids[:k]), skip_special_tokens=True))
        return lengths[k]

    out = []
    for end in ends:
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if length(mid) >= end:
                hi = mid
            else:
                lo = mid + 1
        out.append(max(lo - 1, 0))
    return out


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token. (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether the forward of ``model`` (or of the model a wrapper such as peft's wraps) takes
    the keyword ``name`` (``position_ids``, ``logits_to_keep``, ``cache``, ...)."""
    unwrap = getattr(model, "get_base_model", None)
    target = unwrap() if callable(unwrap) else model
    try:
        return name in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return False

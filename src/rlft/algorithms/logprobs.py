"""Per-token log-probabilities and entropies from logits."""

from __future__ import annotations

import torch


def selective_log_softmax(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., token_ids]`` without materialising the full log-softmax.

    logits: (B, T, V); token_ids: (B, T) -> (B, T). Equivalent to
    ``torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)`` but it gathers
    first and subtracts the log-normaliser, so the (B, T, V) output is never allocated.
    """
    picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position. (B, T, V) -> (B, T).

    -sum_v p_v log p_v, with 0 log 0 = 0: logits of -inf (masked vocabulary) would otherwise give
    0 * -inf = NaN, in the value and in its gradient.
    """
    logp = torch.log_softmax(logits, dim=-1)
    finite_logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * finite_logp).sum(-1)

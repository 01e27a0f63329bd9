"""Per-token log-probabilities and entropies from logits."""

from __future__ import annotations

from typing import Any

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

    Differentiable (an entropy bonus in the loss needs its gradient) at the memory cost of the
    input alone: the backward pass recomputes the softmax from ``logits`` rather than autograd
    keeping log p, p and their product, three more (B, T, V) float32 tensors. The gradient is
    dH/dz_v = -p_v (log p_v + H), 0 where p_v = 0.
    """
    if torch.is_grad_enabled() and logits.requires_grad:
        return _Entropy.apply(logits)
    return _entropy(logits)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    finite_logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * finite_logp).sum(-1)


class _Entropy(torch.autograd.Function):
    """:func:`entropy_from_logits` with a backward that saves only the logits."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits)
        return _entropy(logits)

    @staticmethod
    def backward(ctx: Any, grad_entropy: torch.Tensor) -> torch.Tensor:
        (logits,) = ctx.saved_tensors
        logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
        p = logp.exp()
        # log p of a masked token is -inf; clamped to the most negative float, times p = 0 it is 0.
        logp = logp.clamp_(min=torch.finfo(logp.dtype).min)
        entropy = -(p * logp).sum(-1, keepdim=True)  # (B, T, 1)
        return logp.add_(entropy).mul_(p).mul_(-grad_entropy.unsqueeze(-1))

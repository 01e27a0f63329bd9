"""A data-parallel learner with ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each rank scores its own rows; the loss stays exact across ranks because it is normalised by the
*global* token count (the sum over ranks of the completion tokens in the mini-batch), not by a
per-rank mean. With a per-rank ``token_mean`` and gradient averaging, a rank with fewer tokens
would weigh its tokens more than the single-process loss does.

Launch with ``torchrun --nproc_per_node N`` (the ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` variables
it sets are read by :func:`init_from_env`), or from Ray actors that set the same variables.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group described by torchrun's environment; returns (rank, world_size)."""
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def global_sum(value: float | torch.Tensor) -> float:
    """The sum over ranks of a number (e.g. this rank's completion tokens)."""
    t = torch.as_tensor(value, dtype=torch.float64).clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t)


def token_sum_loss(
    per_token: torch.Tensor, mask: torch.Tensor, global_tokens: float
) -> torch.Tensor:
    """This rank's share of the token-mean loss: sum(per_token * mask) / global_tokens.

    per_token, mask: (b, T) rows of this rank. Summed over ranks it is exactly the token mean of
    the whole batch, so summing the ranks' gradients gives the single-process gradient.
    """
    # Selected, not multiplied: 0 * inf on a padded position would be NaN.
    return torch.where(mask.bool(), per_token, 0.0).sum() / max(global_tokens, 1.0)


def all_reduce_gradients(module: torch.nn.Module) -> None:
    """Sum every parameter's gradient over ranks (the ranks' losses are shares of one total, so
    their gradients add up; ``DistributedDataParallel`` would average instead)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))

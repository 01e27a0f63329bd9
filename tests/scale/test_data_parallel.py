"""Data parallel on 2 CPU processes (gloo) gives the gradient of one process on the whole batch,
with the loss normalised by the global token count."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlft.distributed.data_parallel import all_reduce_gradients, global_sum, token_sum_loss


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11))


def _batch():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 11, (6, 5), generator=gen)
    # Ragged completions: rank 0 gets far fewer tokens than rank 1, which a per-rank mean gets wrong.
    mask = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.float32,
    )
    advantages = torch.randn(6, 5, generator=gen)
    return tokens, mask, advantages


def _per_token(model, tokens, advantages):
    logits = model(tokens)  # (b, T, V)
    logprobs = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    return -advantages * logprobs


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tokens, mask, advantages = _batch()
    rows = slice(rank * 3, rank * 3 + 3)
    model = _model()
    n_global = global_sum(mask[rows].sum())
    loss = token_sum_loss(_per_token(model, tokens[rows], advantages[rows]), mask[rows], n_global)
    loss.backward()
    all_reduce_gradients(model)
    out[rank] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gradients_equal_full_batch_gradient():
    tokens, mask, advantages = _batch()
    model = _model()
    full = token_sum_loss(_per_token(model, tokens, advantages), mask, float(mask.sum()))
    full.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    for rank in range(2):
        assert torch.allclose(out[rank], expected, atol=1e-6), rank

    # Averaging per-rank token means (the naive aggregation) would give another loss.
    with torch.no_grad():
        per_rank = [
            token_sum_loss(
                _per_token(model, tokens[r], advantages[r]), mask[r], float(mask[r].sum())
            )
            for r in (slice(0, 3), slice(3, 6))
        ]
    assert not torch.allclose(0.5 * (per_rank[0] + per_rank[1]), full.detach(), atol=1e-3)


def test_token_sum_loss_ignores_non_finite_values_on_padding():
    import torch

    from rlft.distributed.data_parallel import token_sum_loss

    per_token = torch.tensor([[1.0, 3.0, float("inf")], [2.0, float("nan"), 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert token_sum_loss(per_token, mask, global_tokens=3.0).item() == 2.0

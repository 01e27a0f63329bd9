"""The replay buffer: FIFO capacity, bounded staleness, and the truncated importance ratio that
corrects replayed tokens."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.importance import truncated_importance_weights
from rlft.rollout.replay import ReplayBuffer


def test_replay_staleness_and_truncation() -> None:
    buf = ReplayBuffer(capacity=3, max_staleness=1)
    buf.add(["a"], 0)
    buf.add(["b", "c"], 1)
    buf.add(["d"], 2)  # capacity 3: "a" falls out
    assert [e.item for e in buf.entries] == ["b", "c", "d"]
    drawn = {e.item for e in buf.sample(50, version=3, gen=torch.Generator().manual_seed(0))}
    assert drawn == {"d"}  # b, c are 2 versions old > max_staleness
    with pytest.raises(ValueError):
        buf.sample(1, version=10, gen=torch.Generator())
    w = truncated_importance_weights(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[math.log(2.0), 0.0, -5.0]]),
                                     torch.tensor([[1.0, 1.0, 0.0]]), cap=1.5)
    assert w[0].tolist() == pytest.approx([0.5, 1.0, 0.0])

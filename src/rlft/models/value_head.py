"""A scalar value head for actor-critic methods: V(s_t) from the trunk's last hidden state."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """Linear map from the last hidden state to one value per position.

    Initialised to zero so the first advantages are the plain (discounted) returns, not noise.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T)."""
        return self.proj(hidden_states.float()).squeeze(-1)

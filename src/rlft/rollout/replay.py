"""A replay buffer of whole episodes for off-policy sample reuse.

Each entry remembers the policy version that generated it. Staleness is bounded: an entry more
than ``max_staleness`` versions older than the current policy is evicted and never sampled. When
stale data trains the policy, the importance ratio pi_now / pi_behaviour is truncated at
``ratio_cap`` (Espeholt et al., 2018, IMPALA/V-trace, eq. 1: rho_bar), which bounds the variance
that reusing off-policy samples adds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ReplayEntry:
    """One episode: its row of a rollout (any object with ``select``) and the version that made it."""

    item: Any
    version: int


class ReplayBuffer:
    """Bounded FIFO of episodes with bounded staleness."""

    def __init__(self, capacity: int, max_staleness: int) -> None:
        if capacity < 1 or max_staleness < 0:
            raise ValueError(f"capacity must be >= 1 and max_staleness >= 0, got {capacity}, {max_staleness}")
        self.capacity, self.max_staleness = capacity, max_staleness
        self.entries: deque[ReplayEntry] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, items: list[Any], version: int) -> None:
        self.entries.extend(ReplayEntry(item, version) for item in items)

    def evict_stale(self, version: int) -> int:
        """Drop entries older than ``version - max_staleness``; returns how many were dropped."""
        before = len(self.entries)
        self.entries = deque((e for e in self.entries if version - e.version <= self.max_staleness),
                             maxlen=self.capacity)
        return before - len(self.entries)

    def sample(self, n: int, version: int, gen: torch.Generator) -> list[ReplayEntry]:
        """``n`` entries drawn uniformly with replacement among those fresh enough for ``version``."""
        self.evict_stale(version)
        if not self.entries:
            raise ValueError("the replay buffer holds no entry fresh enough to sample")
        idx = torch.randint(0, len(self.entries), (n,), generator=gen).tolist()
        return [self.entries[i] for i in idx]

"""ArCHer's utterance-level maths against hand-computed values, a naive reference and a
metamorphic check (values read off turn starts change nothing)."""

from __future__ import annotations

import pytest
import torch

from rlft.algorithms.utterance import (
    spread_over_turns,
    turn_ends,
    turn_rewards_at_starts,
    turn_starts,
    utterance_td,
)

# One episode, two agent turns: turn 0 on tokens 0-1, an environment reply on token 2, turn 1 on
# tokens 3-4, then padding. Each turn's reward sits on its last token.
TURN_INDEX = torch.tensor([[0, 0, -1, 1, 1, -1, -1]])
TOKEN_REWARDS = torch.tensor([[0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0]])
VALUES = torch.tensor([[1.0, 9.0, 9.0, 3.0, 9.0, 9.0, 9.0]])  # V(s_0) = 1, V(s_1) = 3
TARGET_VALUES = torch.tensor([[4.0, 9.0, 9.0, 5.0, 9.0, 9.0, 9.0]])  # V_target(s_0) = 4, V_target(s_1) = 5


def test_turn_starts_ends_and_rewards_by_hand():
    assert turn_starts(TURN_INDEX).tolist() == [[1, 0, 0, 1, 0, 0, 0]]
    assert turn_ends(TURN_INDEX).tolist() == [[0, 1, 0, 0, 1, 0, 0]]
    assert turn_rewards_at_starts(TOKEN_REWARDS, TURN_INDEX).tolist() == [[0.5, 0, 0, 1.0, 0, 0, 0]]
    # A one-token turn starts and ends on the same token.
    assert turn_starts(torch.tensor([[0, -1, 1]])).tolist() == turn_ends(torch.tensor([[0, -1, 1]])).tolist()


def test_utterance_td_by_hand():
    targets, advantages, starts = utterance_td(VALUES, TARGET_VALUES, TOKEN_REWARDS, TURN_INDEX, gamma=0.5)
    # y_0 = r_0 + gamma * V_target(s_1) = 0.5 + 0.5 * 5 = 3; y_1 = r_1 = 1 (last turn).
    assert targets.tolist() == [[3.0, 0, 0, 1.0, 0, 0, 0]]
    # A_0 = 0.5 + 0.5 * V(s_1) - V(s_0) = 0.5 + 1.5 - 1 = 1; A_1 = 1 - 3 = -2.
    assert advantages.tolist() == [[1.0, 0, 0, -2.0, 0, 0, 0]]
    assert starts.tolist() == turn_starts(TURN_INDEX).tolist()
    assert spread_over_turns(advantages, TURN_INDEX).tolist() == [[1.0, 1.0, 0, -2.0, -2.0, 0, 0]]


def test_values_off_turn_starts_change_nothing():
    """V is read at turn starts only: values on other tokens (inside a turn, on the environment's
    reply, on padding) must not move a target or an advantage."""
    noisy = torch.where(turn_starts(TURN_INDEX).bool(), VALUES, torch.randn(VALUES.shape) * 100)
    for a, b in zip(utterance_td(VALUES, TARGET_VALUES, TOKEN_REWARDS, TURN_INDEX, 0.9),
                    utterance_td(noisy, TARGET_VALUES, TOKEN_REWARDS, TURN_INDEX, 0.9), strict=True):
        assert torch.equal(a, b)


def test_values_are_constants_of_the_targets():
    values = VALUES.clone().requires_grad_(True)
    targets, advantages, _ = utterance_td(values, values, TOKEN_REWARDS, TURN_INDEX, 0.9)
    assert not targets.requires_grad and not advantages.requires_grad


def _naive_spread(per_turn: torch.Tensor, turn_index: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(per_turn)
    for i in range(per_turn.shape[0]):
        first: dict[int, float] = {}
        for t, k in enumerate(turn_index[i].tolist()):
            if k >= 0 and k not in first:
                first[k] = float(per_turn[i, t])
            out[i, t] = first[k] if k >= 0 else 0.0
    return out


@pytest.mark.parametrize("seed", range(5))
def test_spread_and_rewards_match_a_naive_walk(seed):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(3):  # random turn lengths and environment replies between them
        row: list[int] = []
        for k in range(int(torch.randint(1, 4, (1,), generator=gen))):
            row += [k] * int(torch.randint(1, 4, (1,), generator=gen))
            row += [-1] * int(torch.randint(0, 3, (1,), generator=gen))
        rows.append(row)
    width = max(len(r) for r in rows)
    turn_index = torch.tensor([r + [-1] * (width - len(r)) for r in rows])
    per_token = torch.randn(turn_index.shape, generator=gen)
    assert torch.equal(spread_over_turns(per_token, turn_index), _naive_spread(per_token, turn_index))
    rewards = per_token * turn_ends(turn_index)
    moved = turn_rewards_at_starts(rewards, turn_index)
    assert torch.equal(moved.sum(-1), rewards.sum(-1)) and torch.equal(moved * turn_starts(turn_index), moved)

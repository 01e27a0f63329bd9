"""Utterance-level temporal differences for a hierarchical actor-critic (ArCHer; Zhou et al.,
2024, "ArCHer: Training Language Model Agents via Hierarchical Multi-Turn RL", arXiv:2402.19446),
as pure tensor functions.

In a multi-turn rollout the high-level step is an agent *turn* (an utterance), not a token. The
state s_k is the dialogue before agent turn k; V(s_k) is read at the first token of the turn, and
the turn's reward r_k sits on its last token. ``turn_index`` (B, T) holds k on the tokens of
agent turn k and -1 on environment tokens and padding (``rlft.rollout.multiturn``); everything
here is derived from it, so the functions never see a rollout object.

Shapes: B episodes, T tokens after the first observation.
"""

from __future__ import annotations

import torch

from rlft.algorithms.q_learning import next_counted_values


def turn_starts(turn_index: torch.Tensor) -> torch.Tensor:
    """(B, T) long -> (B, T) float: 1.0 on the first token of each agent turn (where V(s_k) is read)."""
    prev = torch.cat([torch.full_like(turn_index[:, :1], -1), turn_index[:, :-1]], 1)
    return ((turn_index >= 0) & (turn_index != prev)).float()


def turn_ends(turn_index: torch.Tensor) -> torch.Tensor:
    """(B, T) long -> (B, T) float: 1.0 on the last token of each agent turn (where its reward sits)."""
    nxt = torch.cat([turn_index[:, 1:], torch.full_like(turn_index[:, :1], -1)], 1)
    return ((turn_index >= 0) & (turn_index != nxt)).float()


def turn_rewards_at_starts(token_rewards: torch.Tensor, turn_index: torch.Tensor) -> torch.Tensor:
    """(B, T): each agent turn's reward r_k, moved from its last token to its first token.

    token_rewards: (B, T), each turn's reward on the last token of the turn; turn_index: (B, T).
    """
    starts, ends = turn_starts(turn_index).bool(), turn_ends(turn_index).bool()
    out = torch.zeros_like(token_rewards)
    for i in range(out.shape[0]):  # few turns per row: a plain loop is clearest
        out[i, starts[i]] = token_rewards[i, ends[i]]
    return out


def utterance_td(
    values: torch.Tensor, target_values: torch.Tensor, token_rewards: torch.Tensor, turn_index: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-step TD on turns (Zhou et al., 2024, eq. 2-3, with V in place of Q):

        y_k = r_k + gamma * V_target(s_{k+1})            (critic target; 0 after the last turn)
        A_k = r_k + gamma * V(s_{k+1}) - V(s_k)          (the actor's utterance advantage)

    values, target_values: (B, T) V(s_t) of the critic and of its target copy; token_rewards,
    turn_index: (B, T) as in the module docstring. Returns (targets, advantages, starts), each
    (B, T) and non-zero only on the first token of each turn. Both value inputs are treated as
    constants. The "counted" steps of :func:`next_counted_values` are the turn starts, so it
    gives V(s_{k+1}) of the next turn.
    """
    starts = turn_starts(turn_index)
    rewards = turn_rewards_at_starts(token_rewards, turn_index)
    targets = (rewards + gamma * next_counted_values(target_values.detach(), starts)) * starts
    advantages = (rewards + gamma * next_counted_values(values.detach(), starts) - values.detach()) * starts
    return targets, advantages, starts


def spread_over_turns(per_turn: torch.Tensor, turn_index: torch.Tensor) -> torch.Tensor:
    """(B, T) values on turn starts -> the same value on every token of that turn (0 elsewhere).

    The naive equivalent: for each token t with turn_index k >= 0, take per_turn at the first
    token of turn k.
    """
    starts = turn_starts(turn_index).bool()
    out = torch.zeros_like(per_turn)
    for i in range(out.shape[0]):
        turn = turn_index[i]
        per_k = per_turn[i, starts[i]]  # (K,)
        out[i, turn >= 0] = per_k[turn[turn >= 0]]
    return out

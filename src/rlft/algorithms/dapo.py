"""DAPO's batch shaping (Yu et al., 2025, "DAPO: An Open-Source LLM Reinforcement Learning System
at Scale", sec. 3.2 and 3.4): which groups carry a learning signal, and the soft overlong penalty.

Dynamic sampling (sec. 3.2): with group-normalised advantages a group whose G rewards are all equal
(all solved, or none) has zero advantage on every token, so it only dilutes the batch; DAPO drops
such groups and samples more prompts until the batch is full. Overlong shaping (sec. 3.4, eq. 13)
lowers the reward of completions that run into the length limit, softly over the last
``buffer`` tokens, instead of a hard cut that punishes sound reasoning that was merely long.
"""

from __future__ import annotations

import torch


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) rewards of consecutive groups of ``group_size`` -> (B // group_size,) bool: the groups
    whose rewards are not all equal (their advantages are not all zero)."""
    grouped = rewards.view(-1, group_size)
    return (grouped != grouped[:, :1]).any(-1)


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO eq. 13, scaled by ``penalty``: the reward added to completions of ``lengths`` tokens.

        0                                      if |y| <= L_max - L_cache
        penalty * ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
        -penalty                               if |y| > L_max

    with L_max = ``max_len`` and L_cache = ``buffer`` (0 turns the penalty off).
    """
    lengths = lengths.float()
    if buffer <= 0:
        return torch.zeros_like(lengths)
    soft_start = max_len - buffer
    ramp = (soft_start - lengths) / buffer
    return penalty * torch.where(lengths <= soft_start, 0.0, torch.where(lengths <= max_len, ramp, -1.0))


def overlong_buffer_of(tokens: int, fraction: float, max_len: int) -> int:
    """The buffer L_cache: ``tokens`` when set, else ``fraction`` of ``max_len`` (rounded down)."""
    return tokens or int(fraction * max_len)


def truncated(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_id: int, max_len: int) -> torch.Tensor:
    """(B,) bool: completions that reached ``max_len`` tokens without emitting EOS (cut off)."""
    lengths = completion_mask.sum(-1).long()
    last = completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
    return (lengths >= max_len) & (last != eos_token_id)

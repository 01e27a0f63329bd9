"""Logged episodes on disk: JSONL, one episode per line, and back to a rollout for offline training.

A record is ``{"segments": [obs, action, obs, ...], "rewards": [one per agent turn], "success":
bool}``: the text of each turn as played (:class:`rlft.rollout.multiturn.Episode`), not its
tokens. :func:`episodes_to_rollout` re-tokenises it exactly as :func:`rollout_episodes` builds a
rollout (each segment on its own, each action followed by EOS), so an offline trainer (ILQL) sees
the same layout as an online one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlft.common import strict_json
from rlft.common.run_folder import write_text_atomic
from rlft.errors import RlftError
from rlft.rollout.multiturn import Episode, MultiTurnRollout, encode_demonstration


def write_episodes(path: str | Path, episodes: Sequence[Episode]) -> None:
    """Write ``episodes`` as JSONL, atomically (a crash leaves the old file or the whole new one)."""
    lines = [strict_json.dumps({"segments": e.segments, "rewards": e.rewards, "success": e.success}, str(path)) + "\n" for e in episodes]
    write_text_atomic(Path(path), "".join(lines))


def read_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Logged episodes, with an error naming the file and line of a malformed record."""
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            segments, rewards = rec["segments"], [float(r) for r in rec["rewards"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RlftError(f"{path}:{n}: not an episode record ({exc}); expected "
                            '{"segments": [...], "rewards": [...]}') from None
        if len(rewards) != len(segments) // 2:
            raise RlftError(f"{path}:{n}: {len(segments) // 2} agent turns but {len(rewards)} rewards")
        records.append({"segments": segments, "rewards": rewards})
    if not records:
        raise RlftError(f"{path} holds no episodes.")
    return records


def episodes_to_rollout(tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]]) -> MultiTurnRollout:
    """Logged episodes as a :class:`MultiTurnRollout` (tokenised as the rollout would have been),
    each turn's reward on the EOS that ends it."""
    rows = []
    for rec in records:
        segs = rec["segments"]
        prompt, _ = encode_demonstration(tokenizer, segs[:1])
        ids, agent = encode_demonstration(tokenizer, segs)
        ids, agent = ids[len(prompt):], agent[len(prompt):]
        rewards, turn, k, turns = [0.0] * len(ids), [-1] * len(ids), -1, rec["rewards"]
        for t, a in enumerate(agent):
            if a and (t == 0 or not agent[t - 1]):
                k += 1
            if a:
                turn[t] = k
                if t + 1 == len(agent) or not agent[t + 1]:
                    rewards[t] = turns[k] if k < len(turns) else 0.0
        rows.append((prompt, ids, agent, rewards, turn))
    P = max(len(r[0]) for r in rows)
    T = max(1, max(len(r[1]) for r in rows))
    pad = tokenizer.pad_token_id
    out = MultiTurnRollout(
        torch.full((len(rows), P), pad), torch.zeros(len(rows), P, dtype=torch.long),
        torch.full((len(rows), T), pad), torch.zeros(len(rows), T), torch.zeros(len(rows), T),
        torch.zeros(len(rows), T), torch.zeros(len(rows), T), torch.full((len(rows), T), -1),
    )
    for i, (prompt, ids, agent, rewards, turn) in enumerate(rows):
        out.prompt_ids[i, P - len(prompt):] = torch.tensor(prompt)
        out.prompt_mask[i, P - len(prompt):] = 1
        n = len(ids)
        out.completion_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        out.completion_mask[i, :n] = torch.tensor(agent, dtype=torch.float32)
        out.completion_attention[i, :n] = 1.0
        out.token_rewards[i, :n] = torch.tensor(rewards)
        out.turn_index[i, :n] = torch.tensor(turn)
    return out

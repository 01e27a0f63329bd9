"""Logged episodes on disk (rlft.rollout.episodes): JSONL round trip, re-tokenised into the same
layout and rewards as the played rollout, and errors that name the file and line."""

from __future__ import annotations

import copy

import pytest
import torch

from rlft.envs import GuessNumberFamily
from rlft.errors import RlftError
from rlft.models.loading import load_policy
from rlft.rollout.episodes import episodes_to_rollout, read_episodes, write_episodes
from rlft.rollout.multiturn import rollout_episodes


def test_logged_episodes_read_back_to_the_rollout_they_were_played_as(tiny_model_dir, tmp_path):
    model, tok = load_policy(str(tiny_model_dir))
    family = GuessNumberFamily(high=9, max_turns=3)
    envs = [copy.deepcopy(e) for e in family.train_envs(6, torch.Generator().manual_seed(0))]
    rollout, episodes = rollout_episodes(model, tok, envs, max_turns=3, max_turn_tokens=6, max_total_tokens=48,
                                         generator=torch.Generator().manual_seed(0))
    write_episodes(tmp_path / "e.jsonl", episodes)
    records = read_episodes(tmp_path / "e.jsonl")
    assert [r["segments"] for r in records] == [e.segments for e in episodes]
    assert [r["rewards"] for r in records] == [e.rewards for e in episodes]
    logged = episodes_to_rollout(tok, records)  # logged text is re-tokenised: same rewards per episode
    assert torch.allclose(logged.token_rewards.sum(-1), rollout.token_rewards.sum(-1))
    assert torch.equal(logged.turn_index >= 0, logged.completion_mask.bool())  # agent tokens carry a turn
    assert torch.equal((logged.token_rewards != 0), (logged.token_rewards != 0) & logged.turn_ends().bool())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"segments": ["hi", "is it 3?"]}', r"e.jsonl:2: not an episode record"),
        ('{"segments": ["hi", "is it 3?"], "rewards": [1, 2]}', r"e.jsonl:2: 1 agent turns but 2 rewards"),
        ("{oops", r"e.jsonl:2: not an episode record"),
    ],
)
def test_a_malformed_record_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "e.jsonl"
    path.write_text('{"segments": ["hi", "is it 3?"], "rewards": [1.0]}\n' + line + "\n")
    with pytest.raises(RlftError, match=message):
        read_episodes(path)
    path.write_text("\n")
    with pytest.raises(RlftError, match="holds no episodes"):
        read_episodes(path)

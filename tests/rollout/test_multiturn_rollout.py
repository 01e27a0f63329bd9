"""Multi-turn rollouts: exact round trip, masking of environment tokens, exact log-probs."""

from __future__ import annotations

import copy

import pytest
import torch

from rlft.envs import CalculatorEnv, GuessNumberFamily
from rlft.rollout.multiturn import MultiTurnRollout, encode_demonstration, rollout_episodes
from rlft.rollout.sampling import score_completions


@pytest.fixture(scope="module")
def policy(tiny_model_dir):  # noqa: ANN001, ANN201
    from rlft.models.loading import load_policy

    torch.manual_seed(0)
    return load_policy(str(tiny_model_dir))


def test_tool_call_round_trips_exactly(policy) -> None:  # noqa: ANN001
    """Token ids of a tool-use episode decode to exactly the transcript, EOS after each turn."""
    model, tok = policy
    env = CalculatorEnv(12, 34)
    segments = [env.reset().text, "CALC(12*34)", env.step("CALC(12*34)").observation.text, "ANSWER 408"]
    ids, agent = encode_demonstration(tok, segments)
    eos = tok.eos_token
    transcript = segments[0] + segments[1] + eos + segments[2] + segments[3] + eos
    assert tok.decode(ids, skip_special_tokens=False) == transcript
    assert sum(agent) == len(tok("CALC(12*34)").input_ids) + len(tok("ANSWER 408").input_ids) + 2

    # Sampled episode: the rollout's tokens decode to its segments joined with EOS after actions.
    envs = [CalculatorEnv(12, 34), CalculatorEnv(5, 7)]
    rollout, episodes = rollout_episodes(model, tok, envs, max_turns=3, max_turn_tokens=6, max_total_tokens=64,
                                         generator=torch.Generator().manual_seed(0))
    for i, ep in enumerate(episodes):
        n = int(rollout.completion_attention[i].sum())
        text = tok.decode(rollout.completion_ids[i, :n].tolist(), skip_special_tokens=False)
        assert text.replace(eos, "") == "".join(ep.segments[1:])
        assert text.count(eos) <= len(ep.rewards)


def _episode_rollout(policy):  # noqa: ANN001, ANN202
    model, tok = policy
    fam = GuessNumberFamily(high=9, max_turns=3)
    envs = [copy.deepcopy(e) for e in fam.train_envs(4, torch.Generator().manual_seed(1))]
    return rollout_episodes(model, tok, envs, max_turns=3, max_turn_tokens=6, max_total_tokens=48,
                            generator=torch.Generator().manual_seed(0))


def test_rollout_layout_and_recorded_logprobs_match(policy) -> None:  # noqa: ANN001
    model, _ = policy
    rollout, episodes = _episode_rollout(policy)
    assert isinstance(rollout, MultiTurnRollout)
    env_tokens = (rollout.completion_attention == 1) & (rollout.completion_mask == 0)
    assert env_tokens.any(), "expected environment tokens between agent turns"
    assert torch.allclose(rollout.token_rewards.sum(-1), torch.tensor([e.total_reward for e in episodes]))
    assert (rollout.token_rewards * (1 - rollout.turn_ends())).abs().sum() == 0  # rewards on turn ends only
    with torch.no_grad():
        logprobs, _, _ = score_completions(model, rollout, 1.0)
    assert torch.allclose(logprobs, rollout.logprobs, atol=1e-4)


def test_episode_info_metrics_are_per_episode_sums_averaged():
    from rlft.rollout.multiturn import Episode, episode_info_metrics

    one = Episode(infos=[{"metrics": {"tool/calls_per_episode": 1.0, "tool/errors": 1.0}},
                         {"metrics": {"tool/calls_per_episode": 1.0, "tool/errors": 0.0}}, {"success": True}])
    two = Episode(infos=[{"metrics": {"tool/calls_per_episode": 0.0, "tool/errors": 0.0}}])
    assert episode_info_metrics([one, two, Episode()]) == {"tool/calls_per_episode": 2 / 3, "tool/errors": 1 / 3}
    assert episode_info_metrics([]) == {}

"""Multi-turn rollouts: exact round trip, masking of environment tokens, exact log-probs, and a
few steps of each multi-turn trainer on the tiny model."""

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


@pytest.fixture(scope="module")
def warm_policy(policy):  # noqa: ANN001, ANN201
    """A copy briefly warm-started on scripted dialogues, so that episode rewards differ."""
    from rlft.trainers.agent import warm_start_agent

    model, tok = policy
    model = copy.deepcopy(model)
    warm_start_agent(model, tok, GuessNumberFamily(high=9, max_turns=3), 20, 16, 3e-3, 0)
    return model, tok


def _changed(before, model) -> float:  # noqa: ANN001
    return sum((a - b).abs().sum().item() for a, b in zip(before, model.parameters(), strict=True))


def _agent_config(**extra):  # noqa: ANN003, ANN202
    from rlft.config.agent import agent_config_from_dict

    data = {"episodes": 16, "episodes_per_iteration": 8, "group_size": 4, "eval_samples": 1,
            "episode": {"max_turn_tokens": 6, "max_total_tokens": 48}}
    data.update(extra)
    return agent_config_from_dict(data)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_policy_gradient_over_episodes_changes_parameters(warm_policy, algorithm) -> None:  # noqa: ANN001
    from rlft.trainers.agent import make_family, train_policy_gradient

    model, tok = warm_policy
    model = copy.deepcopy(model)
    config = _agent_config(algorithm=algorithm)
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    train_policy_gradient(config, model, tok, make_family(config), seen.append)
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor(m["loss/total"])) for m in seen)
    if algorithm == "ppo":  # grpo may see groups of equal rewards (zero advantage) on so weak a policy
        assert _changed(before, model) > 0


def test_ilql_few_steps(policy) -> None:  # noqa: ANN001
    from rlft.trainers.agent import make_family, play
    from rlft.trainers.ilql import (
        ILQLPolicy,
        episodes_to_rollout,
        read_episodes,
        train_ilql,
        write_episodes,
    )

    model, tok = policy
    model = copy.deepcopy(model)
    config = _agent_config(algorithm="ilql", ilql={"epochs": 2, "batch_size": 4})
    fam = make_family(config)
    envs = [copy.deepcopy(e) for e in fam.train_envs(8, torch.Generator().manual_seed(0))]
    rollout, episodes = play(model, tok, envs, config, torch.Generator().manual_seed(0))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_episodes(Path(tmp) / "e.jsonl", episodes)
        records = read_episodes(Path(tmp) / "e.jsonl")
    logged = episodes_to_rollout(tok, records)  # logged text is re-tokenised: same rewards per episode
    assert torch.allclose(logged.token_rewards.sum(-1), rollout.token_rewards.sum(-1))
    before = [p.detach().clone() for p in model.parameters()]
    steps = []
    heads = train_ilql(model, tok, records, config.ilql, 0, steps.append)
    assert len(steps) == 4 and all(torch.isfinite(torch.tensor(s["loss/total"])) for s in steps)
    assert _changed(before, model) > 0 and heads.q.weight.abs().sum() > 0
    play(ILQLPolicy(model, heads, 1.0), tok, envs[:2], config, torch.Generator().manual_seed(0))


def test_archer_few_steps(warm_policy) -> None:  # noqa: ANN001
    from rlft.trainers.agent import make_family
    from rlft.trainers.archer import train_archer

    model, tok = warm_policy
    model = copy.deepcopy(model)
    config = _agent_config(algorithm="archer", archer={"critic_steps": 2, "critic_batch_size": 4,
                                                       "warmup_iterations": 0, "replay_actor_episodes": 4})
    before = [p.detach().clone() for p in model.parameters()]
    seen = []
    critic = train_archer(config, model, tok, make_family(config), seen.append)
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor([m["loss/critic"], m["loss/actor"]])).all() for m in seen)
    assert _changed(before, model) > 0 and critic.head.proj.weight.abs().sum() > 0

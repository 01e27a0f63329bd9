"""Environments: protocol, splits, scripted demonstrations, error handling in rollouts."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rlft.envs import (
    ArithmeticEnvFamily,
    CalculatorEnv,
    CalculatorFamily,
    Env,
    EnvError,
    GuessNumberEnv,
    GuessNumberFamily,
    Observation,
    StepResult,
    as_async,
)


def test_guess_rewards_by_hand() -> None:
    env = GuessNumberEnv(target=7, persona=0, high=9, max_turns=3)
    assert isinstance(env, Env)
    assert "1 to 9" in env.reset().text
    r = env.step("is it 5?")  # informative: -0.05 + 0.05
    assert (r.reward, r.done, r.observation.text) == (pytest.approx(0.0), False, "Higher.\n")
    r = env.step("is it 2?")  # already excluded: -0.05 - 0.05
    assert r.reward == pytest.approx(-0.1) and not r.done
    r = env.step("is it 7?")
    assert r.done and r.info["success"] and r.reward == pytest.approx(1.0)


def test_guess_runs_out_of_turns_and_splits_are_disjoint() -> None:
    env = GuessNumberEnv(target=3, persona=1, high=9, max_turns=2)
    env.reset()
    assert env.step("hello").observation.text == "huh?\n"
    last = env.step("is it 9?")
    assert last.done and not last.info["success"]
    fam = GuessNumberFamily(high=9, max_turns=3)
    assert not set(fam.eval_pairs) & set(fam.train_pairs)
    drawn = {(e.target, e.persona) for e in fam.train_envs(200, torch.Generator().manual_seed(0))}
    assert drawn <= set(fam.train_pairs)


def test_demonstrations_succeed() -> None:
    gen = torch.Generator().manual_seed(0)
    for fam in (GuessNumberFamily(high=9, max_turns=3), CalculatorFamily(), ArithmeticEnvFamily()):
        for env in fam.train_envs(5, gen):
            segments = fam.demonstration(env, gen)
            env.reset()
            result = None
            for action in segments[1::2]:
                result = env.step(action)
            assert result is not None and result.done and result.info["success"]


def test_calculator_tool_call() -> None:
    env = CalculatorEnv(12, 34)
    assert env.reset().text == "What is 12*34?\n"
    r = env.step("CALC(12*34)")
    assert r.observation.text == "= 408\n" and r.reward == 0.0 and not r.done
    r = env.step("ANSWER 408")
    assert r.done and r.reward == 1.0


def test_as_async_wraps_sync_env() -> None:
    env = GuessNumberEnv(4, 0)
    wrapped = as_async(env)
    assert asyncio.run(wrapped.step("is it 4?")).done
    assert as_async(wrapped) is wrapped


class _Broken:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def reset(self) -> Observation:
        return Observation("Guess my number, 1 to 9.\n")

    def step(self, action_text: str) -> StepResult:
        if self.mode == "raise":
            raise RuntimeError("tool server down")
        if self.mode == "malformed":
            return ("oops", 1.0, True)  # type: ignore[return-value]
        return StepResult(Observation("more\n"), 0.0, False)  # never ends


def test_env_failures_are_caught_and_reported(tiny_model_dir) -> None:  # noqa: ANN001
    from rlft.models.loading import load_policy
    from rlft.rollout.multiturn import rollout_episodes

    model, tok = load_policy(str(tiny_model_dir))
    envs = [_Broken("raise"), _Broken("malformed"), _Broken("endless"), GuessNumberEnv(3, 0)]
    kw = dict(max_turns=3, max_turn_tokens=4, max_total_tokens=40, generator=torch.Generator().manual_seed(0))
    rollout, episodes = rollout_episodes(model, tok, envs, **kw)
    assert "episode 0, turn 0" in episodes[0].error and "tool server down" in episodes[0].error
    assert "episode 1" in episodes[1].error and "StepResult" in episodes[1].error
    assert episodes[2].error is None and episodes[2].truncated and len(episodes[2].rewards) == 3
    assert rollout.completion_mask[:2].sum() == 0  # failed episodes never reach a loss
    with pytest.raises(EnvError, match="episode 0, turn 0"):
        rollout_episodes(model, tok, envs, on_env_error="raise", **kw)

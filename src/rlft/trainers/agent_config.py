"""The typed recipe of multi-turn agent training (``rlft agent RECIPE.yaml``).

A separate, small frozen config rather than more sections of :class:`rlft.config.RecipeConfig`:
the multi-turn methods share the tiny model, warm-start and algorithm presets of the main recipe,
but add environments, episode caps, ILQL and ArCHer settings the single-turn loop never reads.
Validation reuses ``rlft.config``: unknown keys name the nearest valid one, ranges are checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlft.config import (
    PPO_LEARNING_RATE,
    TinyModelConfig,
    WarmStartConfig,
    _build,
    _deepcopy,
    _f,
    _set_dotted,
    parse_overrides,
    read_recipe_yaml,
)
from rlft.errors import ConfigError


@dataclass(frozen=True)
class EnvConfig:
    """The environment family and its split."""

    name: Literal["guess", "calculator"] = _f("guess", "Which environment family (rlft.envs.ENV_FAMILIES).")
    high: int = _f(9, "guess: the hidden number lies in 1..high.", ge=2)
    max_turns: int = _f(3, "Agent turns before the episode is cut.", ge=1)
    seed: int = _f(1234, "Seed of the train / held-out split.")


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are played."""

    max_turn_tokens: int = _f(8, "Longest agent turn, in tokens (an agent turn ends at EOS).", ge=1)
    max_total_tokens: int = _f(96, "Cap on all tokens after the first observation (agent + environment).", ge=1)
    temperature: float = _f(1.0, "Sampling temperature of the agent.", gt=0)
    on_env_error: Literal["skip", "raise"] = _f(
        "skip", "An environment that raises or returns a malformed step: end and mask that episode, or stop."
    )


@dataclass(frozen=True)
class ILQLConfig:
    """Implicit language Q-learning (Snell et al., 2022), offline."""

    data: str | None = _f(None, "JSONL of logged episodes. Empty: log `episodes` episodes of the warm-started base.")
    epochs: int = _f(6, "Passes over the logged episodes.", ge=1)
    batch_size: int = _f(32, "Episodes per optimiser step.", ge=1)
    gamma: float = _f(0.99, "Discount per agent token.", ge=0, le=1)
    tau: float = _f(0.7, "Expectile of the V loss.", gt=0, lt=1)
    cql_weight: float = _f(0.1, "Weight of the conservative (CQL) term.", ge=0)
    awac_beta: float = _f(1.0, "Temperature of the AWAC weights exp(beta * (Q - V)) on the LM loss; 0: plain NLL.", ge=0)
    awac_max_weight: float = _f(10.0, "Clip of the AWAC weights.", gt=0)
    polyak_alpha: float = _f(0.9, "Target Q = alpha * target + (1 - alpha) * Q after each step.", ge=0, lt=1)
    decode_beta: float = _f(
        8.0,
        "Decoding perturbation: logits + decode_beta * (Q - V). 8 was best of 0-16 on training episodes "
        "of the guess benchmark (docs/multiturn.md).",
        ge=0,
    )
    learning_rate: float = _f(3e-4, "AdamW learning rate.", gt=0)


@dataclass(frozen=True)
class ArcherConfig:
    """Hierarchical actor-critic in the spirit of ArCHer (Zhou et al., 2024)."""

    gamma: float = _f(0.95, "Discount per agent turn (utterance level).", ge=0, le=1)
    critic_steps: int = _f(8, "Critic TD steps on replay samples per iteration.", ge=1)
    critic_batch_size: int = _f(32, "Episodes per critic step.", ge=1)
    critic_learning_rate: float = _f(3e-4, "AdamW learning rate of the critic.", gt=0)
    actor_epochs: int = _f(1, "Passes of the actor over each fresh batch.", ge=1)
    replay_actor_episodes: int = _f(0, "Replayed (off-policy) episodes added to each actor update.", ge=0)
    buffer_capacity: int = _f(1024, "Episodes kept in the replay buffer.", ge=1)
    max_staleness: int = _f(8, "Drop episodes generated more than this many policy versions ago.", ge=0)
    ratio_cap: float = _f(1.0, "Truncation of the importance ratio pi/mu on replayed tokens.", gt=0)
    polyak_alpha: float = _f(0.9, "Target critic = alpha * target + (1 - alpha) * critic.", ge=0, lt=1)
    warmup_iterations: int = _f(2, "Iterations of critic-only training before the actor moves.", ge=0)


@dataclass(frozen=True)
class AgentConfig:
    """A multi-turn agent recipe."""

    seed: int = _f(0, "Seed of sampling and initialisation.")
    run_dir: str = _f("runs/agent", "Folder of this run.")
    algorithm: Literal["grpo", "ppo", "ilql", "archer"] = _f(
        "grpo", "grpo / ppo (the main loop's presets over whole dialogues), ilql (offline), archer."
    )
    model: TinyModelConfig = _f(
        TinyModelConfig(hidden_size=96, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
        "Shape of the tiny offline model.",
    )
    env: EnvConfig = _f(EnvConfig(), "Environment.")
    episode: EpisodeConfig = _f(EpisodeConfig(), "Episode caps and sampling.")
    warm_start: WarmStartConfig = _f(
        WarmStartConfig(steps=800, batch_size=32, learning_rate=2e-3),
        "Supervised stage on scripted successful episodes (800 steps: the base tracks the range the answers leave open).",
    )
    episodes: int = _f(3072, "Environment episodes of RL (the budget every method gets).", ge=1)
    episodes_per_iteration: int = _f(32, "Episodes per iteration (grpo, ppo, archer).", ge=1)
    group_size: int = _f(4, "grpo: episodes per training episode spec (same hidden item).", ge=1)
    learning_rate: float | None = _f(
        None, "AdamW learning rate of the policy (grpo, ppo, archer). Empty: 3e-5 for ppo (16 optimiser steps per "
        "batch), 5e-4 for grpo and archer.", gt=0
    )
    eval_samples: int = _f(32, "Sampled episodes per held-out episode spec in evaluation.", ge=1)
    eval_every: int = _f(16, "Evaluate every this many iterations.", ge=1)
    torch_threads: int = _f(0, "torch.set_num_threads; 0 leaves the default.", ge=0)
    ilql: ILQLConfig = _f(ILQLConfig(), "ILQL settings.")
    archer: ArcherConfig = _f(ArcherConfig(), "ArCHer settings.")


def policy_learning_rate(config: AgentConfig) -> float:
    """The recipe's learning rate, or the method's default: PPO takes 16 optimiser steps per batch
    (4 epochs x 4 mini-batches), so it gets a smaller one."""
    return config.learning_rate or (PPO_LEARNING_RATE if config.algorithm == "ppo" else 5e-4)


def agent_config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> AgentConfig:
    data = _deepcopy(data)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    config = _build(AgentConfig, data)
    if config.algorithm == "grpo" and config.group_size < 2:
        raise ConfigError("algorithm 'grpo' compares episodes of the same spec: group_size must be >= 2.")
    if config.episodes_per_iteration % config.group_size:
        raise ConfigError(
            f"episodes_per_iteration={config.episodes_per_iteration} is not a multiple of group_size={config.group_size}."
        )
    return config


def load_agent_config(path: str | Path | None, overrides: list[str] | None = None) -> AgentConfig:
    if path is None:
        return agent_config_from_dict({}, overrides)
    return agent_config_from_dict(read_recipe_yaml(path), overrides)


def agent_config_to_dict(config: AgentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)

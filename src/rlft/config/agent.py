"""The typed recipe of multi-turn agent training (``rlft agent RECIPE.yaml``).

A separate, small frozen config rather than more sections of :class:`rlft.config.RecipeConfig`:
the multi-turn methods share the tiny model, warm-start and algorithm presets of the main recipe,
but add environments, episode caps, ILQL and ArCHer settings the single-turn loop never reads.
Validation is ``rlft.schema``'s: unknown keys name the nearest valid one, ranges are checked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlft.algorithms.presets import ALGORITHM_PRESETS, GROUP_ESTIMATORS
from rlft.config.sections import CheckpointConfig, WarmStartConfig
from rlft.errors import ConfigError
from rlft.models.tiny_config import TinyModelConfig
from rlft.schema import build, read_recipe_yaml, setting, with_overrides

# The default policy learning rate of each agent algorithm (grpo, ppo and archer read it; ilql has
# its own, ilql.learning_rate). grpo and ppo run the main loop's presets over whole dialogues; ppo
# takes its preset's smaller rate (4 epochs x 4 mini-batches make 16 optimiser steps per batch).
AGENT_LEARNING_RATES: dict[str, float] = {
    "grpo": 5e-4,
    "ppo": ALGORITHM_PRESETS["ppo"]["train"]["learning_rate"],
    "ilql": 5e-4,
    "archer": 5e-4,
}


@dataclass(frozen=True)
class EnvConfig:
    """The environment family and its split."""

    name: Literal["guess", "calculator"] = setting("guess", "Which environment family (rlft.envs.ENV_FAMILIES).")
    high: int = setting(9, "guess: the hidden number lies in 1..high.", ge=2)
    max_turns: int = setting(3, "Agent turns before the episode is cut.", ge=1)
    seed: int = setting(1234, "Seed of the train / held-out split.")


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are played."""

    max_turn_tokens: int = setting(8, "Longest agent turn, in tokens (an agent turn ends at EOS).", ge=1)
    max_total_tokens: int = setting(96, "Cap on all tokens after the first observation (agent + environment).", ge=1)
    temperature: float = setting(1.0, "Sampling temperature of the agent.", gt=0)
    on_env_error: Literal["skip", "raise"] = setting(
        "skip", "An environment that raises or returns a malformed step: end and mask that episode, or stop."
    )


@dataclass(frozen=True)
class ILQLConfig:
    """Implicit language Q-learning (Snell et al., 2022), offline."""

    data: str | None = setting(None, "JSONL of logged episodes. Empty: log `episodes` episodes of the warm-started base.")
    epochs: int = setting(6, "Passes over the logged episodes.", ge=1)
    batch_size: int = setting(32, "Episodes per optimiser step.", ge=1)
    gamma: float = setting(0.99, "Discount per agent token.", ge=0, le=1)
    tau: float = setting(0.7, "Expectile of the V loss.", gt=0, lt=1)
    cql_weight: float = setting(0.1, "Weight of the conservative (CQL) term.", ge=0)
    awac_beta: float = setting(1.0, "Temperature of the AWAC weights exp(beta * (Q - V)) on the LM loss; 0: plain NLL.", ge=0)
    awac_max_weight: float = setting(10.0, "Clip of the AWAC weights.", gt=0)
    polyak_alpha: float = setting(0.9, "Target Q = alpha * target + (1 - alpha) * Q after each step.", ge=0, lt=1)
    decode_beta: float = setting(
        8.0,
        "Decoding perturbation: logits + decode_beta * (Q - V). 8 was best of 0-16 on training episodes "
        "of the guess benchmark (docs/multiturn.md).",
        ge=0,
    )
    learning_rate: float = setting(3e-4, "AdamW learning rate.", gt=0)


@dataclass(frozen=True)
class ArcherConfig:
    """Hierarchical actor-critic in the spirit of ArCHer (Zhou et al., 2024)."""

    gamma: float = setting(0.95, "Discount per agent turn (utterance level).", ge=0, le=1)
    critic_steps: int = setting(8, "Critic TD steps on replay samples per iteration.", ge=1)
    critic_batch_size: int = setting(32, "Episodes per critic step.", ge=1)
    critic_learning_rate: float = setting(3e-4, "AdamW learning rate of the critic.", gt=0)
    actor_epochs: int = setting(1, "Passes of the actor over each fresh batch.", ge=1)
    replay_actor_episodes: int = setting(0, "Replayed (off-policy) episodes added to each actor update.", ge=0)
    buffer_capacity: int = setting(1024, "Episodes kept in the replay buffer.", ge=1)
    max_staleness: int = setting(8, "Drop episodes generated more than this many policy versions ago.", ge=0)
    ratio_cap: float = setting(1.0, "Truncation of the importance ratio pi/mu on replayed tokens.", gt=0)
    polyak_alpha: float = setting(0.9, "Target critic = alpha * target + (1 - alpha) * critic.", ge=0, lt=1)
    warmup_iterations: int = setting(2, "Iterations of critic-only training before the actor moves.", ge=0)


@dataclass(frozen=True)
class AgentConfig:
    """A multi-turn agent recipe."""

    seed: int = setting(0, "Seed of sampling and initialisation.")
    run_dir: str = setting("runs/agent", "Folder of this run.")
    algorithm: Literal["grpo", "ppo", "ilql", "archer"] = setting(
        "grpo", "grpo / ppo (the main loop's presets over whole dialogues), ilql (offline), archer."
    )
    model: TinyModelConfig = setting(
        TinyModelConfig(hidden_size=96, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
        "Shape of the tiny offline model.",
    )
    base_model: str | None = setting(
        None, "A warm-started agent model folder to start from as it is (e.g. an earlier run's base_model/, to "
        "compare methods from one base): no tiny model is built and no warm start is run. Empty: build and "
        "warm-start the tiny model.",
    )
    env: EnvConfig = setting(EnvConfig(), "Environment.")
    episode: EpisodeConfig = setting(EpisodeConfig(), "Episode caps and sampling.")
    warm_start: WarmStartConfig = setting(
        WarmStartConfig(steps=800, batch_size=32, learning_rate=2e-3),
        "Supervised stage on scripted successful episodes (800 steps: the base tracks the range the answers leave open).",
    )
    episodes: int = setting(3072, "Environment episodes of RL (the budget every method gets).", ge=1)
    episodes_per_iteration: int = setting(32, "Episodes per iteration (grpo, ppo, archer).", ge=1)
    group_size: int = setting(4, "grpo: episodes per training episode spec (same hidden item).", ge=1)
    learning_rate: float | None = setting(
        None, "AdamW learning rate of the policy (grpo, ppo, archer). Empty: 3e-5 for ppo (16 optimiser steps per "
        "batch), 5e-4 for grpo and archer.", gt=0
    )
    eval_samples: int = setting(32, "Sampled episodes per held-out episode spec in evaluation.", ge=1)
    eval_every: int = setting(
        16, "Evaluate every this many iterations (ilql: passes over the logged episodes), and at the end.", ge=1
    )
    checkpoint: CheckpointConfig = setting(
        CheckpointConfig(),
        "Atomic checkpoints for --resume, every this many steps (an iteration; ilql: an optimiser step).",
    )
    max_consecutive_nonfinite: int = setting(
        3, "Stop after this many steps in a row with a non-finite loss or gradient.", ge=1
    )
    torch_threads: int = setting(0, "torch.set_num_threads; 0 leaves the default.", ge=0)
    device: str = setting(
        "auto", "Where the agent trains: auto (cuda:LOCAL_RANK when CUDA is visible, else cpu), cpu, cuda or cuda:N; "
        "the warm start, the policy, reference, critics and episodes' tensors all live there.",
    )
    dropout: bool = setting(
        False, "Keep the model's dropout in training. false (the default): every dropout probability is set to 0 "
        "(the warm start, the policy and the critics), so updates compute what sampling computes.",
    )
    ilql: ILQLConfig = setting(ILQLConfig(), "ILQL settings.")
    archer: ArcherConfig = setting(ArcherConfig(), "ArCHer settings.")


def policy_learning_rate(config: AgentConfig) -> float:
    """The recipe's learning rate, or the algorithm's default (``AGENT_LEARNING_RATES``)."""
    return config.learning_rate or AGENT_LEARNING_RATES[config.algorithm]


def agent_config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> AgentConfig:
    config = build(AgentConfig, with_overrides(data, overrides))
    from rlft.models.device import check_device_spec

    check_device_spec(config.device, "device")
    # grpo and ppo are the main loop's presets; an estimator that compares episodes needs groups.
    preset = ALGORITHM_PRESETS.get(config.algorithm)
    if preset and preset["algorithm"]["advantage_estimator"] in GROUP_ESTIMATORS and config.group_size < 2:
        raise ConfigError(
            f"algorithm {config.algorithm!r} compares episodes of the same spec: group_size must be >= 2."
        )
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

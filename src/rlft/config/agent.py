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
from typing import Annotated, Any, Literal

from rlft.algorithms.presets import ALGORITHM_PRESETS
from rlft.config.recipe import RecipeConfig, config_from_dict
from rlft.config.sections import AlgorithmConfig, CheckpointConfig, WarmStartConfig
from rlft.errors import ConfigError
from rlft.models.tiny_config import TinyModelConfig
from rlft.plugins import with_plugins
from rlft.schema import (
    Registered,
    build,
    gather_settings,
    read_recipe_yaml,
    setting,
    with_overrides,
)

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

    name: Annotated[str, Registered("rlft.envs:agent_env_names")] = setting(
        "guess", "Which environment family (rlft.envs.ENV_FAMILIES; a plugin's: rlft.register_env, docs/extending.md)."
    )
    high: int = setting(9, "guess: the hidden number lies in 1..high.", ge=2)
    max_turns: int = setting(3, "Agent turns before the episode is cut.", ge=1)
    seed: int = setting(1234, "Seed of the train / held-out split.")
    settings: dict[str, Any] = setting(
        {},
        "A plugin's environment (rlft.register_env): its own settings, checked by its settings dataclass. Write "
        "them in the env section next to name (env: {name: mine, size: 3}); config.yaml records them here.",
    )


ENV_FIELDS = {f.name for f in dataclasses.fields(EnvConfig)}


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
    plugins: list[str] = setting(
        [],
        "Your own code to import before the recipe is checked (.py files or module names; --plugin adds more), "
        "e.g. an environment registered with rlft.register_env (docs/extending.md). config.yaml records them.",
    )
    policy_gradient: dict[str, Any] = setting(
        {},
        "grpo / ppo: fields of the main recipe's algorithm section over the preset's, e.g. {policy_loss: cispo, "
        "advantage_estimator: grpo, kl_coef: 0.0} (registered names, a plugin's too; docs/recipes.md). Not "
        "name or group_size (the fields algorithm and group_size above).",
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


def agent_config_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, plugins: list[str] | None = None
) -> AgentConfig:
    """Validate an agent recipe given as plain data; its plugins (and ``plugins``, from --plugin)
    are imported first."""
    data = _gather_env_settings(with_plugins(with_overrides(data, overrides), plugins or []))
    config = build(AgentConfig, data)
    config = dataclasses.replace(config, env=_with_env_settings(config.env))
    from rlft.models.device import check_device_spec

    check_device_spec(config.device, "device")
    if config.episodes_per_iteration % config.group_size:
        raise ConfigError(
            f"episodes_per_iteration={config.episodes_per_iteration} is not a multiple of group_size={config.group_size}."
        )
    _check_policy_gradient(config)
    return config


def load_agent_config(
    path: str | Path | None, overrides: list[str] | None = None, plugins: list[str] | None = None
) -> AgentConfig:
    if path is None:
        return agent_config_from_dict({}, overrides, plugins)
    return agent_config_from_dict(read_recipe_yaml(path), overrides, plugins)


def agent_rl_recipe(config: AgentConfig) -> RecipeConfig:
    """The main loop's recipe that grpo / ppo run over whole episodes: the preset, with the
    recipe's ``policy_gradient`` fields over it."""
    return config_from_dict({
        "seed": config.seed,
        "algorithm": {**config.policy_gradient, "name": config.algorithm, "group_size": config.group_size,
                      "gamma": config.policy_gradient.get("gamma", 1.0)},
        "train": {"batch_size": config.episodes_per_iteration, "learning_rate": policy_learning_rate(config)},
        "rollout": {"temperature": config.episode.temperature, "max_new_tokens": config.episode.max_total_tokens},
    })


# Fields of the main recipe's algorithm section that the episode loop does not read.
UNREAD_BY_EPISODES = {
    "dynamic_sampling", "max_sampling_rounds", "overlong_buffer", "overlong_buffer_fraction", "overlong_penalty",
    "mask_truncated", "kl_controller", "kl_target", "kl_horizon",
}


def _check_policy_gradient(config: AgentConfig) -> None:
    """grpo and ppo are the main loop's presets: their fields are checked as the main recipe's
    (errors name ``policy_gradient.KEY``); the other methods read none of them."""
    fields = config.policy_gradient
    if config.algorithm not in ALGORITHM_PRESETS:
        if fields:
            raise ConfigError(
                f"policy_gradient is set, but algorithm={config.algorithm!r} does not read it (grpo and ppo do). Remove it."
            )
        return
    for key in ("name", "group_size"):
        if key in fields:
            own = "algorithm" if key == "name" else key
            raise ConfigError(f"policy_gradient.{key} is the agent recipe's own field {own}; set that instead.")
    unread = sorted(set(fields) & UNREAD_BY_EPISODES)
    if unread:
        raise ConfigError(
            f"policy_gradient.{unread[0]} is not read over whole episodes (the agent loop has no dynamic sampling, "
            "overlong shaping or adaptive KL controller). Remove it."
        )
    build(AlgorithmConfig, fields, "policy_gradient")
    try:
        agent_rl_recipe(config)
    except ConfigError as exc:
        message = str(exc).replace("algorithm.group_size", "group_size").replace("algorithm.", "policy_gradient.")
        raise ConfigError(message) from None


def _gather_env_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A plugin's environment takes its own settings next to its name (``env: {name: mine,
    size: 3}``): the keys that are not EnvConfig's go under ``env.settings``."""
    section = data.get("env")
    if not isinstance(section, dict) or set(section) <= ENV_FIELDS:
        return data
    from rlft.envs import ENV_FAMILIES  # imports torch: only for a section with keys of its own

    name = section.get("name", EnvConfig.name)
    if name not in ENV_FAMILIES or ENV_FAMILIES.info(name).settings is None:
        return data
    return {**data, "env": gather_settings(section, ENV_FIELDS)}


def _with_env_settings(env: EnvConfig) -> EnvConfig:
    """``env.settings`` checked by the family's settings dataclass (errors name ``env.KEY``) and
    recorded with every default filled in."""
    from rlft.envs import ENV_FAMILIES  # imports torch: only when a recipe is checked

    cls = ENV_FAMILIES.info(env.name).settings
    if cls is None:
        if env.settings:
            raise ConfigError(
                f"env.settings is set, but env.name={env.name!r} has no settings of its own (a plugin's environment "
                "declares them: rlft.register_env(name, settings=...)). Remove it."
            )
        return env
    return dataclasses.replace(env, settings=dataclasses.asdict(build(cls, env.settings, "env")))


def agent_config_to_dict(config: AgentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)

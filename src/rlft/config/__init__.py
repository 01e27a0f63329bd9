"""Typed, validated recipes.

A recipe is YAML that maps onto frozen dataclasses, validated once, at load time: an unknown key
names the nearest valid one, a wrong type or an out-of-range value names the field, the value and
what is allowed (``rlft.schema``). The resolved config (every default filled in from the
algorithm's preset, ``rlft.algorithms.presets``) is written into the run folder and never mutated
afterwards. ``docs/recipes.md`` is generated from the fields (``python -m rlft.config``).

  sections.py      the sections of the main recipe (model, task, algorithm, train, ...)
  recipe.py        RecipeConfig: resolving, cross-field checks, reading and writing
  vllm.py          the rollout.vllm section (vLLM beside the learner) and its checks
  agent.py         the multi-turn agent recipe (``rlft agent``)
  reward_model.py  the reward-model recipe (``rlft rm train``)
"""

from rlft.algorithms.presets import ALGORITHM_PRESETS, ALGORITHMS, OFFLINE_ALGORITHMS
from rlft.config.agent import (
    AgentConfig,
    ArcherConfig,
    EnvConfig,
    EpisodeConfig,
    ILQLConfig,
    agent_config_from_dict,
    agent_config_to_dict,
    load_agent_config,
    policy_learning_rate,
)
from rlft.config.recipe import (
    RecipeConfig,
    absolute_paths,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    reference_markdown,
)
from rlft.config.reward_model import RewardModelRecipe, load_rm_recipe, rm_recipe_from_dict
from rlft.config.sections import (
    AlgorithmConfig,
    CheckpointConfig,
    DistributedConfig,
    EvalConfig,
    LogConfig,
    LoraConfig,
    ModelConfig,
    PreferenceConfig,
    PrivacyConfig,
    RolloutConfig,
    TaskConfig,
    TrainConfig,
    WarmStartConfig,
)
from rlft.config.vllm import VLLMConfig
from rlft.errors import ConfigError
from rlft.models.tiny_config import TinyModelConfig
from rlft.schema import parse_overrides, read_recipe_yaml

__all__ = [
    "ALGORITHMS", "ALGORITHM_PRESETS", "OFFLINE_ALGORITHMS", "AgentConfig", "AlgorithmConfig", "ArcherConfig",
    "CheckpointConfig", "ConfigError", "DistributedConfig", "EnvConfig", "EpisodeConfig", "EvalConfig", "ILQLConfig",
    "LogConfig", "LoraConfig", "ModelConfig", "PreferenceConfig", "PrivacyConfig", "RecipeConfig", "RewardModelRecipe",
    "RolloutConfig", "TaskConfig", "TinyModelConfig", "TrainConfig", "VLLMConfig", "WarmStartConfig", "absolute_paths",
    "agent_config_from_dict", "agent_config_to_dict", "config_from_dict", "config_to_dict", "dump_config",
    "load_agent_config", "load_config", "load_rm_recipe", "parse_overrides", "read_recipe_yaml",
    "reference_markdown", "policy_learning_rate", "rm_recipe_from_dict",
]  # fmt: skip

"""The recipe's registry-backed fields, the built-in presets and the docs agree with the live registries.

A recipe names registry entries (an advantage estimator, a policy loss, a task, ...). Those fields
are ``Annotated[str, Registered(...)]``: a value is checked against the registry as it is when the
recipe loads, so a name a plugin registered is valid and a typo is refused with what is
registered. These tests keep each field pointing at its registry, the built-in presets naming
registered parts, the fixed metadata of the built-ins as it was, and docs/recipes.md listing the
live names.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
from rlft.algorithms.aggregation import LOSS_AGG_MODES
from rlft.algorithms.kl import KL_CONTROLLERS, KL_ESTIMATORS
from rlft.algorithms.losses import POLICY_LOSSES
from rlft.algorithms.preference import PREFERENCE_LOSSES
from rlft.algorithms.presets import (
    ALGORITHM_PRESETS,
    ALGORITHMS,
    OFFLINE_ALGORITHMS,
    SMOOTHED_PREFERENCE_LOSSES,
)
from rlft.config import (
    AgentConfig,
    AlgorithmConfig,
    EnvConfig,
    PreferenceConfig,
    TaskConfig,
    config_from_dict,
    reference_markdown,
)
from rlft.config.agent import AGENT_LEARNING_RATES
from rlft.config.recipe import TRAINER_CHECKS
from rlft.envs import ENV_FAMILIES, agent_env_names
from rlft.errors import ConfigError
from rlft.extend import register_policy_loss, registries, restoring_registries
from rlft.schema import registered
from rlft.tasks import TASKS

DOC = Path(__file__).parents[2] / "docs" / "recipes.md"

FIELDS = [
    (AlgorithmConfig, "name", "algorithm.name", ALGORITHM_PRESETS),
    (AlgorithmConfig, "advantage_estimator", "algorithm.advantage_estimator", ADVANTAGE_ESTIMATORS),
    (AlgorithmConfig, "policy_loss", "algorithm.policy_loss", POLICY_LOSSES),
    (AlgorithmConfig, "kl_estimator", "algorithm.kl_estimator", KL_ESTIMATORS),
    (AlgorithmConfig, "kl_controller", "algorithm.kl_controller", KL_CONTROLLERS),
    (AlgorithmConfig, "loss_agg_mode", "algorithm.loss_agg_mode", LOSS_AGG_MODES),
    (PreferenceConfig, "loss", "preference.loss", PREFERENCE_LOSSES),
    (TaskConfig, "name", "task.name", TASKS),
]


def marker(cls: type[Any], field: str):  # noqa: ANN201
    """The Registered marker of a field (an optional one too), or None."""
    tp = typing.get_type_hints(cls, include_extras=True)[field]
    found = registered(tp) or next(filter(None, map(registered, typing.get_args(tp))), None)
    return found


def literal_choices(cls: type[Any], field: str) -> set[Any]:
    tp = typing.get_type_hints(cls)[field]
    return set(typing.get_args(tp)) if typing.get_origin(tp) is Literal else set()


@pytest.fixture
def scratch():
    with restoring_registries():
        yield


@pytest.mark.parametrize("cls, field, key, registry", FIELDS)
def test_each_registry_field_reads_its_live_registry(cls, field, key, registry):
    found = marker(cls, field)
    assert found is not None, f"{cls.__name__}.{field} is not registry-backed"
    assert found.names() == list(registry)


def test_the_agent_environments_are_the_env_families_of_several_turns():
    # The arithmetic family is the single-turn task as a one-step environment: the main recipe's
    # task section configures it, so the agent recipe does not offer it.
    assert marker(EnvConfig, "name").names() == agent_env_names() == ["guess", "calculator", "python_tool"]
    assert set(ENV_FAMILIES) - set(agent_env_names()) == {"arithmetic"}


def test_the_agent_algorithms_are_those_of_the_agent_trainers():
    from rlft.trainers.registry import AGENT_TRAINERS

    assert literal_choices(AgentConfig, "algorithm") == set(AGENT_TRAINERS) == set(AGENT_LEARNING_RATES)


def test_the_agent_policy_gradient_algorithms_are_main_loop_presets():
    online = literal_choices(AgentConfig, "algorithm") & set(ALGORITHM_PRESETS)
    assert online == {"grpo", "ppo"}
    assert all(ALGORITHM_PRESETS[name]["trainer"] == "rl" for name in online)
    assert AGENT_LEARNING_RATES["ppo"] == ALGORITHM_PRESETS["ppo"]["train"]["learning_rate"]


def test_the_metadata_of_the_built_ins_is_what_the_fixed_sets_said():
    """The sets VALUE_ESTIMATORS, GROUP_ESTIMATORS and ON_POLICY_LOSSES became registry metadata."""
    assert {n for n in ADVANTAGE_ESTIMATORS if ADVANTAGE_ESTIMATORS.info(n).needs_critic} == {"gae"}
    assert {n for n in ADVANTAGE_ESTIMATORS if ADVANTAGE_ESTIMATORS.info(n).needs_groups} == {"grpo", "rloo"}
    assert {n for n in POLICY_LOSSES if not POLICY_LOSSES.info(n).needs_old_logprobs} == {"vanilla_pg"}
    assert {n for n in POLICY_LOSSES if POLICY_LOSSES.info(n).sequence_level} == {"gspo", "gspo_token"}
    assert set(PREFERENCE_LOSSES) >= SMOOTHED_PREFERENCE_LOSSES


def test_every_preset_names_registered_parts_and_a_trainer_with_checks():
    from rlft.trainers.registry import TRAINERS

    hints = typing.get_type_hints(AlgorithmConfig)
    for name, preset in ALGORITHM_PRESETS.items():
        assert preset["trainer"] in TRAINERS, name
        assert preset["trainer"] in TRAINER_CHECKS, name
        assert set(preset["algorithm"]) <= set(hints), f"{name}: preset sets fields AlgorithmConfig lacks"
        for field, value in preset["algorithm"].items():
            found = marker(AlgorithmConfig, field)
            if found is not None:
                assert value in found.names(), f"{name}.{field}={value!r}"
            elif literal_choices(AlgorithmConfig, field):
                assert value in literal_choices(AlgorithmConfig, field), f"{name}.{field}={value!r}"
        assert preset["train"]["epochs_per_batch"] >= 1 and preset["train"]["mini_batches"] >= 1


def test_the_online_and_offline_algorithms_partition_the_presets():
    assert set(ALGORITHMS) | set(OFFLINE_ALGORITHMS) == set(ALGORITHM_PRESETS)
    assert not set(ALGORITHMS) & set(OFFLINE_ALGORITHMS)
    assert {ALGORITHM_PRESETS[name]["trainer"] for name in ALGORITHMS} == {"rl"}


@pytest.mark.parametrize("name", list(ALGORITHM_PRESETS))
def test_every_preset_resolves_to_a_valid_recipe(name):
    extra = {"preference": {"data": "pairs.jsonl"}} if name in OFFLINE_ALGORITHMS else {}
    config = config_from_dict({"algorithm": {"name": name}, **extra})
    train = ALGORITHM_PRESETS[name]["train"]
    assert config.train.epochs_per_batch == train["epochs_per_batch"]
    assert config.train.learning_rate == train["learning_rate"]
    assert config.train.mini_batch_size == config.train.batch_size // train["mini_batches"]
    for field, value in ALGORITHM_PRESETS[name]["algorithm"].items():
        assert getattr(config.algorithm, field) == value, (name, field)


@pytest.mark.parametrize("cls, field, key, registry", FIELDS)
def test_the_docs_list_each_registry_as_it_is(cls, field, key, registry):
    """docs/recipes.md (generated: python -m rlft.config) lists every registered name of a field."""
    (row,) = [line for line in DOC.read_text().splitlines() if line.startswith(f"| `{key}` |")]
    type_cell = row.split(" | ")[1]
    assert type_cell.replace("\\|", "|").removesuffix(" or null").split(" | ") == [repr(name) for name in registry]


def test_the_docs_follow_the_live_registry(scratch):
    """A name registered at run time is in the generated reference, and gone with it."""
    register_policy_loss("docs_probe", POLICY_LOSSES["ppo_clip"])
    assert "'docs_probe'" in reference_markdown()
    config = config_from_dict({"algorithm": {"policy_loss": "docs_probe"}})
    assert config.algorithm.policy_loss == "docs_probe"


def test_a_restored_registry_refuses_the_name_again(scratch):
    with restoring_registries():
        register_policy_loss("gone_after", POLICY_LOSSES["ppo_clip"])
    assert "gone_after" not in POLICY_LOSSES and "'gone_after'" not in reference_markdown()
    with pytest.raises(ConfigError, match="choose one of 'vanilla_pg' \\| 'ppo_clip'"):
        config_from_dict({"algorithm": {"policy_loss": "gone_after"}})


def test_the_registries_of_register_calls_are_the_recipe_fields_that_name_them():
    assert set(registries()) == {
        "algorithm.policy_loss", "algorithm.advantage_estimator", "algorithm.kl_estimator", "algorithm.name",
        "env.name", "reward.type", "task.name",
    }  # fmt: skip

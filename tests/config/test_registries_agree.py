"""The recipe's ``Literal`` choices agree with the registries that give them meaning.

A recipe names registry entries (an advantage estimator, a policy loss, a task, ...). Its fields
are ``Literal`` types, so that a typo is refused at load time with the valid choices listed; these
tests keep each ``Literal`` equal to its registry, so that adding an entry to one without the other
fails here rather than in a user's run.
"""

from __future__ import annotations

import typing
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
    GROUP_ESTIMATORS,
    OFFLINE_ALGORITHMS,
    ON_POLICY_LOSSES,
    SMOOTHED_PREFERENCE_LOSSES,
    VALUE_ESTIMATORS,
)
from rlft.config import (
    AgentConfig,
    AlgorithmConfig,
    EnvConfig,
    PreferenceConfig,
    TaskConfig,
    config_from_dict,
)
from rlft.config.agent import AGENT_LEARNING_RATES
from rlft.config.recipe import TRAINER_CHECKS
from rlft.envs import ENV_FAMILIES
from rlft.tasks import TASKS


def choices(cls: type[Any], field: str) -> set[Any]:
    """The values a ``Literal`` field (or an optional one) allows."""
    tp = typing.get_type_hints(cls)[field]
    if typing.get_origin(tp) is not Literal:
        (tp,) = [arg for arg in typing.get_args(tp) if typing.get_origin(arg) is Literal]
    return set(typing.get_args(tp))


@pytest.mark.parametrize(
    "cls, field, registry",
    [
        (AlgorithmConfig, "name", ALGORITHM_PRESETS),
        (AlgorithmConfig, "advantage_estimator", ADVANTAGE_ESTIMATORS),
        (AlgorithmConfig, "policy_loss", POLICY_LOSSES),
        (AlgorithmConfig, "kl_estimator", KL_ESTIMATORS),
        (AlgorithmConfig, "kl_controller", KL_CONTROLLERS),
        (AlgorithmConfig, "loss_agg_mode", LOSS_AGG_MODES),
        (PreferenceConfig, "loss", PREFERENCE_LOSSES),
        (TaskConfig, "name", TASKS),
        (AgentConfig, "algorithm", AGENT_LEARNING_RATES),
    ],
)
def test_each_literal_equals_its_registry(cls, field, registry):
    assert choices(cls, field) == set(registry), f"{cls.__name__}.{field} and its registry disagree"


def test_the_agent_environments_are_the_env_families_of_several_turns():
    # The arithmetic family is the single-turn task as a one-step environment: the main recipe's
    # task section configures it, so the agent recipe does not offer it.
    assert choices(EnvConfig, "name") == set(ENV_FAMILIES) - {"arithmetic"}


def test_the_agent_algorithms_are_those_of_the_agent_trainers():
    registry = pytest.importorskip("rlft.trainers.registry")
    if not hasattr(registry, "AGENT_TRAINERS"):
        pytest.skip("rlft.trainers.registry has no AGENT_TRAINERS yet")
    assert choices(AgentConfig, "algorithm") == set(registry.AGENT_TRAINERS)


def test_the_agent_policy_gradient_algorithms_are_main_loop_presets():
    online = choices(AgentConfig, "algorithm") & set(ALGORITHM_PRESETS)
    assert online == {"grpo", "ppo"}
    assert all(ALGORITHM_PRESETS[name]["trainer"] == "rl" for name in online)
    assert AGENT_LEARNING_RATES["ppo"] == ALGORITHM_PRESETS["ppo"]["train"]["learning_rate"]


def test_every_preset_names_registered_parts_and_a_trainer_with_checks():
    from rlft.trainers.registry import TRAINERS

    hints = typing.get_type_hints(AlgorithmConfig)
    for name, preset in ALGORITHM_PRESETS.items():
        assert preset["trainer"] in TRAINERS, name
        assert preset["trainer"] in TRAINER_CHECKS, name
        assert set(preset["algorithm"]) <= set(hints), f"{name}: preset sets fields AlgorithmConfig lacks"
        for field, value in preset["algorithm"].items():
            if typing.get_origin(hints[field]) is Literal or any(
                typing.get_origin(arg) is Literal for arg in typing.get_args(hints[field])
            ):
                assert value in choices(AlgorithmConfig, field), f"{name}.{field}={value!r}"
        assert preset["train"]["epochs_per_batch"] >= 1 and preset["train"]["mini_batches"] >= 1


def test_the_online_and_offline_algorithms_partition_the_presets():
    assert set(ALGORITHMS) | set(OFFLINE_ALGORITHMS) == set(ALGORITHM_PRESETS)
    assert not set(ALGORITHMS) & set(OFFLINE_ALGORITHMS)
    assert {ALGORITHM_PRESETS[name]["trainer"] for name in ALGORITHMS} == {"rl"}


def test_the_property_sets_name_registry_entries():
    assert set(ADVANTAGE_ESTIMATORS) >= VALUE_ESTIMATORS
    assert set(ADVANTAGE_ESTIMATORS) >= GROUP_ESTIMATORS
    assert set(POLICY_LOSSES) >= ON_POLICY_LOSSES
    assert set(PREFERENCE_LOSSES) >= SMOOTHED_PREFERENCE_LOSSES


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

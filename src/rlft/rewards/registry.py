"""The reward registry and ``build_reward``: a recipe's ``reward:`` mapping -> a reward.

A spec is a mapping with a ``type`` (a key of :data:`REWARDS`) and that reward's parameters::

    {"type": "regex", "pattern": "^\\d+$", "penalty": -1.0}
    {"type": "weighted", "normalize": "batch", "components": [
        {"type": "exact_match", "weight": 1.0},
        {"type": "length_penalty", "max_length": 20, "weight": 0.1, "name": "brevity"}]}

Errors name the bad key or value and list what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable, Mapping
from typing import Any

from rlft.algorithms.registry import Registry
from rlft.errors import ConfigError, RlftError
from rlft.rewards.base import RewardFunction, RewardSpecError
from rlft.rewards.bias_templates import load_templates
from rlft.rewards.builtins import (
    Component,
    ExactMatch,
    LengthPenalty,
    MathVerify,
    NumericAnswer,
    PythonFunction,
    RegexFormat,
    Sentiment,
    WeightedSum,
)
from rlft.rewards.code import UnitTests
from rlft.rewards.fairness import FairnessPenalty
from rlft.rewards.normalization import NORMALIZE_MODES
from rlft.rewards.process_model import ProcessModelReward
from rlft.rewards.reward_model import RewardModelReward
from rlft.schema import build

# name -> reward class (a dataclass of its parameters; its fields are the spec's keys). A plugin
# adds one with rlft.register_reward (docs/extending.md); weighted and fairness are combinators.
REWARDS: Registry[Any, None] = Registry("reward type", None, {
    "exact_match": ExactMatch,
    "numeric": NumericAnswer,
    "math_verify": MathVerify,
    "regex": RegexFormat,
    "length_penalty": LengthPenalty,
    "sentiment": Sentiment,
    "python": PythonFunction,
    "reward_model": RewardModelReward,
    "process_model": ProcessModelReward,
    "unit_tests": UnitTests,
})


def build_reward(spec: Mapping[str, Any] | RewardFunction, where: str = "reward") -> RewardFunction:
    """Validate ``spec`` and build the reward it describes; a callable is returned unchanged."""
    if callable(spec) and not isinstance(spec, Mapping):
        return spec
    if not isinstance(spec, Mapping):
        raise RewardSpecError(f"{where} must be a mapping with a 'type' key, got {spec!r}.")
    params = dict(spec)
    kind = params.pop("type", None)
    builders = _builders()
    if kind is None:
        raise RewardSpecError(f"{where} has no 'type'; choose one of: {', '.join(builders)}.")
    if kind not in builders:
        close = difflib.get_close_matches(str(kind), list(builders), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RewardSpecError(
            f"{where}.type={kind!r} is not a reward.{hint} Choose one of: {', '.join(builders)}."
        )
    reward: RewardFunction = builders[kind](params, where)
    return reward


def reward_types() -> list[str]:
    """Every ``type`` a reward spec may name: the registered rewards and the combinators."""
    return list(_builders())


def _builders() -> dict[str, Callable[[dict[str, Any], str], Any]]:
    out: dict[str, Callable[[dict[str, Any], str], Any]] = {
        name: functools.partial(_build_dataclass, cls) for name, cls in REWARDS.items()
    }
    out["weighted"] = _build_weighted
    out["fairness"] = _build_fairness
    if REWARDS.get("process_model") is ProcessModelReward:  # its outcome: a nested spec
        out["process_model"] = _build_process_model
    return out


def _build_process_model(params: dict[str, Any], where: str) -> ProcessModelReward:
    reward = _build_dataclass(ProcessModelReward, params, where)
    if reward.outcome is not None:
        reward.set_outcome(build_reward(reward.outcome, f"{where}.outcome"))
    return reward


def _build_dataclass(cls: Any, params: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in params if key not in fields]
    missing = [
        f
        for f in fields.values()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in params
    ]
    if missing and not unknown:
        f = missing[0]
        raise RewardSpecError(
            f"{where} (type {cls.name!r}) needs '{f.name}': {f.metadata.get('help', '')}"
        )
    try:
        return build(cls, params, where)
    except RewardSpecError:
        raise
    except ConfigError as exc:
        raise RewardSpecError(
            str(exc).replace("Unknown recipe key", "Unknown reward parameter")
        ) from None


def _build_weighted(params: dict[str, Any], where: str) -> WeightedSum:
    allowed = {"components", "normalize"}
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RewardSpecError(
                f"Unknown reward parameter '{where}.{key}'.{hint} Valid: components, normalize."
            )
    mode = params.get("normalize", "none")
    if mode not in NORMALIZE_MODES:
        raise RewardSpecError(
            f"{where}.normalize={mode!r} is not allowed; choose one of {', '.join(NORMALIZE_MODES)}."
        )
    items = params.get("components")
    if not isinstance(items, list) or not items:
        raise RewardSpecError(f"{where}.components must be a non-empty list of reward specs.")
    components = []
    for i, item in enumerate(items):
        here = f"{where}.components[{i}]"
        if not isinstance(item, Mapping):
            raise RewardSpecError(f"{here} must be a mapping with a 'type' key, got {item!r}.")
        item = dict(item)
        weight = item.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise RewardSpecError(f"{here}.weight={weight!r} must be a number.")
        name = str(item.pop("name", item.get("type", f"component_{i}")))
        components.append(Component(name, build_reward(item, here), float(weight)))
    return WeightedSum(components, mode)


def _build_fairness(params: dict[str, Any], where: str) -> FairnessPenalty:
    """The ``type: fairness`` builder: ``reward`` (a spec), ``attribute``, ``weight``, ``templates``."""
    allowed = {"reward", "attribute", "weight", "templates"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RewardSpecError(
            f"Unknown reward parameter '{where}.{unknown[0]}'. Valid: {', '.join(sorted(allowed))}."
        )
    if "reward" not in params:
        raise RewardSpecError(f"{where} (type 'fairness') needs 'reward': the spec of the reward to make fair.")
    weight = params.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise RewardSpecError(f"{where}.weight={weight!r} must be a number >= 0.")
    try:
        attributes = load_templates(params.get("templates"))
    except RlftError as exc:
        raise RewardSpecError(f"{where}.templates: {exc}") from None
    attribute = params.get("attribute")
    if attribute not in attributes:
        raise RewardSpecError(
            f"{where}.attribute={attribute!r} is not an attribute of the bias templates; "
            f"choose one of: {', '.join(attributes)} (or add your own with 'templates: FILE')."
        )
    inner = build_reward(params["reward"], f"{where}.reward")
    return FairnessPenalty(inner, attributes[attribute].groups, float(weight))

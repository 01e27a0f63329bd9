"""``build_reward`` validates specs with errors that name the key, the value and what is valid."""

from __future__ import annotations

import pytest

from rlft.errors import ConfigError
from rlft.rewards import REWARDS, RewardSpecError, build_reward


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "has no 'type'; choose one of: exact_match"),
        ({"type": "regx"}, "Did you mean 'regex'?"),
        ({"type": "regex"}, "needs 'pattern'"),
        (
            {"type": "regex", "patern": "a"},
            "Unknown reward parameter 'reward.patern'. Did you mean 'reward.pattern'?",
        ),
        ({"type": "regex", "pattern": "("}, "not a valid regular expression"),
        (
            {"type": "length_penalty", "max_length": -1},
            "reward.max_length=-1 is out of range; it must be >= 0",
        ),
        ({"type": "length_penalty", "max_length": "ten"}, "wrong type; expected int"),
        ({"type": "numeric", "which": "mid"}, "choose one of 'first' | 'last'"),
        ({"type": "python", "function": "no_colon"}, "must look like 'package.module:function'"),
        ({"type": "python", "function": "os:nope"}, "'os' has no attribute 'nope'"),
        (
            {"type": "python", "function": "no_such_module_xyz:f"},
            "cannot import 'no_such_module_xyz'",
        ),
        ({"type": "weighted", "components": []}, "non-empty list"),
        ({"type": "weighted", "normalise": "batch", "components": []}, "Did you mean 'normalize'?"),
        (
            {"type": "weighted", "normalize": "z", "components": [{"type": "exact_match"}]},
            "choose one of none, batch, running",
        ),
        (
            {"type": "weighted", "components": [{"type": "exact_match"}, {"type": "regx"}]},
            r"reward.components\[1\].type='regx'",
        ),
        (
            {"type": "weighted", "components": [{"type": "exact_match"}, {"type": "exact_match"}]},
            "duplicate names",
        ),
        ({"type": "reward_model", "path": "/no/such/folder"}, "does not exist"),
        ("exact_match", "must be a mapping with a 'type' key"),
    ],
)
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_reward(spec)


def test_every_registered_reward_builds_with_its_required_fields(tmp_path):
    required = {
        "regex": {"pattern": "x"},
        "length_penalty": {"max_length": 1},
        "python": {"function": "math:fsum"},
    }
    for name in REWARDS:
        if name in ("reward_model", "process_model"):
            continue  # needs a trained model; covered in test_reward_model.py, test_process_model.py
        reward = build_reward({"type": name, **required.get(name, {})})
        assert reward.name == name


def test_a_callable_passes_through_and_errors_are_spec_errors():
    def fn(prompts, completions, **context):
        return [0.0] * len(prompts)

    assert build_reward(fn) is fn
    assert issubclass(RewardSpecError, ConfigError)

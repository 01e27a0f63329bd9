"""The registry every named part lives in: a plain dict that refuses a second entry of one name."""

from __future__ import annotations

import pytest

from rlft.algorithms.losses import POLICY_LOSSES, PolicyLossInfo, clipped_surrogate_loss
from rlft.algorithms.registry import Registry


def first(x):
    return x


def second(x):
    return -x


def test_an_entry_is_a_dict_item_with_its_metadata():
    registry = Registry("thing", "plain", {"a": first})
    assert registry.add("b", second, "special") is second
    assert dict(registry) == {"a": first, "b": second}
    assert registry.info("a") == "plain" and registry.info("b") == "special"
    registry["c"] = first  # put in the dict directly: the default metadata
    assert registry.info("c") == "plain"


def test_a_second_entry_of_one_name_is_refused_naming_the_first():
    registry = Registry("thing", None, {"a": first})
    with pytest.raises(ValueError, match=r"A thing named 'a' is already registered \(.*test_registry.first\)"):
        registry.add("a", second)
    assert registry["a"] is first


def test_replace_puts_the_new_entry_and_its_metadata_in_place():
    registry = Registry("thing", "plain", {"a": first})
    registry.add("a", second, "new", replace=True)
    assert registry["a"] is second and registry.info("a") == "new"


@pytest.mark.parametrize("name", ["", "two words", "a:b", None, 3])
def test_a_name_must_be_writable_in_a_recipe(name):
    with pytest.raises(ValueError, match="must be a non-empty string"):
        Registry("thing", None).add(name, first)


def test_the_built_in_losses_refuse_a_plugin_of_the_same_name():
    with pytest.raises(ValueError, match="policy loss named 'ppo_clip' is already registered"):
        POLICY_LOSSES.add("ppo_clip", second)
    assert POLICY_LOSSES["ppo_clip"] is clipped_surrogate_loss
    assert POLICY_LOSSES.info("ppo_clip") == PolicyLossInfo(needs_old_logprobs=True, sequence_level=False)

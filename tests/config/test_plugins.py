"""Plugins as a recipe meets them: a file or module is imported before the recipe is checked, the
names it registers are then valid (and listed when misspelt), its own settings are checked like a
section, and every mistake is one ConfigError that names it."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

import pytest

from rlft import plugins as plugin_loader
from rlft.algorithms.losses import POLICY_LOSSES
from rlft.config import agent_config_from_dict, config_from_dict
from rlft.config.agent import agent_rl_recipe
from rlft.errors import ConfigError
from rlft.extend import (
    register_advantage_estimator,
    register_algorithm,
    register_env,
    register_kl_estimator,
    register_policy_loss,
    register_reward,
    register_task,
    restoring_registries,
)
from rlft.schema import setting


@pytest.fixture(autouse=True)
def scratch():
    with restoring_registries():
        yield


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


LOSS_PLUGIN = """
    import rlft
    from rlft.algorithms.losses import clipped_surrogate_loss

    rlft.register_policy_loss("{name}", clipped_surrogate_loss)
"""


def test_a_plugin_file_makes_its_names_valid_and_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    plugin = write(tmp_path / "my_loss.py", LOSS_PLUGIN.format(name="file_loss"))
    monkeypatch.chdir(tmp_path)
    config = config_from_dict({"plugins": ["my_loss.py"], "algorithm": {"policy_loss": "file_loss"}})
    assert config.algorithm.policy_loss == "file_loss" and config.plugins == [str(plugin.resolve())]
    # named again, by --plugin and by another path: imported once (a second import would register twice)
    again = config_from_dict({"plugins": [str(plugin)]}, plugins=["./my_loss.py"])
    assert again.plugins == [str(plugin.resolve())]


def test_a_plugin_module_is_imported_by_name(tmp_path, monkeypatch):
    write(tmp_path / "rlft_test_module_plugin.py", LOSS_PLUGIN.format(name="module_loss"))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_from_dict({"algorithm": {"policy_loss": "module_loss"}}, plugins=["rlft_test_module_plugin"])
    assert config.plugins == ["rlft_test_module_plugin"]


def test_a_misspelt_name_lists_what_the_plugin_registered(tmp_path):
    plugin = write(tmp_path / "typo.py", LOSS_PLUGIN.format(name="typo_loss"))
    with pytest.raises(ConfigError) as err:
        config_from_dict({"algorithm": {"policy_loss": "typo_los"}}, plugins=[str(plugin)])
    assert "choose one of 'vanilla_pg' | 'ppo_clip' | 'gspo' | 'gspo_token' | 'typo_loss'" in str(err.value)
    assert "Did you mean 'typo_loss'?" in str(err.value)


def test_a_name_of_a_plugin_not_loaded_says_how_to_load_it():
    with pytest.raises(ConfigError, match="valid once its plugin is loaded \\(--plugin FILE.py"):
        config_from_dict({"algorithm": {"policy_loss": "cispo"}})


@pytest.mark.parametrize(
    "source, message",
    [
        ("import rlft\nx = 1\nraise RuntimeError('boom')\n", r"failed while importing \(at .*bad.py:3\): RuntimeError: boom"),
        ("import rlft\nfrom rlft.algorithms.losses import clipped_surrogate_loss\n"
         "rlft.register_policy_loss('ppo_clip', clipped_surrogate_loss)\n",
         "A policy loss named 'ppo_clip' is already registered .* pass replace=True"),
        ("import no_such_dependency_xyz\n", "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
    ],
)
def test_a_plugin_that_fails_is_one_error_naming_it(tmp_path, source, message):
    plugin = write(tmp_path / "bad.py", source)
    with pytest.raises(ConfigError, match=f"Plugin '{plugin}' \\(--plugin\\) {message}" if "boom" in message else message):
        config_from_dict({}, plugins=[str(plugin)])


def test_a_missing_plugin_file_names_the_nearest(tmp_path):
    write(tmp_path / "cispo_loss.py", "")
    with pytest.raises(ConfigError, match=r"Plugin file '.*cispo_los.py' \(plugins: in the recipe\) does not exist.*"
                                          r"Did you mean '.*cispo_loss.py'\?"):
        config_from_dict({"plugins": [str(tmp_path / "cispo_los.py")]})


def test_a_missing_plugin_module_says_how_to_provide_it():
    with pytest.raises(ConfigError, match="Plugin module 'not_a_module_xyz' .* cannot be imported.*not_a_module_xyz.py"):
        config_from_dict({}, plugins=["not_a_module_xyz"])


def test_plugins_must_be_a_list_of_names():
    with pytest.raises(ConfigError, match="plugins='x.py' must be a list"):
        config_from_dict({"plugins": "x.py"})


@pytest.fixture
def fresh_entry_points(monkeypatch, tmp_path):
    """A package installed in tmp_path with an rlft.plugins entry point (its .dist-info)."""
    monkeypatch.setattr(plugin_loader, "_entry_points_loaded", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rlft_probe_entry", raising=False)
    dist = tmp_path / "rlft_probe_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rlft-probe-pkg\nVersion: 0.1\n")

    def install(value: str, source: str) -> None:
        (dist / "entry_points.txt").write_text(f"[rlft.plugins]\nprobe = {value}\n")
        write(tmp_path / "rlft_probe_entry.py", source)

    return install


def test_an_installed_package_registers_itself_through_the_entry_point_group(fresh_entry_points):
    fresh_entry_points("rlft_probe_entry", LOSS_PLUGIN.format(name="entry_loss"))
    config = config_from_dict({"algorithm": {"policy_loss": "entry_loss"}})
    assert config.algorithm.policy_loss == "entry_loss" and config.plugins == []


def test_an_entry_point_naming_a_function_is_called(fresh_entry_points):
    fresh_entry_points("rlft_probe_entry:setup", "def setup():\n" + textwrap.indent(
        textwrap.dedent(LOSS_PLUGIN.format(name="called_loss")), "    "))
    assert config_from_dict({"algorithm": {"policy_loss": "called_loss"}}).algorithm.policy_loss == "called_loss"


def test_a_broken_entry_point_names_its_package(fresh_entry_points):
    fresh_entry_points("rlft_probe_entry", "raise ImportError('half installed')\n")
    with pytest.raises(ConfigError, match="plugin 'probe' of the installed package rlft-probe-pkg .*half installed"):
        config_from_dict({})


def test_register_checks_the_call_signature_at_registration():
    def two_args(logprobs, advantages):
        return logprobs, advantages

    with pytest.raises(ConfigError, match=r"register_policy_loss\('narrow'\): .*two_args cannot be called as the trainer"):
        register_policy_loss("narrow", two_args)
    with pytest.raises(ConfigError, match="register_advantage_estimator"):
        register_advantage_estimator("narrow", two_args)
    with pytest.raises(ConfigError, match="register_kl_estimator"):
        register_kl_estimator("narrow", lambda logprobs: logprobs)
    assert "narrow" not in POLICY_LOSSES


def test_register_as_a_decorator_returns_the_function_and_refuses_the_name_twice():
    @register_kl_estimator("k_probe")
    def k_probe(logprobs, ref_logprobs, clamp=None):
        return logprobs - ref_logprobs

    assert k_probe(3, 1) == 2
    with pytest.raises(ConfigError, match="KL estimator named 'k_probe' is already registered"):
        register_kl_estimator("k_probe", k_probe)
    register_kl_estimator("k_probe", k_probe, replace=True)
    assert config_from_dict({"algorithm": {"kl_estimator": "k_probe"}}).algorithm.kl_estimator == "k_probe"


def test_estimator_metadata_reaches_the_recipe_checks():
    def adv(token_rewards, completion_mask, **unused):
        return token_rewards, token_rewards

    register_advantage_estimator("needs_values", adv, needs_critic=True)
    register_advantage_estimator("needs_pairs", adv, needs_groups=True)
    with pytest.raises(ConfigError, match="'needs_values' needs a critic"):
        config_from_dict({"algorithm": {"advantage_estimator": "needs_values"}})
    assert config_from_dict({"algorithm": {"advantage_estimator": "needs_values", "critic": "value_head"}})
    with pytest.raises(ConfigError, match="group_size must be at least 2"):
        config_from_dict({"algorithm": {"advantage_estimator": "needs_pairs", "group_size": 1}, "train": {"batch_size": 4}})


def test_an_on_policy_loss_refuses_a_reused_batch():
    register_policy_loss("no_ratio", POLICY_LOSSES["vanilla_pg"], needs_old_logprobs=False)
    with pytest.raises(ConfigError, match="'no_ratio' has no importance ratio"):
        config_from_dict({"algorithm": {"policy_loss": "no_ratio"}, "train": {"epochs_per_batch": 2}})


def test_register_algorithm_is_a_preset_over_its_base_and_the_recipe_still_wins():
    register_algorithm("grpo_k1", {"kl_estimator": "k1", "clip_high": 0.3}, train={"learning_rate": 5e-5})
    config = config_from_dict({"algorithm": {"name": "grpo_k1"}})
    assert (config.algorithm.kl_estimator, config.algorithm.clip_high, config.algorithm.advantage_estimator) == (
        "k1", 0.3, "grpo")
    assert config.train.learning_rate == 5e-5
    assert config_from_dict({"algorithm": {"name": "grpo_k1", "clip_high": 0.25}}).algorithm.clip_high == 0.25


@pytest.mark.parametrize(
    "preset, kwargs, message",
    [
        ({"policy_loss": "not_registered"}, {}, "policy_loss='not_registered' is not allowed"),
        ({"advantage_estimator": "gae"}, {}, "needs a critic"),
        ({"kl_coef": 0.1}, {"base": "dpo"}, "base='dpo' is not an online algorithm"),
        ({"clip_hi": 0.3}, {}, "Did you mean 'register_algorithm\\('bad'\\).clip_high'"),
        ({}, {"train": {"epochs": 2}}, "train takes epochs_per_batch, mini_batches, learning_rate"),
    ],
)
def test_register_algorithm_refuses_parts_that_do_not_fit(preset, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        register_algorithm("bad", preset, **kwargs)
    with pytest.raises(ConfigError, match="algorithm.name='bad' is not allowed"):
        config_from_dict({"algorithm": {"name": "bad"}})


@dataclasses.dataclass(frozen=True)
class SizeSettings:
    size: int = setting(2, "How big.", ge=1)
    label: str = setting("x", "A label.")


def test_a_plugin_task_takes_its_settings_next_to_its_name_checked_by_its_dataclass():
    made = []

    @register_task("sized", settings=SizeSettings)
    def make(settings):
        made.append(settings)
        return "the task"

    config = config_from_dict({"task": {"name": "sized", "size": 3}})
    assert config.task.settings == {"size": 3, "label": "x"}  # what config.yaml records, defaults filled in
    from rlft.tasks import build_task

    assert build_task(config.task) == "the task" and made == [SizeSettings(size=3)]
    assert config_from_dict({"task": {"name": "sized", "settings": {"size": 4}}}).task.settings["size"] == 4
    with pytest.raises(ConfigError, match="Unknown recipe key 'task.sise'. Did you mean 'task.size'"):
        config_from_dict({"task": {"name": "sized", "sise": 3}})
    with pytest.raises(ConfigError, match="task.size=0 is out of range; it must be >= 1"):
        config_from_dict({"task": {"name": "sized", "size": 0}})
    with pytest.raises(ConfigError, match="task.digits is set, but task.name='sized' does not read it"):
        config_from_dict({"task": {"name": "sized", "digits": 3}})
    with pytest.raises(ConfigError, match="task.settings is set, but task.name='arithmetic' does not read it"):
        config_from_dict({"task": {"settings": {"size": 3}}})
    with pytest.raises(ConfigError, match="Unknown recipe key 'task.size'"):  # a built-in task keeps its own keys
        config_from_dict({"task": {"name": "arithmetic", "size": 3}})


class SizedFamily:
    settings = ("max_turns",)

    def __init__(self, options, max_turns=3):
        self.options, self.max_turns = options, max_turns

    def train_envs(self, n, gen): ...
    def eval_envs(self): ...
    def demonstration(self, env, gen): ...
    def corpus(self, n=500, seed=0): ...


def test_a_plugin_env_takes_its_settings_in_the_env_section():
    from rlft.trainers.agent import make_family

    register_env("sized_env", SizedFamily, settings=SizeSettings)
    config = agent_config_from_dict({"env": {"name": "sized_env", "size": 5, "max_turns": 2}})
    assert config.env.settings == {"size": 5, "label": "x"}
    family = make_family(config)
    assert family.options == SizeSettings(size=5) and family.max_turns == 2 and family.name == "sized_env"
    with pytest.raises(ConfigError, match="Unknown recipe key 'env.sizes'. Did you mean 'env.size'"):
        agent_config_from_dict({"env": {"name": "sized_env", "sizes": 5}})
    with pytest.raises(ConfigError, match="env.settings is set, but env.name='guess' has no settings of its own"):
        agent_config_from_dict({"env": {"settings": {"size": 5}}})
    with pytest.raises(ConfigError, match="Unknown recipe key 'env.size'"):
        agent_config_from_dict({"env": {"name": "guess", "size": 5}})


@pytest.mark.parametrize(
    "family, settings, message",
    [
        (type("NoMethods", (), {"settings": ()}), None, "has no train_envs, eval_envs, demonstration, corpus"),
        (type("BadFields", (SizedFamily,), {"settings": ("digits",)}), None, "BadFields.settings must be a tuple"),
        (SizedFamily, dict, "takes a dataclass"),
    ],
)
def test_register_env_checks_the_family(family, settings, message):
    with pytest.raises(ConfigError, match=message):
        register_env("bad_env", family, settings=settings)


def test_a_plugin_reward_type_is_a_spec_with_its_own_checked_fields():
    from rlft.rewards import build_reward, score

    @register_reward("length_at_least")
    @dataclasses.dataclass
    class LengthAtLeast:
        minimum: int = setting(3, "Shortest length that scores 1.", ge=0)

        def __call__(self, prompts, completions, **context):
            return [float(len(c) >= self.minimum) for c in completions]

    reward = build_reward({"type": "weighted", "components": [{"type": "length_at_least", "minimum": 2}]})
    assert score(reward, ["p", "p"], ["a", "abc"]).rewards == [0.0, 1.0]
    with pytest.raises(ConfigError, match="Unknown reward parameter 'reward.minimun'. Did you mean 'reward.minimum'"):
        config_from_dict({"reward": {"type": "length_at_least", "minimun": 2}})
    with pytest.raises(ConfigError, match="reward type named 'length_at_least' is already registered"):
        register_reward("length_at_least", LengthAtLeast)
    with pytest.raises(ConfigError, match="is a combinator of rewards"):
        register_reward("weighted", LengthAtLeast, replace=True)
    with pytest.raises(ConfigError, match="takes a dataclass"):
        register_reward("plain_function", lambda prompts, completions, **context: [0.0])


def test_the_agent_recipe_takes_the_main_recipes_algorithm_fields():
    register_policy_loss("agent_loss", POLICY_LOSSES["ppo_clip"])
    config = agent_config_from_dict({"policy_gradient": {"policy_loss": "agent_loss", "kl_coef": 0.0}})
    recipe = agent_rl_recipe(config)
    assert (recipe.algorithm.name, recipe.algorithm.policy_loss, recipe.algorithm.kl_coef) == ("grpo", "agent_loss", 0.0)
    assert recipe.algorithm.gamma == 1.0 and recipe.algorithm.group_size == config.group_size
    ppo = agent_rl_recipe(agent_config_from_dict({"algorithm": "ppo", "policy_gradient": {"lam": 0.9}}))
    assert (ppo.algorithm.advantage_estimator, ppo.algorithm.critic, ppo.algorithm.lam) == ("gae", "value_head", 0.9)


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"policy_gradient": {"policy_loss": "nope"}}, "policy_gradient.policy_loss='nope' is not allowed"),
        ({"policy_gradient": {"advantage_estimator": "gae"}}, "policy_gradient.critic='none'"),
        ({"policy_gradient": {"dynamic_sampling": True}}, "policy_gradient.dynamic_sampling is not read over whole episodes"),
        ({"policy_gradient": {"group_size": 2}}, "policy_gradient.group_size is the agent recipe's own field group_size"),
        ({"algorithm": "archer", "policy_gradient": {"kl_coef": 0.1}}, "algorithm='archer' does not read it"),
    ],
)
def test_the_agent_recipe_checks_those_fields_at_load(recipe, message):
    with pytest.raises(ConfigError, match=message):
        agent_config_from_dict(recipe)

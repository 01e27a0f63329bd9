import pytest

from rlft.config import (
    RecipeConfig,
    config_from_dict,
    dump_config,
    load_config,
    read_recipe_yaml,
    reference_markdown,
)
from rlft.errors import ConfigError


def test_defaults_validate_and_roundtrip_through_yaml(tmp_path):
    config = load_config(None)
    assert isinstance(config, RecipeConfig)
    path = tmp_path / "r.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_unknown_key_names_nearest_valid_key():
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'train.learning_rat'.*'train.learning_rate'"):
        config_from_dict({"train": {"learning_rat": 1e-4}})


def test_unknown_section_names_nearest():
    with pytest.raises(ConfigError, match=r"'algorithm'"):
        config_from_dict({"algoritm": {}})


def test_wrong_type_names_field_value_and_expected_type():
    with pytest.raises(ConfigError, match=r"train.steps='ten'.*expected int"):
        config_from_dict({"train": {"steps": "ten"}})


def test_out_of_range_names_the_bound():
    with pytest.raises(ConfigError, match=r"rollout.top_p=1.5 is out of range; it must be <= 1"):
        config_from_dict({"rollout": {"top_p": 1.5}})


def test_bad_literal_lists_choices_and_suggests():
    with pytest.raises(ConfigError, match=r"'token_mean'"):
        config_from_dict({"algorithm": {"loss_agg_mode": "token_meen"}})


def test_batch_not_divisible_by_group_is_rejected_with_a_fix():
    with pytest.raises(ConfigError, match=r"multiple of algorithm.group_size=8.*train.batch_size=96"):
        config_from_dict({"train": {"batch_size": 100}})


def test_overrides_parse_yaml_values():
    config = config_from_dict({}, ["train.learning_rate=1e-5", "task.operations=['+', '*']", "task.answer_format=answer", "model.path=null"])
    assert config.train.learning_rate == 1e-5
    assert config.task.operations == ["+", "*"]
    assert config.model.path is None


def test_scientific_notation_string_is_a_float(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  learning_rate: 1e-5\n")  # PyYAML reads this as a string
    assert load_config(path).train.learning_rate == 1e-5


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(path)


def test_a_key_given_twice_names_the_key_and_lines(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  steps: 5\n  learning_rate: 1.0e-5\n  steps: 50\n")  # PyYAML would keep 50
    with pytest.raises(ConfigError, match=r"r.yaml:4: the key 'steps' appears twice in one mapping \(first at line 2\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--set reward:1: the key 'type' appears twice"):
        load_config(None, ["reward={type: exact_match, type: numeric}"])
    path.write_text("defaults: &d\n  steps: 5\ntrain:\n  <<: *d\n  steps: 7\n")  # overriding a merge is fine
    assert read_recipe_yaml(path)["train"] == {"steps": 7}


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/recipe.yaml")


def test_config_is_frozen():
    config = load_config(None)
    with pytest.raises(AttributeError):
        config.seed = 3  # type: ignore[misc]


def test_recipe_reference_doc_is_up_to_date():
    from pathlib import Path

    doc = Path(__file__).parents[2] / "docs" / "recipes.md"
    assert doc.read_text() == reference_markdown(), "regenerate: python -m rlft.config > docs/recipes.md"


@pytest.mark.parametrize(
    "name, epochs, mini_batch, learning_rate",
    [("ppo", 4, 32, 3e-5), ("grpo", 1, 128, 1e-4), ("a2c", 1, 128, 1e-4), ("dpo", 1, 128, 1e-4)],
)
def test_training_defaults_come_from_the_algorithms_preset(name, epochs, mini_batch, learning_rate):
    extra = {"preference": {"data": "pairs.jsonl"}} if name == "dpo" else {}
    train = config_from_dict({"algorithm": {"name": name}, "train": {"batch_size": 128}, **extra}).train
    assert (train.epochs_per_batch, train.mini_batch_size, train.micro_batch_size, train.learning_rate) == (
        epochs, mini_batch, mini_batch, learning_rate
    )


def test_an_offline_algorithm_leaves_the_rl_fields_empty():
    algo = config_from_dict({"algorithm": {"name": "dpo"}, "preference": {"data": "p.jsonl"}}).algorithm
    assert (algo.advantage_estimator, algo.lam, algo.entropy_coef) == (None, None, None)


def test_a_task_refuses_the_fields_it_does_not_read():
    with pytest.raises(ConfigError, match=r"task.digits is set, but task.name='reviews' does not read it"):
        config_from_dict({"task": {"name": "reviews", "eval_size": 64, "digits": 3}})
    with pytest.raises(ConfigError, match=r"warm_start.target_field and warm_start.data are read by task.name='dataset'"):
        config_from_dict({"warm_start": {"target_field": "y"}})


def test_each_task_checks_its_own_fields():
    with pytest.raises(ConfigError, match=r"the reviews task has \d+ prompts"):
        config_from_dict({"task": {"name": "reviews", "eval_size": 10_000}})
    with pytest.raises(ConfigError, match=r"answer_format='steps' writes column-addition steps"):
        config_from_dict({"task": {"operations": ["*"]}})
    with pytest.raises(ConfigError, match=r"allowed are '\+', '-', '\*'"):
        config_from_dict({"task": {"operations": ["/"], "answer_format": "answer"}})

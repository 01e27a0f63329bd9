import pytest

from rlft.config import RecipeConfig, config_from_dict, dump_config, load_config, reference_markdown
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

"""rlft.schema: frozen dataclasses from plain data, with errors that name the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rlft.errors import ConfigError
from rlft.schema import build, dataclass_markdown, setting, with_overrides


@dataclass(frozen=True)
class Inner:
    """A nested section."""

    rate: float = setting(0.5, "A rate.", gt=0, le=1)


@dataclass(frozen=True)
class Outer:
    """The whole."""

    steps: int = setting(3, "Steps.", ge=0)
    tags: list[str] = setting(["a"], "Tags | labels.")
    inner: Inner = setting(Inner(), "The inner section.")


def test_build_converts_nested_sections_and_yaml_float_strings():
    built = build(Outer, {"steps": 5, "inner": {"rate": "1e-1"}})
    assert built == Outer(steps=5, tags=["a"], inner=Inner(rate=0.1))


def test_errors_name_the_full_key_and_what_is_valid():
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'inner.rat'. Did you mean 'inner.rate'\?"):
        build(Outer, {"inner": {"rat": 0.1}})
    with pytest.raises(ConfigError, match=r"inner.rate=2.0 is out of range; it must be <= 1"):
        build(Outer, {"inner": {"rate": 2}})
    with pytest.raises(ConfigError, match=r"tags\[1\]=3 has the wrong type; expected str"):
        build(Outer, {"tags": ["x", 3]})


def test_list_defaults_are_not_shared():
    assert Outer().tags is not Outer().tags


def test_setting_refuses_an_unknown_check():
    with pytest.raises(TypeError, match="ge, gt, le, lt"):
        setting(1, "x", minimum=0)


def test_overrides_apply_to_a_copy():
    data = {"inner": {"rate": 0.5}}
    assert with_overrides(data, ["inner.rate=0.25", "steps=7"]) == {"inner": {"rate": 0.25}, "steps": 7}
    assert data == {"inner": {"rate": 0.5}}


def test_markdown_documents_every_field_and_nested_section():
    text = "\n".join(dataclass_markdown(Outer))
    assert "| `steps` | int | `3` | Steps. (ge 0) |" in text
    assert "Tags \\| labels." in text  # a pipe in help would end the table cell
    assert "## `inner`" in text and "| `inner.rate` | float | `0.5` | A rate. (gt 0, le 1) |" in text

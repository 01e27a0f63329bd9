"""Frozen dataclasses from plain data (YAML, ``--set`` overrides, keyword arguments), with errors
a user can act on.

Every typed settings object of rlft (the recipe, the agent recipe, the reward-model recipe, the
parameters of each reward) declares its fields with :func:`setting` and is built with
:func:`build`: an unknown key names the nearest valid one, a wrong type or an out-of-range value
names the field, the value and what is allowed. :func:`dataclass_markdown` documents such a
dataclass from the same declarations, so the reference docs cannot drift from the code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import keyword
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml

from rlft.errors import ConfigError

T = TypeVar("T")

RANGE_CHECKS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def setting(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with its documentation (``metadata["help"]``) and range checks
    (``ge``, ``gt``, ``le``, ``lt``) that :func:`build` enforces. A list or dict default is
    copied for each instance."""
    unknown = set(checks) - set(RANGE_CHECKS)
    if unknown:
        raise TypeError(f"setting() takes the checks {', '.join(RANGE_CHECKS)}, not {', '.join(sorted(unknown))}.")
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class Registered:
    """The choices of a field that names a registry entry: ``Annotated[str, Registered(...)]``.

    Unlike a ``Literal``, the choices are read from the live registry when a value is checked, so
    a name a plugin registered is as valid as a built-in one. ``registry`` is ``"module:NAME"``: a
    mapping whose keys are the names, or a function returning them; it is imported only then, so
    a config module stays light (the registries of maths import torch).
    """

    registry: str

    def names(self) -> list[str]:
        module, _, attr = self.registry.partition(":")
        found = getattr(importlib.import_module(module), attr)
        return list(found() if callable(found) else found)


PLUGIN_HINT = "A name of your own is valid once its plugin is loaded (--plugin FILE.py, or plugins: in the recipe; docs/extending.md)."


def registered(tp: Any) -> Registered | None:
    """The :class:`Registered` marker of ``Annotated[str, Registered(...)]``, else None."""
    if get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Registered)), None)
    return None


def type_name(tp: Any) -> str:
    """How a field's type reads in an error message or a reference table."""
    origin = get_origin(tp)
    if (marker := registered(tp)) is not None:
        return " | ".join(repr(name) for name in marker.names())
    if origin is Annotated:
        return type_name(get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """An instance of the dataclass ``cls`` from plain data; ``prefix`` is the dotted path of
    ``data`` in the whole (``"train"``), so that errors name the full key."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        key = field_name(key)  # a recipe's ``async`` is the field ``async_``
        if key not in fields:
            keys = [recipe_key(name) for name in fields]
            close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.5)
            hint = f" Did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            raise ConfigError(
                f"Unknown recipe key '{where}'.{hint} Valid keys here: {', '.join(keys)}."
            )
        converted = _convert(value, hints[key], where)
        _check_range(converted, fields[key], where)
        kwargs[key] = converted
    return cls(**kwargs)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` as the type ``tp``, or a ConfigError naming ``where``, the value and the type."""
    origin = get_origin(tp)
    if (marker := registered(tp)) is not None:
        return _convert_registered(value, marker, where)
    if origin is Annotated:
        return _convert(value, get_args(tp)[0], where)
    if origin is Literal:
        return _convert_choice(value, tp, where)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type; expected a mapping.")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} has the wrong type; expected {type_name(tp)}.")
        (item_tp,) = get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type; expected a mapping of fields.")
        return build(tp, value, where)
    return _convert_scalar(value, tp, where)


def _convert_choice(value: Any, tp: Any, where: str) -> Any:
    if value in get_args(tp):
        return value
    close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{where}={value!r} is not allowed; choose one of {type_name(tp)}.{hint}")


def _convert_registered(value: Any, marker: Registered, where: str) -> Any:
    names = marker.names()
    if isinstance(value, str) and value in names:
        return value
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    choices = " | ".join(repr(name) for name in names)
    raise ConfigError(f"{where}={value!r} is not allowed; choose one of {choices}.{hint} {PLUGIN_HINT}")


def _convert_union(value: Any, tp: Any, where: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # Optional[X]: X's own error is the most precise
        return _convert(value, options[0], where)
    for arg in options:
        try:
            return _convert(value, arg, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}={value!r} has the wrong type; expected {type_name(tp)}.")


def _convert_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads "1e-5" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None:
            if not math.isfinite(number):  # .inf/.nan pass every range check and poison training
                raise ConfigError(f"{where}={value!r} is not a finite number; give a finite value.")
            return number
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}={value!r} has the wrong type; expected {type_name(tp)}.")


def _check_range(value: Any, f: dataclasses.Field[Any], where: str) -> None:
    md = f.metadata
    for key, ok in (
        ("ge", lambda v, b: v >= b),
        ("gt", lambda v, b: v > b),
        ("le", lambda v, b: v <= b),
        ("lt", lambda v, b: v < b),
    ):
        if key in md and value is not None and not ok(value, md[key]):
            raise ConfigError(f"{where}={value!r} is out of range; it must be {RANGE_CHECKS[key]} {md[key]}.")


def gather_settings(section: dict[str, Any], own_fields: set[str]) -> dict[str, Any]:
    """A section whose keys that are not among ``own_fields`` are moved under its ``settings``
    mapping: a registered entry's own settings, written flat next to its name
    (``env: {name: mine, size: 3}`` reads as ``env: {name: mine, settings: {size: 3}}``)."""
    extra = {key: value for key, value in section.items() if key not in own_fields}
    settings = section.get("settings") or {}
    if not extra or not isinstance(settings, dict):
        return section
    return {**{k: v for k, v in section.items() if k in own_fields}, "settings": {**settings, **extra}}


def plain_copy(data: Any) -> Any:
    """A deep copy of plain data (nested dicts and lists; other values are shared)."""
    if isinstance(data, dict):
        return {k: plain_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain_copy(v) for v in data]
    return data


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted="a.b"``, creating sections on the way."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section.")
    node[keys[-1]] = value


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is refused: PyYAML keeps
    the last one silently, so a recipe that sets ``lr`` twice trains with whichever came last."""

    source = "<string>"


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # a merge (<<: *base) may be overridden by the mapping's own keys
        key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{loader.source}:{line}: the key {key_node.value!r} appears twice in one mapping (first at "
                f"line {seen[key]}); YAML readers keep only the last, so rlft refuses it. Keep one of them."
            )
        seen[key] = line
    yield from yaml.SafeLoader.construct_yaml_map(loader, node)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _strict_mapping)


def load_yaml(text: str, source: str = "<string>") -> Any:
    """``yaml.safe_load`` that refuses duplicate keys, naming the key and its line in ``source``."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML (numbers, lists, null...)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=50.")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), load_yaml(raw, f"--set {key.strip()}") if raw.strip() else None))
    return parsed


def with_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """A copy of ``data`` with the ``key.sub=value`` overrides applied (``data`` is unchanged)."""
    data = plain_copy(data)
    for key, value in parse_overrides(overrides or []):
        set_dotted(data, key, value)
    return data


def read_recipe_yaml(path: str | Path, hint: str = "") -> dict[str, Any]:
    """The mapping in a YAML recipe file, or a ConfigError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Recipe file {path} does not exist.{' ' + hint if hint else ''}")
    try:
        data = load_yaml(path.read_text(), str(path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Recipe {path} must be a mapping of fields or sections (key: value).")
    return data


def field_name(key: Any) -> Any:
    """The dataclass field of a recipe key: a Python keyword (``async``) is spelled with a trailing
    underscore in code (``async_``); every other key is its field's name."""
    return f"{key}_" if isinstance(key, str) and keyword.iskeyword(key) else key


def recipe_key(name: str) -> str:
    """The recipe key of a field: :func:`field_name` undone (``async_`` -> ``async``)."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def recipe_dict(config: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with recipe keys (``async``, not ``async_``): what config.yaml holds."""
    def keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {recipe_key(k) if isinstance(k, str) else k: keys(v) for k, v in value.items()}
        return value

    return keys(dataclasses.asdict(config))


def dataclass_markdown(cls: type[Any], prefix: str = "") -> list[str]:
    """Markdown lines documenting ``cls``: a table of its fields (key, type, default, help and
    range) under a ``## `prefix``` heading, then one such section per nested dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    lines = [f"## `{prefix or 'top level'}`", "", (cls.__doc__ or "").strip(), ""]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[type[Any], str]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{recipe_key(f.name)}" if prefix else recipe_key(f.name)
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            nested.append((tp, key))
            lines.append(f"| `{key}` | section | | {f.metadata['help']} See below. |")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        rng = ", ".join(f"{k} {f.metadata[k]}" for k in RANGE_CHECKS if k in f.metadata)
        help_text = f.metadata["help"] + (f" ({rng})" if rng else "")
        type_cell = type_name(tp).replace("|", "\\|")  # a pipe would end the table cell
        help_cell = help_text.replace("|", "\\|")
        lines.append(f"| `{key}` | {type_cell} | `{default!r}` | {help_cell} |")
    lines.append("")
    for tp, key in nested:
        lines += dataclass_markdown(tp, key)
    return lines

"""Counterfactual templates: groups of interchangeable demographic terms, prompts with a
``{term}`` slot, and fixed continuations.

The bias audit (``rlft.responsible.bias``) measures a policy on them; the ``fairness`` reward
(``rlft.rewards.fairness``) penalises the gap between groups during training. The shipped
attributes are in ``templates/bias_templates.yaml``; a user file of the same shape adds or
replaces attributes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from rlft.errors import RlftError

TEMPLATES_FILE = Path(__file__).with_name("templates") / "bias_templates.yaml"


@dataclass(frozen=True)
class Attribute:
    """Groups of interchangeable terms, templates with a ``{term}`` slot, and continuations."""

    name: str
    groups: dict[str, list[str]]
    templates: list[str]
    continuations: list[str]


def load_templates(extra: str | Path | None = None) -> dict[str, Attribute]:
    """The shipped attributes, with those of ``extra`` (same YAML shape) added or replacing."""
    raw = yaml.safe_load(TEMPLATES_FILE.read_text())
    if extra is not None:
        path = Path(extra)
        if not path.is_file():
            raise RlftError(f"Templates file {path} does not exist.")
        try:
            user = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise RlftError(f"{path} is not valid YAML/JSON: {exc}") from None
        if not isinstance(user, dict):
            raise RlftError(f"{path}: expected a mapping of attribute -> {{groups, templates, continuations}}.")
        raw.update(user)
    attributes = {}
    for name, spec in raw.items():
        where = f"attribute {name!r}" + (f" in {extra}" if extra else "")
        if not isinstance(spec, dict) or not isinstance(spec.get("groups"), dict) or len(spec["groups"]) < 2:
            raise RlftError(f"{where}: needs 'groups' with at least two groups of terms.")
        templates = spec.get("templates") or []
        if not templates or any("{term}" not in t for t in templates):
            raise RlftError(f"{where}: needs 'templates', each with a {{term}} slot.")
        attributes[name] = Attribute(name, {g: list(t) for g, t in spec["groups"].items()}, list(templates),
                                     list(spec.get("continuations") or []))
    return attributes

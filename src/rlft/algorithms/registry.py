"""A registry: one plain dict of named entries (name -> function or class), plus what the rest of
rlft must know about each entry, and the one call that adds an entry.

Recipes name registry entries (``algorithm.policy_loss: ppo_clip``) and are checked against the
live registry when they load, so an entry added by a plugin (``rlft.register_policy_loss``, which
calls :meth:`Registry.add` as the built-ins do) is as valid as a built-in one. Readers use the
registry as the dict it is (``POLICY_LOSSES[name](...)``); the checks read :meth:`Registry.info`.
"""

from __future__ import annotations

import re
from typing import Generic, TypeVar

E = TypeVar("E")
I = TypeVar("I")  # noqa: E741 - the metadata type

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class Registry(dict[str, E], Generic[E, I]):
    """Named entries of one kind (``kind``: how errors call them, e.g. "policy loss"), each with
    metadata of type ``I``; an entry added without metadata has ``default_info``."""

    def __init__(self, kind: str, default_info: I, entries: dict[str, E] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.default_info = default_info
        self.infos: dict[str, I] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: E, info: I | None = None, *, replace: bool = False) -> E:
        """Register ``entry`` as ``name`` with its metadata; returns ``entry`` (so it can decorate).

        A name already registered is refused unless ``replace`` (then the new entry and its
        metadata take its place): two plugins that pick the same name must not silently shadow
        each other, or a built-in.
        """
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(
                f"A {self.kind} name must be a non-empty string of letters, digits, '_', '.' or '-' "
                f"(it is written in recipes), got {name!r}."
            )
        if name in self and not replace:
            raise ValueError(
                f"A {self.kind} named {name!r} is already registered ({describe(self[name])}). Choose "
                f"another name, or pass replace=True to replace it."
            )
        self[name] = entry
        self.infos[name] = self.default_info if info is None else info
        return entry

    def info(self, name: str) -> I:
        """The metadata of ``name`` (the default for an entry put in the dict directly)."""
        return self.infos.get(name, self.default_info)


def describe(entry: object) -> str:
    """Where an entry comes from, for errors: ``module.qualname``."""
    module = getattr(entry, "__module__", None)
    qualname = getattr(entry, "__qualname__", None) or type(entry).__qualname__
    return f"{module}.{qualname}" if module else qualname

"""Plugins: a user's own code, imported before a recipe is checked, so that the names it registers
(``rlft.register_policy_loss``, ``register_env``, ...; docs/extending.md) are valid in the recipe.

A plugin is a Python file (``path/to/file.py``) or an importable module (``my_package.losses``),
named by ``--plugin`` on any command or by ``plugins:`` in a recipe. An installed package may also
register itself through the ``rlft.plugins`` entry-point group, loaded once per process before
any other plugin. Each plugin is imported once per process however often it is named, so its
registrations run once.

A run records the plugins of its recipe and its command line in ``config.yaml`` (a file as its
absolute path, a module by name), so that ``--resume``, ``rlft eval``, ``rlft report`` and
``rlft compare`` import them again (:func:`load_recorded_plugins`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import yaml

from rlft.errors import ConfigError

ENTRY_POINT_GROUP = "rlft.plugins"

_loaded: dict[str, ModuleType] = {}  # plugin key -> its module, so that each is imported once
_entry_points_loaded = False


def is_file(spec: str) -> bool:
    """A plugin named by its file (``x.py``, ``dir/x``) rather than as a module (``pkg.mod``)."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def plugin_key(spec: str) -> str:
    """How a plugin is recorded: a file as its absolute path, a module by its name."""
    return str(Path(spec).expanduser().resolve()) if is_file(spec) else spec


def load_plugins(specs: Iterable[str], source: str = "--plugin") -> list[str]:
    """Import the entry-point plugins (once) and each of ``specs``; returns their keys
    (:func:`plugin_key`) in order, without repeats. ``source`` says where the list was given,
    for errors (``--plugin``, ``plugins:``, ``recorded in RUN/config.yaml``)."""
    load_entry_points()
    keys: list[str] = []
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(
                f"Plugin {spec!r} ({source}) is not a plugin: give a .py file or a module name, e.g. my_loss.py."
            )
        key = plugin_key(spec.strip())
        if key not in _loaded:
            _loaded[key] = _import_file(key, spec.strip(), source) if is_file(spec) else _import_module(key, source)
        if key not in keys:
            keys.append(key)
    return keys


def _import_file(path: str, given: str, source: str) -> ModuleType:
    file = Path(path)
    if not file.is_file():
        siblings = [p.name for p in file.parent.glob("*.py")] if file.parent.is_dir() else []
        close = difflib.get_close_matches(file.name, siblings, n=1)
        hint = f" Did you mean {str(Path(given).parent / close[0])!r}?" if close else ""
        where = f" (no file {path})" if given != path else ""
        raise ConfigError(f"Plugin file {given!r} ({source}) does not exist{where}.{hint}")
    name = f"rlft_plugin_{file.stem}"
    if name in sys.modules:  # another file with the same name: keep both
        name += "_" + hashlib.sha256(path.encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing resolve the plugin's names through it
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise _failed(given, source, exc, path) from None
    return module


def _import_module(name: str, source: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f"Plugin module {name!r} ({source}) cannot be imported: no module named {exc.name!r}. "
                f"Install it, put its folder on PYTHONPATH, or give the path of its file ({name}.py)."
            ) from None
        raise _failed(name, source, exc, None) from None
    except (Exception, SystemExit) as exc:
        raise _failed(name, source, exc, None) from None


def _failed(name: str, source: str, exc: BaseException, file: str | None) -> ConfigError:
    """One error for a plugin that raised while it was imported, with the plugin's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if file is None or f.filename == file]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return ConfigError(f"Plugin {name!r} ({source}) failed while importing{where}: {type(exc).__name__}: {exc}")


def load_entry_points() -> None:
    """Import every plugin of the ``rlft.plugins`` entry-point group, once per process. An entry
    point names a module (importing it registers) or a function (called once, without arguments)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = getattr(point.dist, "name", None) or "?"
        try:
            loaded = point.load()
            if callable(loaded) and not isinstance(loaded, ModuleType):
                loaded()
        except Exception as exc:
            raise ConfigError(
                f"The rlft plugin {point.name!r} of the installed package {package} (entry point "
                f"{point.value}) failed while loading: {type(exc).__name__}: {exc}. Fix it, or uninstall "
                f"the package (pip uninstall {package})."
            ) from None


def recorded_plugins(run_dir: str | Path) -> list[str]:
    """The plugins a run recorded in its config.yaml (none for a folder that is not a run)."""
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        return []
    recipe = yaml.safe_load(config.read_text()) or {}
    plugins = recipe.get("plugins") if isinstance(recipe, dict) else None
    return [str(p) for p in plugins] if isinstance(plugins, list) else []


def load_recorded_plugins(run_dir: str | Path) -> list[str]:
    """Import the plugins a run was trained with; a missing one is one error naming it."""
    config = Path(run_dir) / "config.yaml"
    try:
        return load_plugins(recorded_plugins(run_dir), f"recorded in {config}")
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} {run_dir} was trained with it: restore it (or install its module), then run the command again."
        ) from None


def with_plugins(recipe: dict, extra: Iterable[str] = ()) -> dict:
    """A copy of a raw recipe mapping whose plugins (its ``plugins:`` list, then ``extra``, given by
    --plugin) are imported and recorded as :func:`plugin_key` gives them, without repeats."""
    listed = recipe.get("plugins") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ConfigError(
            f"plugins={listed!r} must be a list of .py files or module names, e.g. plugins: [my_loss.py, my_package.envs]."
        )
    keys = load_plugins(listed, "plugins: in the recipe") + load_plugins(extra, "--plugin")
    return {**recipe, "plugins": list(dict.fromkeys(keys))}

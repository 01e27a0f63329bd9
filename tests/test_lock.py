"""requirements.lock covers every dependency pyproject.toml declares, with hashes, and the set-up
installed exactly it (so the figures in the docs are reproducible: README, Two commands)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, like the lock itself

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every entry of requirements.lock."""
    entries: dict[str, tuple[str, int]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\]+)", block)
        if head:
            entries[normalise(head.group(1))] = (head.group(2), block.count("--hash=sha256:"))
    return entries


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {normalise(re.match(r"[A-Za-z0-9_.-]+", spec).group(0)) for spec in specs}


def test_every_declared_dependency_is_locked_with_hashes_and_torch_is_left_to_torch_spec():
    lock = locked()
    missing = sorted(declared() - lock.keys() - {"torch"})
    assert not missing, f"not in requirements.lock: {missing}; run `make lock`"
    assert "torch" not in lock  # TORCH_SPEC installs it (a CUDA build on a GPU machine)
    assert len(lock) > 50 and all(hashes >= 1 for _, hashes in lock.values())


def test_the_installed_packages_are_the_locked_versions():
    wrong = []
    for name, (version, _) in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed")
            continue
        if installed != version:
            wrong.append(f"{name}: {installed} installed, {version} locked")
    assert not wrong, "the environment is not the locked set (make setup installs it): " + "; ".join(wrong)

"""Opening the run folder of a recipe other than the main one: the multi-turn agent recipe
(``rlft agent``) and the reward-model recipe (``rlft rm train``).

The rules are those of ``trainers/setup.py``'s ``open_run`` for the main recipe: never overwrite
an existing run; on ``--resume``, refuse a recipe or data files that changed (a field added to
rlft since the run started is accepted at its default), move a damaged checkpoint aside before
anything is written, then write ``config.yaml`` (the resolved recipe) and open the audit log; the
folder's lock is taken before any of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rlft.common.folder_lock import FolderLock
from rlft.common.hashing import file_sha256, folder_sha256
from rlft.common.run_folder import ResumablePrivacy, RunFolder, write_json_atomic, write_text_atomic
from rlft.errors import RlftError
from rlft.trainers.checkpoint import select_resume_checkpoint
from rlft.trainers.run import RunSession


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fingerprint(recipe: Mapping[str, Any], resumable: frozenset[str] = frozenset()) -> str:
    """A short hash of every field a resumed run may not change."""
    flat = {k: v for k, v in flatten(recipe).items() if k not in resumable}
    return hashlib.sha256(repr(sorted(flat.items())).encode()).hexdigest()[:16]


def data_hashes(sources: Mapping[str, str | None]) -> dict[str, str]:
    """The SHA-256 of each named data file or folder that exists (a missing one is the loader's
    error to report)."""
    hashes = {}
    for name, path in sources.items():
        if path and Path(path).exists():
            hashes[name] = folder_sha256(Path(path)) if Path(path).is_dir() else file_sha256(Path(path))
    return hashes


def refuse_changes(run: RunFolder, recipe: Mapping[str, Any], defaults: Mapping[str, Any],
                   resumable: frozenset[str], hashes: Mapping[str, str]) -> None:
    """On resume: raise unless the recipe (but for ``resumable`` fields) and the data are those
    the run started with."""
    old, new, added = flatten(yaml.safe_load(run.config.read_text())), flatten(recipe), flatten(defaults)
    changed = [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and k not in resumable and not (k not in old and new.get(k) == added.get(k))
    ]
    if changed:
        raise RlftError(
            f"--resume: the checkpoints in {run.root} come from another recipe; it differs in " + "; ".join(changed)
            + ". Resume with the original recipe, or start a new run in another folder."
        )
    recorded = json.loads((run.root / "data.json").read_text()) if (run.root / "data.json").exists() else {}
    moved = [name for name, sha in hashes.items() if recorded.get(name, {}).get("sha256") not in (None, sha)]
    if moved:
        raise RlftError(
            f"--resume: the content of {', '.join(moved)} changed since the run started (hashes in "
            f"{run.root / 'data.json'}); a resumed run must train on the same data. Restore the data, or "
            "start a new run in another folder."
        )


def open_session(
    root: str | Path,
    recipe: Mapping[str, Any],
    *,
    resume: bool,
    defaults: Mapping[str, Any],
    resumable: frozenset[str] = frozenset(),
    planned_steps: int | None = None,
    data: Mapping[str, str | None] | None = None,
    copies: tuple[str, ...] = (),
    privacy: Any = None,
) -> RunSession:
    """Create (or, with ``resume``, reopen) the run folder ``root`` of ``recipe`` (a plain dict).

    ``defaults``: the recipe's defaults (a field missing from an old run's config.yaml is accepted
    at its default); ``resumable``: the fields a resumed run may change (extending it);
    ``planned_steps``: the steps the recipe asks for, when known before its data is read (a resume
    past them is refused); ``data``: the data files by recipe field, hashed into ``data.json``;
    ``copies``: more file names to write the recipe to (``config.json``, ``recipe.yaml``);
    ``privacy``: the run's PII scrubber, whose counts then survive resuming.

    The session holds the folder's lock (one process per run): ``with session:`` releases it.
    """
    run = RunFolder(root, key="output_dir" if "output_dir" in recipe else "run_dir")
    lock = run.claim(resume)  # one process per run folder, from before its first write
    with lock.released_on_error():
        return _open_claimed(run, lock, recipe, resume, defaults, resumable, planned_steps, data, copies, privacy)


def _open_claimed(
    run: RunFolder, lock: FolderLock, recipe: Mapping[str, Any], resume: bool, defaults: Mapping[str, Any],
    resumable: frozenset[str], planned_steps: int | None, data: Mapping[str, str | None] | None,
    copies: tuple[str, ...], privacy: Any,
) -> RunSession:
    hashes = data_hashes(data or {})
    if resume:
        refuse_changes(run, recipe, defaults, resumable, hashes)
        select_resume_checkpoint(run.root, run.checkpoints, planned_steps)
    text = yaml.safe_dump(dict(recipe), sort_keys=False)
    write_text_atomic(run.config, text)
    for name in copies:
        write_text_atomic(run.root / name, json.dumps(recipe, indent=2) + "\n" if name.endswith(".json") else text)
    if hashes:
        write_json_atomic(run.root / "data.json", {k: {"path": data[k], "sha256": v} for k, v in hashes.items()})  # type: ignore[index]
    if privacy is not None:
        privacy = ResumablePrivacy(privacy, run.root, resume)
    return RunSession.start(run, dict(recipe), fingerprint(recipe, resumable), resume, privacy=privacy, lock=lock,
                            data_sha256=hashes or None)

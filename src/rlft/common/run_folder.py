"""One folder per run. Layout (documented in docs/run-folder.md):

    RUN/
      config.yaml            the resolved recipe (every default filled in)
      base_model/            the warm-started policy RL starts from (a Hugging Face model folder)
      base_eval.json         held-out accuracy of the base policy
      metrics.jsonl          one JSON object per RL step (see docs/metrics.md)
      evals.jsonl            held-out evaluations during training
      samples.jsonl          sample completions at each evaluation
      checkpoints/step_N/    model.safetensors, optimizer.pt, trainer_state.json (atomic)
      final_model/           the trained policy (a Hugging Face model folder)
      summary.json           before/after accuracy, steps, time
      privacy.json           PII counts (see rlft.responsible.privacy)
      privacy_state.json     short digests of the texts already counted, so a resumed run merges
      running.json           while a process trains it: pid, host, start, headline, planned steps
      .lock                  held (fcntl.flock) by the one process that writes the run; names its pid
      trackers.json          each tracker's run id and last step (log.report_to; docs/trackers.md)
      tensorboard/ wandb/ mlflow.db mlartifacts/ trackio/   the trackers' own files

A folder that holds only what a run writes before its model is loaded (``config.yaml`` and the
audit log) is a run that never started, for example because ``model.path`` was wrong: starting
it again without ``--resume`` is allowed and continues its audit log.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rlft.common import strict_json
from rlft.common.folder_lock import FolderLock
from rlft.errors import RlftError

# What a run writes before its model is loaded; a folder holding nothing else never started.
BEFORE_START = {
    "config.yaml",
    "config.json",  # the agent recipe's copy of config.yaml
    "recipe.yaml",  # the reward-model recipe's copy of config.yaml
    "data.json",
    "python_task.json",
    "audit.jsonl",
    "audit.head",
    "audit.tmp",
    # Trackers start before the model loads (docs/trackers.md).
    "trackers.json",
    "tensorboard",
    "wandb",
    "mlflow.db",
    "mlartifacts",
    "trackio",
}


# What a second process opening a run folder in use is told (rlft.common.folder_lock).
RUN_IN_USE = (
    "Run folder {folder} is in use by another process: {holder}. Two processes in one run would "
    "write over each other's metrics and checkpoints, so this one stops here (nothing was changed). "
    "Wait for that run to end (`rlft runs` shows it as running) or stop it (kill {pid}), then run "
    "the command again; or choose another folder with --set run_dir=PATH."
)


class RunFolder:
    def __init__(self, root: str | Path, key: str = "run_dir") -> None:
        self.root = Path(root)
        self.key = key  # the recipe field naming the folder, for the hints of claim's errors

    config = property(lambda self: self.root / "config.yaml")
    base_model = property(lambda self: self.root / "base_model")
    base_eval = property(lambda self: self.root / "base_eval.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    evals = property(lambda self: self.root / "evals.jsonl")
    samples = property(lambda self: self.root / "samples.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    final_model = property(lambda self: self.root / "final_model")
    summary = property(lambda self: self.root / "summary.json")
    # While a process trains the run: its pid, host and start time (gone when the run ends).
    running = property(lambda self: self.root / "running.json")

    def append_jsonl(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as fh:
            fh.write(strict_json.dumps(record, path.name) + "\n")
            fh.flush()

    def read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        """The records of a JSONL file; a torn last line (a crash or a full disk mid-write) is
        dropped, since the step it belonged to is redone on resume."""
        if not path.exists():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise RlftError(f"{path}: line {i + 1} is not valid JSON (edited?).") from None
        return records

    def claim(self, resume: bool) -> FolderLock:
        """Check that a run can be started (or, with ``resume``, continued) here and take the
        folder's lock (``.lock``, see :mod:`rlft.common.folder_lock`) before anything else is
        written; raise one clear error otherwise. Creates the folder and its lock file only. The
        caller releases the lock when the run ends (the OS does if the process dies)."""
        root = self.root
        entries, is_run = self._entries()
        if resume and not is_run:
            if entries:
                raise RlftError(
                    f"--resume: {root} is not an rlft run folder (it holds files but no config.yaml), so "
                    "there is nothing to resume. Give the folder of the run to resume, or start a new "
                    f"run in a new or empty folder with --set {self.key}=PATH."
                )
            raise RlftError(f"--resume: {root} holds no run yet. Start it without --resume.")
        if not resume and entries and not is_run:
            raise RlftError(
                f"Run folder {root} is not empty and holds no rlft run (no config.yaml); rlft "
                f"does not write into it. Choose a new or empty folder with --set {self.key}=PATH."
            )
        try:
            lock = FolderLock.acquire(root, RUN_IN_USE)
        except OSError as exc:
            raise self._unwritable(exc) from None
        with lock.released_on_error():
            try:  # the lock file may predate a folder made read-only since
                fd, probe = tempfile.mkstemp(dir=root, prefix=".write_check.")
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise self._unwritable(exc) from None
            entries, is_run = self._entries()  # as the folder is now that no other process writes it
            if not resume and entries:
                if not set(entries) <= BEFORE_START:
                    raise RlftError(
                        f"Run folder {root} already holds a run. Continue it with --resume, or choose "
                        "another folder with --set run_dir=PATH (nothing was changed)."
                    )
                print(
                    f"rlft: {root} holds a run that never started (no base model); starting it again.",
                    file=sys.stderr,
                )
        return lock

    def _unwritable(self, exc: OSError) -> RlftError:
        return RlftError(
            f"Cannot write into run folder {self.root}: {exc.strerror}. Choose a writable folder with "
            "--set run_dir=PATH."
        )

    def _entries(self) -> tuple[list[str], bool]:
        """(the folder's entries but hidden ones, whether it holds config.yaml)."""
        root = self.root
        try:
            if root.exists() and not root.is_dir():
                raise RlftError(
                    f"run_dir {root} is a file, not a folder. Choose a folder with --set run_dir=PATH."
                )
            entries = (
                [p.name for p in root.iterdir() if not p.name.startswith(".")]
                if root.exists()
                else []
            )
            return entries, self.config.exists()
        except OSError as exc:  # e.g. a parent folder this user may not enter
            raise RlftError(
                f"Cannot read run folder {root}: {exc.strerror}. Choose a folder you can read and "
                "write with --set run_dir=PATH."
            ) from None

    def truncate_jsonl(self, path: Path, keep_up_to_step: int) -> None:
        """Drop records written after ``keep_up_to_step`` (they are redone on resume)."""
        records = [r for r in self.read_jsonl(path) if r.get("step", 0) <= keep_up_to_step]
        write_text_atomic(path, "".join(strict_json.dumps(r, path.name) + "\n" for r in records))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file; ``mode``:
    the file's permissions (mkstemp's own are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, strict_json.dumps(data, path.name, indent=2) + "\n")


# errno -> what the user can do about it; anything else is a bug and keeps its traceback.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full. Free some space and run the command again (a training run continues with --resume)",
    errno.EDQUOT: "the disk quota is used up. Free some space and run the command again (a training run continues with --resume)",
    errno.EROFS: "the file system is read-only. Choose a writable location (for a run: --set run_dir=PATH)",
    errno.EACCES: "permission denied. Choose a location you can write to (for a run: --set run_dir=PATH)",
    errno.EPERM: "operation not permitted. Choose a location you can write to (for a run: --set run_dir=PATH)",
    errno.ENOTDIR: "a part of the path is a file, not a folder. Choose another path",
}


def os_error_message(exc: OSError) -> str | None:
    """A one-line message for an OS error the user can fix (full disk, read-only or forbidden
    folder), or None for any other error."""
    hint = _OS_ERROR_HINTS.get(exc.errno) if exc.errno is not None else None
    if hint is None:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or os.strerror(exc.errno or 0)}{where}: {hint}."


def _digest(*parts: str) -> str:
    text = "\0".join(parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class ResumablePrivacy:
    """A run's PII scrubber (:class:`rlft.responsible.privacy.RunScrubber`) whose counts survive
    resuming.

    ``privacy.json`` counts distinct texts, and a resumed process sees only part of them (the
    base model and the earlier steps are not redone), so writing its own counts would lose the
    rest. Each write therefore also keeps ``privacy_state.json``: an 8-byte digest of every text
    and every (field, text) pair counted so far, never the text. A resumed run adds only what
    its digests do not already hold, so the merged counts equal an uninterrupted run's. Everything
    else is delegated to the scrubber.
    """

    STATE = "privacy_state.json"

    def __init__(self, scrubber: Any, run_root: Path, resume: bool) -> None:
        self._inner = scrubber
        self._before: dict[str, Any] | None = None
        self._texts: set[str] = set()
        self._counted: set[str] = set()
        state_path = Path(run_root) / self.STATE
        if resume and state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                self._before = state["summary"]
                self._texts, self._counted = set(state["texts"]), set(state["counted"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RlftError(
                    f"{state_path} is damaged; delete it (privacy counts then restart)."
                ) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _mine(self) -> tuple[dict[str, Any], dict[str, Any], Any]:
        seen = getattr(self._inner, "_seen", {})  # text -> ScrubResult
        counted: set[tuple[str, str, bool]] = getattr(self._inner, "_counted", set())  # (field, text, is_target)
        return (
            seen,
            {_digest(f, v, str(t)): (f, v, t) for f, v, t in counted},
            self._inner.summary(),
        )

    def summary(self) -> dict[str, Any]:
        seen, counted, mine = self._mine()
        before = self._before
        if before is None or not mine.get("scrub_pii"):
            return mine
        counts: Counter[str] = Counter(before.get("counts", {}))
        fields = {k: Counter(v) for k, v in before.get("fields", {}).items()}
        kept = {k: Counter(v) for k, v in before.get("pii_kept_in_targets", {}).items()}
        with_pii = before.get("texts_with_pii", 0)
        for key, (field, text, target) in counted.items():
            if key in self._counted:
                continue
            found = seen[text].counts
            if target:
                kept.setdefault(field, Counter()).update(found)
            else:
                counts.update(found)
                fields.setdefault(field, Counter()).update(found)
                with_pii += 1
        new_texts = sum(_digest(t) not in self._texts for t in seen)

        def ordered(c: Counter[str]) -> dict[str, int]:
            return dict(sorted(c.items()))

        return {
            **mine,
            "counts": ordered(counts),
            "fields": {k: ordered(v) for k, v in sorted(fields.items())},
            "target_fields": sorted(
                set(before.get("target_fields", [])) | set(mine.get("target_fields", []))
            ),
            "pii_kept_in_targets": {k: ordered(v) for k, v in sorted(kept.items())},
            "distinct_texts": before.get("distinct_texts", 0) + new_texts,
            "texts_with_pii": with_pii,
        }

    def write(self, run_dir: str | Path) -> Path:
        summary = self.summary()
        seen, counted, _ = self._mine()
        state = {
            "summary": summary,
            "texts": sorted(self._texts | {_digest(t) for t in seen}),
            "counted": sorted(self._counted | set(counted)),
        }
        path = Path(run_dir) / "privacy.json"
        write_json_atomic(path, summary)
        write_text_atomic(Path(run_dir) / self.STATE, json.dumps(state))
        return path

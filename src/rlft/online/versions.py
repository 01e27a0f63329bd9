"""What the online loop keeps on disk, so a restarted server loses nothing.

::

    OUTPUT_DIR/
      state.json          served version, newest version, last judgement trained on, failures
      versions/vN/        every version ever promoted (a plain Hugging Face model folder)
      adapters/KEY/       a user's LoRA adapter (adapter.safetensors + meta.json); KEY hashes the
                          user's name, so no name appears in a path
      rollback.json       a rollback asked for by `rlft online rollback`, taken by the loop
      rounds.jsonl        one line per round: data, gate, outcome
      audit.jsonl         the tamper-evident log (rlft.responsible.audit_log)

Every file is written atomically (a temporary sibling renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlft.common import strict_json
from rlft.common.folder_lock import FolderLock
from rlft.common.run_folder import write_json_atomic
from rlft.errors import RlftError


@dataclass
class OnlineState:
    """The loop's progress; ``last_judgement_id`` is the newest judgement a round has used."""

    served_version: int = 1
    latest_version: int = 1
    last_judgement_id: int = 0
    judgements_at_last_round: int = 0
    rounds: int = 0
    consecutive_failures: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # every promotion and rollback


def adapter_key(user: str) -> str:
    return hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]


class VersionStore:
    """The loop's folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.state_path = self.root / "state.json"
        self.rollback_path = self.root / "rollback.json"
        self._lock: FolderLock | None = None

    # -- state ------------------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold ``OUTPUT_DIR/.lock`` (``rlft.common.folder_lock``) until the process exits or
        :meth:`unlock`: two loops writing one folder would lose each other's versions and state."""
        self._lock = FolderLock.acquire(
            self.root, "Another rlft online is using {folder}: {holder}. Stop it first (Ctrl-C in its "
            "terminal, or kill {pid}), or give another output_dir.",
        )

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def exists(self) -> bool:
        return self.state_path.is_file()

    def load_state(self) -> OnlineState:
        if not self.exists():
            return OnlineState()
        try:
            return OnlineState(**json.loads(self.state_path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise RlftError(
                f"{self.state_path} is not an rlft online state ({exc}); restore it from a backup "
                "or give another output_dir."
            ) from None

    def save_state(self, state: OnlineState) -> None:
        write_json_atomic(self.state_path, asdict(state))

    # -- versions ---------------------------------------------------------------------------------

    def version_folder(self, version: int) -> Path:
        return self.root / "versions" / f"v{version}"

    def versions(self) -> list[int]:
        folder = self.root / "versions"
        found = [p.name[1:] for p in folder.glob("v*") if (p / "config.json").is_file()]
        return sorted(int(v) for v in found if v.isdigit())

    def save_version(self, version: int, model: Any, tokenizer: Any) -> Path:
        from rlft.models.loading import save_model_atomic

        folder = self.version_folder(version)
        save_model_atomic(model, tokenizer, folder)
        return folder

    def load_version(self, version: int) -> Any:
        """The version's model (float32, eval mode)."""
        from rlft.models.loading import load_model

        folder = self.version_folder(version)
        if not (folder / "config.json").is_file():
            raise RlftError(
                f"Version {version} is not in {self.root / 'versions'}; versions kept: {self.versions()}."
            )
        return load_model(str(folder)).eval()

    # -- adapters ---------------------------------------------------------------------------------

    def adapter_folder(self, user: str) -> Path:
        return self.root / "adapters" / adapter_key(user)

    def save_adapter(self, user: str, lora_state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        folder = self.adapter_folder(user)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".adapter.safetensors.tmp"
        save_file({k: v.detach().contiguous() for k, v in lora_state.items()}, str(tmp))
        tmp.replace(folder / "adapter.safetensors")
        write_json_atomic(folder / "meta.json", {"user": user, **meta})

    def load_adapters(self) -> dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """user -> (LoRA state, meta) for every complete adapter folder."""
        from safetensors.torch import load_file

        out = {}
        for folder in sorted((self.root / "adapters").glob("*")):
            meta_path, weights = folder / "meta.json", folder / "adapter.safetensors"
            if meta_path.is_file() and weights.is_file():
                meta = json.loads(meta_path.read_text())
                out[meta["user"]] = (load_file(str(weights)), meta)
        return out

    def remove_adapter(self, user: str) -> bool:
        folder = self.adapter_folder(user)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True

    # -- rollback requests (from another process) -------------------------------------------------

    def request_rollback(self, version: int) -> None:
        if version not in self.versions():
            raise RlftError(f"No version {version} in {self.root}; versions kept: {self.versions()}.")
        write_json_atomic(self.rollback_path, {"version": version})

    def take_rollback_request(self) -> int | None:
        if not self.rollback_path.is_file():
            return None
        try:
            version = int(json.loads(self.rollback_path.read_text())["version"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            version = None  # a torn or hand-edited request is dropped, not retried forever
        self.rollback_path.unlink(missing_ok=True)
        return version

    def append_round(self, record: dict[str, Any]) -> None:
        with (self.root / "rounds.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(strict_json.dumps(record, "rounds.jsonl", sort_keys=True) + "\n")

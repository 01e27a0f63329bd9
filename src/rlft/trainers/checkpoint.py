"""Atomic checkpoints: a checkpoint directory appears complete or not at all.

Each checkpoint is written into a temporary sibling directory, fsynced, then renamed into place
with ``os.replace``; a run killed mid-write leaves only a ``.tmp`` directory, which is ignored and
cleaned up on the next save.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@dataclass
class TrainerState:
    """Everything besides weights and optimizer that a resumed run needs."""

    step: int = 0
    """RL steps completed. The data position is derived from it (batch ``step`` is drawn with a
    generator seeded by ``(seed, step)``), so a resumed run sees exactly the same prompts."""
    consecutive_nonfinite: int = 0
    skipped_steps: int = 0
    kl_coef: float = 0.0
    recipe_fingerprint: str = ""


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    keep: int,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{state.step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{final.name}.", suffix=".tmp"))
    # Tied embeddings share storage; safetensors refuses shared tensors, so store contiguous copies.
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
    for path in tmp.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old)
    for stale in folder.glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.exists():
        return []
    done = [p for p in folder.glob("step_*") if (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> TrainerState:
    weights = load_file(str(path / "model.safetensors"))
    model.load_state_dict(weights)
    extra = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    _set_rng_state(extra["rng"])
    return TrainerState(**json.loads((path / "trainer_state.json").read_text()))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Atomic checkpoints: a checkpoint directory appears complete or not at all.

Each checkpoint is written into a temporary sibling directory, fsynced, then renamed into place
with ``os.replace``; a run killed mid-write leaves only a ``.tmp`` directory, which is ignored and
cleaned up on the next save.

A checkpoint also holds ``checksums.json``, the SHA-256 of each of its files, and the audit log
records the folder's hash. On resume, :func:`select_resume_checkpoint` checks both before anything
is written: a damaged checkpoint (a flipped bit, a truncated file) is moved aside to
``checkpoints/corrupt_step_N`` and the run resumes from the newest intact one, with a warning.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlft.common import strict_json
from rlft.common.hashing import combine_file_hashes, file_sha256, folder_file_hashes
from rlft.common.optim import check_finite_weights
from rlft.errors import NonFiniteError, RlftError
from rlft.responsible.audit_log import AuditLog
from rlft.trainers.parallel import Ranks

MANIFEST = "checksums.json"
SHARDED_INDEX = ".metadata"  # torch.distributed.checkpoint's index: the checkpoint is sharded (fsdp)


@dataclass
class TrainerState:
    """The harness's bookkeeping that a resumed run needs besides weights and optimisers."""

    step: int = 0
    """Steps completed. Each trainer derives its data position from it (an RL batch is drawn with
    a generator seeded by ``(seed, step)``), so a resumed run sees exactly the same data."""
    consecutive_nonfinite: int = 0
    skipped_steps: int = 0
    recipe_fingerprint: str = ""


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()  # (CPU byte tensors, one per GPU)
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states a checkpoint saved. The CUDA states are restored where this process
    sees as many GPUs; a checkpoint made on a GPU resumes on a CPU-only machine without them (its
    sampling noise on the CPU is drawn from the step generators, which do not depend on them)."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainerState,
    keep: int,
    trainer_state: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
) -> Path:
    """Write checkpoint ``step_N`` atomically: weights, optimisers, RNG states, the harness's
    :class:`TrainerState` and the trainer's own state (``trainer_state``: a KL coefficient, a
    replay buffer, a generator; its plain numbers are also copied into trainer_state.json).

    With several ranks every rank calls it: ddp replicas are identical, so rank 0 writes the
    one-process checkpoint; fsdp ranks each write their shards with ``torch.distributed.checkpoint``
    (``*.distcp`` and ``.metadata`` in place of ``model.safetensors`` and the optimisers)."""
    ranks = ranks or Ranks()
    sharded = ranks.mode == "fsdp"
    if not sharded and not ranks.is_main:
        ranks.barrier()  # rank 0 writes; the others wait for it
        return folder / f"step_{state.step:07d}"
    final = folder / f"step_{state.step:07d}"
    tmp = None
    if ranks.is_main:
        if not sharded:
            check_finite_weights(model, f"checkpoint of step {state.step}")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{final.name}.", suffix=".tmp"))
    own = dict(trainer_state or {})
    if sharded:
        tmp = Path(ranks.broadcast(str(tmp)))
        save_sharded(tmp, model, optimizers, ranks, f"checkpoint of step {state.step}")
        if not ranks.is_main:
            ranks.barrier()
            return final
        torch.save({"rng": _rng_state(), "trainer": own}, tmp / "optimizer.pt")
    else:
        assert tmp is not None
        # Tied embeddings share storage; safetensors refuses shared tensors: store contiguous copies.
        weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(
            {"optimizers": {k: o.state_dict() for k, o in optimizers.items()}, "rng": _rng_state(), "trainer": own},
            tmp / "optimizer.pt",
        )
    assert tmp is not None
    readable = {k: v for k, v in own.items() if isinstance(v, (bool, int, float, str))}
    (tmp / "trainer_state.json").write_text(strict_json.dumps({**asdict(state), **readable}, "trainer_state.json", indent=2))
    checksums = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
    (tmp / MANIFEST).write_text(json.dumps(checksums, indent=2) + "\n")
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
    ranks.barrier()
    return final


def save_sharded(
    folder: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer], ranks: Ranks, what: str
) -> None:
    """Every rank writes its shards of the weights and optimiser states into ``folder``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
    finite = all(bool(torch.isfinite(p.detach().sum())) for p in local if p.is_floating_point())
    if not ranks.all_true(finite):
        raise NonFiniteError(
            f"Not saving the {what}: the weights are not finite (NaN or inf in a shard). Lower "
            "train.learning_rate and start a new run; the checkpoints already written are intact."
        )
    model_state, optim_state = get_state_dict(model, list(optimizers.values()))
    dcp.save({"model": model_state, "optimizers": optim_state}, checkpoint_id=str(folder))


def load_sharded(path: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Load a sharded checkpoint into ``model`` and ``optimizers`` on any number of ranks (one
    process included): ``torch.distributed.checkpoint`` reshards as it reads."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, list(optimizers.values()))
    both = {"model": model_state, "optimizers": optim_state}
    dcp.load(both, checkpoint_id=str(path))
    set_state_dict(model, list(optimizers.values()), model_state_dict=both["model"],
                   optim_state_dict=both["optimizers"])


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.exists():
        return []
    done = [p for p in folder.glob("step_*") if (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer], ranks: Ranks | None = None
) -> tuple[TrainerState, dict[str, Any]]:
    """Load weights, optimisers and RNG states in place; returns (the harness's state, the
    trainer's own state). A sharded (fsdp) checkpoint loads on any number of ranks; a
    one-process (or ddp) one on one process or ddp ranks."""
    ranks = ranks or Ranks()
    sharded = (path / SHARDED_INDEX).exists()
    if ranks.mode == "fsdp" and not sharded:
        raise RlftError(
            f"Checkpoint {path} was written without train.parallel: fsdp (whole weights in model.safetensors), "
            "and this run shards the model. Resume it with train.parallel: ddp (or one process)."
        )
    try:
        # On the CPU whatever device saved it: a GPU checkpoint resumes on a CPU-only machine;
        # load_state_dict then puts each tensor on its parameter's device.
        extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        if sharded:
            load_sharded(path, model, optimizers)
        else:
            weights = load_file(str(path / "model.safetensors"))  # CPU tensors, copied into place
    except Exception as exc:  # noqa: BLE001 - a damaged file raises anything from its parser
        raise RlftError(
            f"Checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}). Move it "
            "aside (or delete it) and resume again to continue from the one before it."
        ) from None
    if not sharded:
        model.load_state_dict(weights)
        # Checkpoints written before trainers could have several optimisers hold one, "optimizer".
        saved = extra["optimizers"] if "optimizers" in extra else {"optimizer": extra["optimizer"]}
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(saved[name])
    _set_rng_state(extra["rng"])
    recorded = json.loads((path / "trainer_state.json").read_text())
    known = {f.name for f in dataclass_fields(TrainerState)}
    state = TrainerState(**{k: v for k, v in recorded.items() if k in known})
    # The trainer's own state; an older checkpoint kept its numbers (kl_coef) in the JSON only.
    own = {k: v for k, v in recorded.items() if k not in known}
    own.update(extra.get("trainer", {}))
    return state, own


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_problem(path: Path, recorded_sha256: str | None) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted, or None when it is intact.

    Checks every file against the checkpoint's own ``checksums.json`` and the whole folder against
    ``recorded_sha256`` (its hash in the audit log, when recorded). A checkpoint written before
    checksums existed, with no recorded hash, cannot be checked and is accepted.
    """
    hashes = folder_file_hashes(path)
    if MANIFEST in hashes:  # checked first: it names the damaged file
        try:
            expected = json.loads((path / MANIFEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{MANIFEST} is unreadable"
        for name, sha in expected.items():
            if name not in hashes:
                return f"{name} is missing"
            if hashes[name] != sha:
                return f"{name} does not match its SHA-256 in {MANIFEST}"
    if recorded_sha256 is not None and combine_file_hashes(hashes) != recorded_sha256:
        return "its SHA-256 differs from the one recorded in audit.jsonl"
    return None


def recorded_checkpoint_hashes(run_root: Path) -> dict[str, str]:
    """The latest SHA-256 the audit log records for each checkpoint path (``checkpoints/step_N``)."""
    recorded: dict[str, str] = {}
    for record in AuditLog(run_root, key_from_env=False).records():
        fields = record.get("fields") or {}
        if record.get("event") == "checkpoint" and "path" in fields and "sha256" in fields:
            recorded[fields["path"]] = fields["sha256"]
    return recorded


def select_resume_checkpoint(
    run_root: Path, folder: Path, planned_steps: int | None = None
) -> Path | None:
    """The newest intact checkpoint under ``folder``, checked before a resumed run writes anything.

    Damaged checkpoints newer than it are moved aside to ``corrupt_step_N`` (kept for inspection,
    never loaded) with a warning on stderr. Raises when checkpoints exist but none is intact, and
    when ``planned_steps`` (the recipe's ``train.steps``) is below the steps already completed, so
    that ``config.yaml`` and ``summary.json`` cannot disagree.
    """
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        return None
    recorded = recorded_checkpoint_hashes(run_root)
    damaged: list[tuple[Path, str]] = []
    chosen = None
    for path in reversed(checkpoints):
        problem = checkpoint_problem(path, recorded.get(path.relative_to(run_root).as_posix()))
        if problem is None:
            chosen = path
            break
        damaged.append((path, problem))
    if chosen is None:
        listing = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise RlftError(
            f"--resume: no intact checkpoint in {folder} ({listing}). Nothing was changed. Delete "
            f"{folder} to resume from the base model (step 0), or start a new run with --set run_dir=PATH."
        )
    step = int(chosen.name.split("_")[1])
    if planned_steps is not None and planned_steps < step:
        raise RlftError(
            f"--resume: the run has already completed {step} steps (checkpoint {chosen.name}), more "
            f"than train.steps={planned_steps}. Resume with train.steps >= {step}; its final model "
            "is already in the run folder if it finished."
        )
    for path, problem in damaged:
        target = _free_name(folder / f"corrupt_{path.name}")
        os.replace(path, target)
        print(
            f"rlft: warning: checkpoint {path.name} is damaged ({problem}); moved it to {target.name} "
            f"and resuming from {chosen.name}.",
            file=sys.stderr,
        )
    return chosen


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{n}"), n + 1
    return candidate

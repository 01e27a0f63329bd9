"""Content hashes of files and folders (audit log, checkpoints, data records)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


KEPT_DOT_NAMES = {".metadata"}


def folder_file_hashes(path: str | Path) -> dict[str, str]:
    """SHA-256 of each file under a folder, by relative POSIX path, in sorted order. Names that
    start with '.' (temporary files) are skipped, but for the index of a sharded checkpoint
    (``torch.distributed.checkpoint`` names it ``.metadata``)."""
    root = Path(path)
    hashes: dict[str, str] = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if not any(part.startswith(".") and part not in KEPT_DOT_NAMES for part in rel.split("/")):
            hashes[rel] = file_sha256(file)
    return hashes


def combine_file_hashes(hashes: dict[str, str]) -> str:
    """The folder hash of :func:`folder_sha256` from per-file hashes (so a folder is read once)."""
    digest = hashlib.sha256()
    for rel in sorted(hashes, key=lambda r: r.split("/")):  # the order of sorted(Path, ...)
        digest.update(f"{rel}\0{hashes[rel]}\n".encode())
    return digest.hexdigest()


def folder_sha256(path: str | Path) -> str:
    """SHA-256 over a folder: each file's relative path and SHA-256, in sorted order. Names that
    start with '.' (temporary files) are skipped."""
    return combine_file_hashes(folder_file_hashes(path))

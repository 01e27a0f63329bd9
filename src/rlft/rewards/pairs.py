"""Preference pairs ``{prompt, chosen, rejected}`` from JSON lines, Parquet or a HF dataset folder.

Read by reward-model training (``rlft rm train``) and by DPO. Every record is checked: a missing
field, a non-string or empty completion, or ``chosen == rejected`` is an error naming the file
and the line (JSON lines) or row (Parquet, dataset folders). An optional numeric ``margin`` per
pair is kept for the Bradley-Terry margin loss; other fields (``item_id``, ``votes``) are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.errors import RlftError


class PairsError(RlftError):
    """A malformed preference-pair file or record."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Load and validate every pair in ``path`` (.jsonl/.json, .parquet, or a dataset folder)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PairsError(f"Preference data {path} does not exist.")
    if path.is_dir():
        records = _dataset_folder_records(path)
        unit = "row"
    elif path.suffix == ".parquet":
        records = _parquet_records(path)
        unit = "row"
    elif path.suffix in (".jsonl", ".json"):
        records = _jsonl_records(path)
        unit = "line"
    else:
        raise PairsError(
            f"{path}: unknown format {path.suffix!r}; use .jsonl, .parquet, or a folder saved "
            "with datasets' save_to_disk."
        )
    pairs = [
        _check(record, f"{path}:{n}" if unit == "line" else f"{path} row {n}")
        for n, record in records
    ]
    if not pairs:
        raise PairsError(f"{path} has no preference pairs.")
    return pairs


def _jsonl_records(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise PairsError(f"{path}:{lineno}: not valid JSON ({exc.msg}).") from None


def _parquet_records(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PairsError("Reading Parquet needs pyarrow: pip install 'rlft[feedback]'.") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise PairsError(f"{path}: not a readable Parquet file ({exc}).") from None
    return enumerate(table.to_pylist())


def _dataset_folder_records(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError:
        raise PairsError(
            "Reading a dataset folder needs datasets: pip install 'rlft[feedback]'."
        ) from None
    try:
        data = load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise PairsError(
            f"{path} is not a folder saved with datasets' save_to_disk ({exc})."
        ) from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise PairsError(
                f"{path} holds splits {list(data)}; pass the split's own folder, e.g. {path}/{next(iter(data))}."
            )
        data = data["train"]
    assert isinstance(data, Dataset)
    return enumerate(data)


def _check(record: Any, where: str) -> PreferencePair:
    if not isinstance(record, dict):
        raise PairsError(
            f"{where}: expected an object with prompt, chosen and rejected, got {type(record).__name__}."
        )
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise PairsError(
                f"{where}: missing field {key!r} (a pair needs prompt, chosen and rejected)."
            )
        if not isinstance(record[key], str):
            raise PairsError(
                f"{where}: {key!r} must be a string, got {type(record[key]).__name__}."
            )
    for key in ("chosen", "rejected"):
        if not record[key].strip():
            raise PairsError(f"{where}: {key!r} is empty.")
    if record["chosen"] == record["rejected"]:
        raise PairsError(
            f"{where}: chosen and rejected are the same text, so the pair says nothing."
        )
    margin = record.get("margin", 0.0)
    if margin is None:
        margin = 0.0
    if (
        isinstance(margin, bool)
        or not isinstance(margin, (int, float))
        or not math.isfinite(margin)
    ):
        raise PairsError(f"{where}: 'margin' must be a finite number, got {margin!r}.")
    return PreferencePair(record["prompt"], record["chosen"], record["rejected"], float(margin))

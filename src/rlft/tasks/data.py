"""Reading a user's data: JSONL, JSON, CSV, Parquet, a ``datasets.save_to_disk`` folder or a hub id.

Every row comes back with where it came from (``train.jsonl:17``), so an error about a row names
the file and the line a user opens to fix it. Files are parsed here rather than through
``datasets`` so that a malformed line is reported as ``file:line`` instead of an Arrow traceback;
folders and hub ids go through ``datasets`` (imported only then).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.errors import ConfigError

FILE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Row:
    """One record of a data source and where it came from (``file:line`` or ``source[index]``)."""

    where: str
    values: dict[str, Any]


def load_rows(source: str, split: str = "train", what: str = "task.data") -> list[Row]:
    """The rows of ``source`` (a file, a saved dataset folder or a hub dataset id)."""
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
        if suffix not in readers:
            raise ConfigError(
                f"{what}={source!r}: cannot read '{suffix or path.name}' files; give one of "
                f"{', '.join(FILE_FORMATS)}, a datasets.save_to_disk folder or a hub dataset id."
            )
        rows = readers[suffix](path)
    elif path.is_dir():
        rows = _read_saved_dataset(path, split, what)
    elif _looks_like_hub_id(source):  # no such local file or folder: try the hub
        rows = _read_hub_dataset(source, split, what)
    else:
        raise ConfigError(
            f"{what}={source!r}: no such file or folder. Give a {'/'.join(FILE_FORMATS)} file, a "
            "datasets.save_to_disk folder, or a hub dataset id such as 'openai/gsm8k'."
        )
    if not rows:
        raise ConfigError(f"{what}={source!r} holds no rows (split {split!r}); give a file with data.")
    return rows


def rows_sha256(rows: list[Row]) -> str:
    """A hash of the rows' contents (not of the file's bytes), so the same data in another format
    or another order of keys hashes alike; a changed value or row changes it."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row.values, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}). "
            "Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None


class _Duplicated(dict):  # type: ignore[type-arg]
    """A JSON object in which ``key`` appeared more than once (the last value kept, as json does)."""

    key = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that marks an object with a repeated key, to be refused with its row."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            marked = _Duplicated(pairs)
            marked.key = key
            return marked
        out[key] = value
    return out


def _refuse_duplicates(value: Any, where: str) -> None:
    """A ConfigError naming the row and the key if ``value`` holds an object with a repeated key."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Duplicated):
            raise ConfigError(
                f"{where}: the key {item.key!r} appears twice in one object; JSON readers keep only the "
                "last, so rlft refuses it. Keep one of them."
            )
        stack += item.values() if isinstance(item, dict) else item if isinstance(item, list) else []


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    # Lines end at "\n" only: str.splitlines would also split at U+2028 and other characters that
    # JSON allows raw inside a string.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_object)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}:{number}: not valid JSON ({exc.msg}; column {exc.colno}). Each line of a "
                ".jsonl file must be one JSON object."
            ) from None
        if not isinstance(value, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object ({{...}}), got {type(value).__name__}.")
        _refuse_duplicates(value, f"{path}:{number}")
        rows.append(Row(f"{path}:{number}", value))
    return rows


def _read_json(path: Path) -> list[Row]:
    text = _read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json, as `datasets` accepts too
            return _read_jsonl(path)
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}; column {exc.colno}).") from None
    if isinstance(data, _Duplicated):
        _refuse_duplicates(data, str(path))
    if isinstance(data, dict):  # {"data": [...]}: the one list of records inside
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ConfigError(f"{path}: expected a list of objects (or one key holding such a list).")
        data = lists[0]
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of objects, got {type(data).__name__}.")
    rows = []
    for i, value in enumerate(data):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}[{i}]: expected a JSON object, got {type(value).__name__}.")
        _refuse_duplicates(value, f"{path}[{i}]")
        rows.append(Row(f"{path}[{i}]", value))
    return rows


def _read_csv(path: Path) -> list[Row]:
    # newline="": the csv module finds the ends of records itself (quoted newlines stay in a cell).
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = reader.fieldnames or []
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigError(f"{path}:1: the header names {', '.join(repr(n) for n in repeated)} more than once; rename one.")
    rows, end = [], reader.line_num  # a record starts on the line after the previous one ended
    for record in reader:
        start, end = end + 1, reader.line_num
        if None in record:  # more cells than header names
            raise ConfigError(f"{path}:{start}: more cells than the header has columns.")
        rows.append(Row(f"{path}:{start}", dict(record)))
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        raise ConfigError(f"{path}: not a readable Parquet file ({exc}).") from None
    return [Row(f"{path}[{i}]", value) for i, value in enumerate(table.to_pylist())]


def _read_saved_dataset(path: Path, split: str, what: str) -> list[Row]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise ConfigError(
            f"{what}={str(path)!r} is a folder but not a dataset saved with datasets' "
            "save_to_disk (no dataset_info.json / dataset_dict.json)."
        ) from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(
                f"{what}={str(path)!r} has no split {split!r}; it has {', '.join(data)}. "
                "Set task.split (or the eval split) to one of them."
            )
        data = data[split]
    return [Row(f"{path}[{split}][{i}]", dict(value)) for i, value in enumerate(data)]


def _read_hub_dataset(name: str, split: str, what: str) -> list[Row]:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, missing dataset, unknown split: all user-fixable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{what}={name!r}: there is no local file or folder of that name, and loading it as a "
            f"hub dataset failed ({first}). Check the path, or the hub id and the network."
        ) from None
    return [Row(f"{name}[{split}][{i}]", dict(value)) for i, value in enumerate(data)]


def _looks_like_hub_id(name: str) -> bool:
    return (
        not name.startswith((".", "/", "~"))
        and name.count("/") <= 1
        and Path(name).suffix.lower() not in FILE_FORMATS
        and all(part and " " not in part for part in name.split("/"))
    )

"""Items in, preference pairs out.

Items file (JSON lines), one item per line::

    {"prompt": "...", "completion_a": "...", "completion_b": "..."}      # compare or rate
    {"prompt": "...", "completion_a": "..."}                             # rate only
    {"id": "q17", "prompt": "...", "completions": ["...", "..."]}      # same, as a list

``id`` is optional (a hash of the content is used), so loading a file twice adds nothing. An id
follows :func:`~rlft.feedback.store.label_problem`'s rule (the API's), and one id given twice with
different content is an error naming both lines.

Exported pairs (JSON lines), what ``rlft rm train`` and DPO read::

    {"prompt": "...", "chosen": "...", "rejected": "...", "item_id": "...", "votes": [3, 1]}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from rlft.common import strict_json
from rlft.errors import RlftError
from rlft.feedback.store import (
    Item,
    Store,
    database_files,
    files_in_use,
    item_id_for,
    label_problem,
    text_problem,
)

SQLITE_MAGIC = b"SQLite format 3\x00"


def load_items(path: str | Path) -> list[Item]:
    """Read an items file, naming the file and line of any malformed record.

    An id seen twice with the same content is loaded once; with different content it is an error
    naming both lines (which one was meant cannot be guessed).
    """
    path = Path(path)
    if not path.is_file():
        raise RlftError(f"Items file {path} does not exist.")
    items: dict[str, Item] = {}
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise RlftError(
                    f"{where}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                    "save the items file as UTF-8."
                ) from None
            if not line.strip():
                continue
            item = _parse_item(line, where)
            seen = items.get(item.id)
            if seen is None:
                items[item.id] = item
            elif (seen.prompt, seen.completion_a, seen.completion_b) != (
                item.prompt,
                item.completion_a,
                item.completion_b,
            ):
                raise RlftError(
                    f"{where}: id {item.id!r} is also used at {seen.source} for different content; "
                    "give each item its own id."
                )
    if not items:
        raise RlftError(f"Items file {path} has no items; write one JSON object per line.")
    return list(items.values())


def _parse_item(line: str, where: str) -> Item:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RlftError(f"{where}: not valid JSON ({exc.msg}).") from None
    if not isinstance(record, dict):
        raise RlftError(
            f"{where}: expected a JSON object with prompt and completion_a/completion_b."
        )
    if "completions" in record:
        comps = record["completions"]
        if not isinstance(comps, list) or not 1 <= len(comps) <= 2:
            raise RlftError(f"{where}: 'completions' must be a list of one or two strings.")
        a, b = comps[0], comps[1] if len(comps) == 2 else None
    else:
        a, b = record.get("completion_a"), record.get("completion_b")
    prompt = record.get("prompt")
    for name, value, required in (
        ("prompt", prompt, True),
        ("completion_a", a, True),
        ("completion_b", b, False),
    ):
        if value is None and not required:
            continue
        if not isinstance(value, str) or not value.strip():
            raise RlftError(f"{where}: '{name}' must be a non-empty string, got {value!r}.")
        if problem := text_problem(value):
            raise RlftError(f"{where}: '{name}' {problem}.")
    item_id = record.get("id")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    elif item_id is None:
        item_id = item_id_for(prompt, a, b)
    if problem := label_problem(item_id, "'id'"):
        raise RlftError(f"{where}: {problem}, got {item_id!r:.60}.")
    return Item(item_id, prompt, a, b, source=where)


def preference_pairs(
    store: Store, aggregate: Literal["majority", "all"] = "majority"
) -> list[dict[str, Any]]:
    """Pairs from pairwise judgements; ties are skipped.

    ``majority``: one pair per item, the side with more votes is chosen (items with equal votes
    are skipped). ``all``: one pair per A/B judgement, so an item judged by three annotators
    appears up to three times (repeats weight the loss by agreement).
    """
    votes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    texts: dict[str, tuple[str, str, str]] = {}
    pairs = []
    for j in store.judgements():
        if j["kind"] != "pair" or j["choice"] == "tie":
            continue
        texts[j["item_id"]] = (j["prompt"], j["completion_a"], j["completion_b"])
        votes[j["item_id"]][0 if j["choice"] == "A" else 1] += 1
        if aggregate == "all":
            pairs.append(_pair(j["item_id"], texts[j["item_id"]], j["choice"] == "A", [1, 0]))
    if aggregate == "majority":
        for item_id, (a_votes, b_votes) in votes.items():
            if a_votes != b_votes:
                pairs.append(
                    _pair(
                        item_id,
                        texts[item_id],
                        a_votes > b_votes,
                        [max(a_votes, b_votes), min(a_votes, b_votes)],
                    )
                )
    return pairs


def _pair(
    item_id: str, texts: tuple[str, str, str], a_wins: bool, votes: list[int]
) -> dict[str, Any]:
    prompt, a, b = texts
    chosen, rejected = (a, b) if a_wins else (b, a)
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "item_id": item_id,
        "votes": votes,
    }


def ratings(store: Store) -> list[dict[str, Any]]:
    """Thumbs up/down judgements as ``{prompt, completion, rating: 1 | -1}``."""
    out = []
    for j in store.judgements():
        if j["kind"] == "rating":
            completion = j["completion_a"] if j["side"] == "A" else j["completion_b"]
            out.append({"prompt": j["prompt"], "completion": completion, "rating": 1 if j["choice"] == "up" else -1,
                        "item_id": j["item_id"], "annotator": j["annotator"]})  # fmt: skip
    return out


def check_output(
    out: str | Path, overwrite: bool = False, database: str | Path | None = None
) -> None:
    """Refuse an export target that would lose data, with an error that says why.

    Never allowed, even with ``overwrite``: a directory, the feedback ``database`` or a file beside
    it (``-wal``, ...), a SQLite file any :class:`Store` in this process has open, or any SQLite
    database (an export is never meant to replace one). Links and relative paths are resolved
    first. Any other existing file only with ``overwrite``.
    """
    out = Path(out).expanduser()
    target = out.resolve()
    protected = files_in_use()
    if database is not None and not str(database).startswith(("postgresql://", "postgres://")):
        protected.update(database_files(database))
    if target in protected:
        raise RlftError(f"{out} is the feedback database (or one of its files); writing there "
                        "would destroy it. Choose another file, e.g. pairs.jsonl.")  # fmt: skip
    if target.is_dir():
        raise RlftError(f"{out} is a directory; give a file name, e.g. {out / 'pairs.jsonl'}.")
    if not target.exists():
        return
    try:
        with target.open("rb") as fh:
            is_sqlite = fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError as exc:
        raise RlftError(f"{out} cannot be read ({exc.strerror}).") from None
    if is_sqlite:
        raise RlftError(f"{out} is a SQLite database, not an export; choose another file.")
    if not overwrite:
        raise RlftError(f"{out} already exists; choose another file or pass --force to replace it.")


def write_jsonl(records: list[dict[str, Any]], out: str | Path, overwrite: bool = True) -> None:
    """Write JSON lines atomically (a temporary file beside ``out``, synced, then renamed), so a
    reader never sees half a file and a failed write leaves the old one. Refuses what
    :func:`check_output` refuses; an existing file is replaced only with ``overwrite``."""
    out = Path(out).expanduser()
    check_output(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise RlftError(f"Cannot write {out}: {exc.strerror} ({exc.filename}).") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(strict_json.dumps(record, str(out), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; an export is an ordinary readable file
        if overwrite:
            os.replace(tmp, out)  # through a link, this replaces the link, never its target
        else:
            _link_new(tmp, out)
    except FileExistsError:
        raise RlftError(
            f"{out} appeared while exporting; nothing was overwritten. Run again."
        ) from None
    except OSError as exc:
        raise RlftError(f"Cannot write {out}: {exc.strerror}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _link_new(tmp: str, out: Path) -> None:
    """Give ``tmp`` the name ``out`` only if no such file exists, atomically where the file
    system has hard links (a check then rename could clobber a file created in between)."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FAT file systems)
        if out.exists():
            raise FileExistsError(out) from None
        os.replace(tmp, out)

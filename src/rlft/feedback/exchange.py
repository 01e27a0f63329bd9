"""Items in, preference pairs out.

Items file (JSON lines), one item per line::

    {"prompt": "...", "completion_a": "...", "completion_b": "..."}      # compare or rate
    {"prompt": "...", "completion_a": "..."}                             # rate only
    {"id": "q17", "prompt": "...", "completions": ["...", "..."]}      # same, as a list

``id`` is optional (a hash of the content is used), so loading a file twice adds nothing.

Exported pairs (JSON lines), what ``rlft rm train`` and DPO read::

    {"prompt": "...", "chosen": "...", "rejected": "...", "item_id": "...", "votes": [3, 1]}
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from rlft.errors import RlftError
from rlft.feedback.store import Item, Store, item_id_for


def load_items(path: str | Path) -> list[Item]:
    """Read an items file, naming the file and line of any malformed record."""
    path = Path(path)
    if not path.is_file():
        raise RlftError(f"Items file {path} does not exist.")
    items = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                items.append(_parse_item(line, f"{path}:{lineno}"))
    if not items:
        raise RlftError(f"Items file {path} has no items; write one JSON object per line.")
    return items


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
    item_id = record.get("id")
    item_id = str(item_id) if item_id is not None else item_id_for(prompt, a, b)
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


def write_jsonl(records: list[dict[str, Any]], out: str | Path) -> None:
    """Write atomically: a reader never sees half a file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(out)

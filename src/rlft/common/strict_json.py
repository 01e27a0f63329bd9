"""JSON that every parser reads: inf and NaN are written as ``null``, and said so.

Python's ``json.dumps`` writes ``Infinity`` and ``NaN``, which are not JSON: ``jq``, JavaScript's
``JSON.parse`` and strict parsers refuse the whole file. A metric can be non-finite (a skipped
step's loss), so the run folder's files go through :func:`dumps`, which writes such a number as
``null`` and warns once per file and key on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

_warned: set[tuple[str, str]] = set()


def finite_only(value: Any, path: str = "") -> tuple[Any, list[tuple[str, float]]]:
    """``value`` with every non-finite float (in dicts, lists and tuples) replaced by None, and the
    (key path, value) of each replacement."""
    if isinstance(value, float):
        return (value, []) if math.isfinite(value) else (None, [(path or "value", value)])
    if isinstance(value, dict):
        out, found = {}, []
        for key, item in value.items():
            out[key], more = finite_only(item, f"{path}.{key}" if path else str(key))
            found += more
        return out, found
    if isinstance(value, (list, tuple)):
        items, found = [], []
        for i, item in enumerate(value):
            clean, more = finite_only(item, f"{path}[{i}]")
            items.append(clean)
            found += more
        return items, found
    return value, []


def dumps(value: Any, where: str = "", **kwargs: Any) -> str:
    """``json.dumps`` that writes inf and NaN as null, with one warning per ``where`` and key."""
    clean, found = finite_only(value)
    for path, number in found:
        key = path.split("[")[0]
        if (where, key) not in _warned:
            _warned.add((where, key))
            print(f"rlft: warning: {where + ': ' if where else ''}{key} is {number}; written as null "
                  "(JSON has no Infinity or NaN).", file=sys.stderr)
    return json.dumps(clean, allow_nan=False, **kwargs)

"""What the feedback store holds (items, annotators, judgements) and the rules for its text.

Plain frozen dataclasses and validation functions, with no database in sight: the items file,
the web API and :class:`~rlft.feedback.store.Store` all check ids and text with the same rules.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from rlft.errors import RlftError

MAX_LABEL_CHARS = 128  # item ids and annotator names


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None. JSON may carry a lone surrogate (``"\\ud800"``),
    which is not Unicode text: no UTF-8 database or file can hold it."""
    if any(unicodedata.category(c) == "Cs" for c in text):
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def label_problem(value: object, what: str = "an item id") -> str | None:
    """Why ``value`` is not a valid item id (or annotator name), or None.

    The one rule for the items file, :meth:`Store.add_items`, :meth:`Store.add_annotator` and the
    API's ``item_id``: 1 to 128 characters, no control characters, no surrounding whitespace.
    """
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not value.strip():
        return f"{what} must not be empty"
    if len(value) > MAX_LABEL_CHARS:
        return f"{what} must be at most {MAX_LABEL_CHARS} characters, got {len(value)}"
    if value != value.strip():
        return f"{what} must not start or end with whitespace"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return f"{what} must not contain control characters"
    problem = text_problem(value)
    return f"{what} {problem}" if problem else None


@dataclass(frozen=True)
class Item:
    """A prompt with one completion (rating only) or two (pairwise comparison)."""

    id: str
    prompt: str
    completion_a: str
    completion_b: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    consented: bool


@dataclass(frozen=True)
class Judgement:
    """One submission. ``kind='pair'``: choice A/B/tie. ``kind='rating'``: choice up/down on ``side``."""

    idempotency_key: str
    item_id: str
    annotator_id: int
    kind: str
    choice: str
    side: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class SubmitResult:
    """``created``: this call stored the row. ``conflict``: the key was already used for another
    judgement. ``replaced``: the row replaced this annotator's earlier judgement of the item."""

    id: int
    created: bool
    conflict: bool = False
    replaced: bool = False


@dataclass(frozen=True)
class AddedItems:
    """What :meth:`Store.add_items` did: ``added`` new items; ``conflicting``: ids already in the
    store with different content (the stored item is kept, these were not loaded)."""

    added: int
    unchanged: int
    conflicting: tuple[str, ...] = ()


class UnknownItemError(RlftError):
    """A judgement names an item that is not in the store (or has no completion B for a pair)."""


def item_id_for(prompt: str, completion_a: str, completion_b: str | None) -> str:
    """A stable id from the content, so loading the same file twice adds nothing."""
    digest = hashlib.sha256("\x00".join([prompt, completion_a, completion_b or ""]).encode())
    return digest.hexdigest()[:16]

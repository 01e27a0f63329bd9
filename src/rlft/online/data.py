"""Turning stored judgements on live answers into training and gate data.

A judgement is held out for the gate by a hash of its row id, so the split never changes as
feedback accumulates and a held-out judgement is never trained on in a later round.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.errors import RlftError
from rlft.feedback.live import LiveJudgement
from rlft.rewards.pairs import PreferencePair


@dataclass(frozen=True)
class Example:
    """One unpaired example for KTO: a completion the user liked (desirable) or not."""

    prompt: str
    completion: str
    desirable: bool


def is_heldout(judgement_id: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"heldout:{judgement_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def split(
    judgements: Sequence[LiveJudgement], fraction: float
) -> tuple[list[LiveJudgement], list[LiveJudgement]]:
    """(train, held out) by :func:`is_heldout`."""
    train = [j for j in judgements if not is_heldout(j.id, fraction)]
    held = [j for j in judgements if is_heldout(j.id, fraction)]
    return train, held


def data_hash(judgements: Sequence[LiveJudgement]) -> str:
    """sha256 of exactly the judgements a round used (ids, users, texts, labels), for the audit log."""
    rows = [
        [j.id, j.user, j.kind, j.prompt, j.completion, j.rejected, j.desirable, list(j.response_ids)]
        for j in judgements
    ]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def kto_examples(judgements: Sequence[LiveJudgement]) -> list[Example]:
    """A rating is one example; a pair is two (the preferred answer desirable, the other not), as
    Ethayarajh et al. (2024, sec. 4) turn preference pairs into KTO data."""
    out = []
    for j in judgements:
        if j.kind == "rating":
            out.append(Example(j.prompt, j.completion, bool(j.desirable)))
        elif j.rejected is not None:
            out.append(Example(j.prompt, j.completion, True))
            out.append(Example(j.prompt, j.rejected, False))
    return out


def dpo_pairs(judgements: Sequence[LiveJudgement]) -> list[PreferencePair]:
    """The pairwise judgements as preference pairs (ratings carry no pair and are left out)."""
    return [
        PreferencePair(prompt=j.prompt, chosen=j.completion, rejected=j.rejected)
        for j in judgements
        if j.kind == "pair" and j.rejected is not None
    ]


def load_probe(path: str | Path) -> list[tuple[str, str]]:
    """The probe set: JSONL lines of {prompt, answer}."""
    probe: list[tuple[str, str]] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
            probe.append((str(row["prompt"]), str(row["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RlftError(
                f"{path}:{number}: a probe line must be a JSON object with prompt and answer."
            ) from None
    if not probe:
        raise RlftError(f"{path} holds no probe lines; give JSONL lines of {{prompt, answer}}.")
    return probe

"""The safety gate a candidate must pass before it is served.

Two checks, both against the model being served now:

- **Held-out feedback accuracy.** For each held-out judgement, did the candidate move towards it
  relative to the served model? With r(y) = log pi_candidate(y | x) - log pi_served(y | x) (DPO's
  implicit reward with the served model as reference), a thumbs-up counts as right when r > 0, a
  thumbs-down when r < 0, a pair when r(preferred) > r(other); a tie counts half. The served model
  scores exactly 0.5 against itself, so ``min_heldout_accuracy: 0.5`` means "no worse than now".
- **Probe regression.** The mean per-token log-likelihood of fixed reference answers (the probe
  set) may fall by at most ``max_regression`` nats: feedback must not buy taste with ability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlft.feedback.live import LiveJudgement
from rlft.online.train import Model, completion_logps

CHUNK = 16  # rows scored per forward pass


@dataclass(frozen=True)
class GateResult:
    passed: bool
    heldout_accuracy: float | None  # None: no held-out judgements yet
    heldout_judgements: int
    probe_served: float | None
    probe_candidate: float | None
    reasons: list[str] = field(default_factory=list)  # why it failed; empty when it passed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _logps(model: Model, tokenizer: PreTrainedTokenizerBase, prompts: list[str], texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        parts = [
            completion_logps(model, tokenizer, prompts[i : i + CHUNK], texts[i : i + CHUNK])
            for i in range(0, len(prompts), CHUNK)
        ]
    return torch.cat(parts) if parts else torch.zeros(0)


def heldout_accuracy(
    candidate: Model, served: Model, tokenizer: PreTrainedTokenizerBase, judgements: Sequence[LiveJudgement]
) -> float:
    """Share of ``judgements`` the candidate moved towards relative to ``served`` (ties half)."""
    prompts, texts, owner = [], [], []
    for i, j in enumerate(judgements):
        for text in [j.completion] + ([j.rejected] if j.kind == "pair" and j.rejected is not None else []):
            prompts.append(j.prompt)
            texts.append(text)
            owner.append(i)
    reward = _logps(candidate, tokenizer, prompts, texts) - _logps(served, tokenizer, prompts, texts)
    score = 0.0
    row = 0
    for j in judgements:
        if j.kind == "pair" and j.rejected is not None:
            margin = float(reward[row] - reward[row + 1])
            row += 2
        else:
            margin = float(reward[row]) * (1.0 if j.desirable else -1.0)
            row += 1
        score += 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0
    return score / len(judgements)


def probe_score(model: Model, tokenizer: PreTrainedTokenizerBase, probe: Sequence[tuple[str, str]]) -> float:
    """Mean per-token log-likelihood of the probe's answers (EOS included), in nats."""
    prompts, answers = [p for p, _ in probe], [a for _, a in probe]
    total = float(_logps(model, tokenizer, prompts, answers).sum())
    tokens = sum(len(tokenizer(a, add_special_tokens=False).input_ids) + 1 for a in answers)
    return total / tokens


def run_gate(
    candidate: Model,
    served: Model,
    tokenizer: PreTrainedTokenizerBase,
    heldout: Sequence[LiveJudgement],
    probe: Sequence[tuple[str, str]] | None,
    min_heldout_accuracy: float,
    max_regression: float,
) -> GateResult:
    reasons = []
    accuracy = heldout_accuracy(candidate, served, tokenizer, heldout) if heldout else None
    if accuracy is not None and accuracy < min_heldout_accuracy:
        reasons.append(
            f"held-out feedback accuracy {accuracy:.3f} < online.min_heldout_accuracy {min_heldout_accuracy}"
        )
    before = after = None
    if probe:
        before, after = probe_score(served, tokenizer, probe), probe_score(candidate, tokenizer, probe)
        if before - after > max_regression:
            reasons.append(
                f"probe log-likelihood fell {before - after:.4f} nats/token > online.max_regression {max_regression}"
            )
    return GateResult(not reasons, accuracy, len(heldout), before, after, reasons)

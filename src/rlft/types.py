"""Data passed between rollout, reward and update. Shapes follow the glossary in
``rlft.algorithms``: B sequences, P prompt tokens (left-padded), T completion tokens."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import torch

R = TypeVar("R", bound="Rollout")


@dataclass
class Rollout:
    """A batch of sampled completions.

    prompt_ids:      (B, P) left-padded prompt tokens
    prompt_mask:     (B, P) 1 on real prompt tokens
    completion_ids:  (B, T) sampled tokens, padded after EOS
    completion_mask: (B, T) 1 on sampled tokens up to and including EOS
    logprobs:        (B, T) log-probability of each sampled token under the sampling distribution
                     (after temperature and top-p), 0 where masked
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logprobs: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt and completion in one (B, P + T) sequence."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self: R, device: torch.device | str) -> R:
        """Every tensor field on ``device`` (a subclass's fields too); itself when all are there."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved = {k: v.to(device) for k, v in tensors.items() if isinstance(v, torch.Tensor) and v.device != torch.device(device)}
        return dataclasses.replace(self, **moved) if moved else self

    def select(self, index: slice | torch.Tensor) -> Rollout:
        """Rows ``index`` of every field (for micro-batches)."""
        return Rollout(
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.completion_ids[index],
            self.completion_mask[index],
            self.logprobs[index],
        )

    @staticmethod
    def concat(parts: list[Rollout], pad_token_id: int) -> Rollout:
        """The rows of ``parts`` in order: prompts left-padded to the widest, completions
        right-padded to the longest (pad token, mask 0, log-prob 0)."""
        width = max(p.prompt_ids.shape[1] for p in parts)
        length = max(p.completion_ids.shape[1] for p in parts)

        def pad(t: torch.Tensor, size: int, left: bool, fill: float) -> torch.Tensor:
            missing = size - t.shape[1]
            return torch.nn.functional.pad(t, (missing, 0) if left else (0, missing), value=fill)

        return Rollout(
            torch.cat([pad(p.prompt_ids, width, True, pad_token_id) for p in parts]),
            torch.cat([pad(p.prompt_mask, width, True, 0) for p in parts]),
            torch.cat([pad(p.completion_ids, length, False, pad_token_id) for p in parts]),
            torch.cat([pad(p.completion_mask, length, False, 0) for p in parts]),
            torch.cat([pad(p.logprobs, length, False, 0.0) for p in parts]),
        )

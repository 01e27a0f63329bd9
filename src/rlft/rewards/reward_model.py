"""A learned reward model: a transformer with a scalar head, and the reward that uses it.

The model is a Hugging Face ``AutoModelForSequenceClassification`` with ``num_labels=1``: the
causal LM's body plus a linear ``score`` head read at the last token of ``prompt + completion``.
Choosing the stock class (rather than a value head of our own on the causal LM) means a reward
model trained here is a plain ``save_pretrained`` folder that transformers, TRL or OpenRLHF load
as they are, and any sequence-classification reward model from the hub plugs in here.

Inputs are left-padded, so the last position is always the last real token; they are truncated
from the left, so a long prompt loses its beginning but the completion is always scored whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from rlft.errors import RlftError
from rlft.rewards.base import RewardSpecError
from rlft.rewards.normalization import NormalizeMode, RunningMoments, clip, normalize
from rlft.schema import setting


def resolve_reward_model_folder(path: str | Path) -> Path:
    """A folder written by ``rlft rm train`` maps to its ``model/``; else the folder itself."""
    path = Path(path).expanduser()
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if not path.is_dir():
        raise RlftError(
            f"Reward model folder {path} does not exist. Train one with `rlft rm train RECIPE.yaml`."
        )
    if not (path / "config.json").is_file():
        raise RlftError(
            f"{path} has no config.json (nor model/config.json), so it is not a reward model folder."
        )
    return path


def load_reward_model(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """A sequence-classification model with one label and its left-padding tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from rlft.models.loading import load_tokenizer

    folder = resolve_reward_model_folder(path)
    tokenizer = load_tokenizer(str(folder))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    except (OSError, ValueError) as exc:
        raise RlftError(
            f"Could not load a reward model from {folder}: {str(exc).splitlines()[0]}"
        ) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return model, tokenizer


def encode_texts(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded, left-truncated ids and mask of ``prompt + completion``, (B, L) each."""
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    enc = tokenizer(
        texts,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_length,
        padding_side="left",
        truncation_side="left",
    )
    return enc.input_ids, enc.attention_mask


def forward_scores(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Scalar score per sequence, (B,), with gradients.

    Position ids come from the attention mask, as in the sampler: each row's first real token is
    position 0 however much left padding the batch gives it. Without them a model with absolute
    position embeddings (GPT-2) scores the same text differently alone and in a padded batch.
    """
    from rlft.models.tokens import forward_accepts, positions_from_mask

    device = next(model.parameters()).device
    attention_mask = attention_mask.to(device)
    extra = {"position_ids": positions_from_mask(attention_mask)} if forward_accepts(model, "position_ids") else {}
    out = model(input_ids=input_ids.to(device), attention_mask=attention_mask, **extra)
    return out.logits[:, 0].float()  # (B, 1) -> (B,)


@torch.no_grad()
def reward_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
    max_length: int = 512,
) -> torch.Tensor:
    """Scores of ``prompt + completion`` pairs, (N,), in chunks of ``batch_size``."""
    scores = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = encode_texts(
            tokenizer,
            prompts[start : start + batch_size],
            completions[start : start + batch_size],
            max_length,
        )
        scores.append(forward_scores(model, ids, mask).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


@dataclass
class RewardModelReward:
    """The score of a trained reward model as the reward, batched, normalised and clipped.

    Normalisation comes first (``running`` keeps a running mean and std over the whole run), then
    clipping to [-clip, clip]; clipping a normalised score bounds how hard the policy can push on
    the reward model's blind spots.
    """

    name: ClassVar[str] = "reward_model"
    path: str = field(
        metadata={
            "help": "Folder written by `rlft rm train` (or its model/), or any sequence-classification model with one label."
        }
    )
    batch_size: int = setting(32, "Sequences scored per forward pass.", ge=1)
    max_length: int = setting(
        512,
        "Longest prompt + completion in tokens; longer ones lose the start of the prompt.",
        ge=8,
    )
    normalize: Literal["none", "batch", "running"] = setting(
        "none", "Normalise scores: none, batch z-score, or running z-score."
    )
    clip: float | None = setting(
        None, "Clip the (normalised) score to [-clip, clip]; null for no clipping.", gt=0
    )
    device: str = setting(
        "auto", "Where the reward model runs: auto (in a training recipe, the learner's train.device; else "
        "cuda:LOCAL_RANK when CUDA is visible, else cpu), cpu, cuda, cuda:N.",
    )

    def __post_init__(self) -> None:
        if not self.path:
            raise RewardSpecError(
                "reward_model.path is empty; give the folder of a trained reward model."
            )
        try:
            self._folder = resolve_reward_model_folder(self.path)
        except RlftError as exc:
            raise RewardSpecError(f"reward_model.path: {exc}") from None
        self._moments = RunningMoments()
        self._model: Any = None
        self._tokenizer: Any = None

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        if self._model is None:
            from rlft.models.device import resolve_device

            try:
                device = resolve_device(self.device, "reward_model.device")
            except RlftError as exc:
                raise RewardSpecError(str(exc)) from None
            self._model, self._tokenizer = load_reward_model(self._folder, str(device))
        raw = reward_scores(
            self._model, self._tokenizer, prompts, completions, self.batch_size, self.max_length
        )
        mode: NormalizeMode = self.normalize
        return clip(normalize(raw.tolist(), mode, self._moments), self.clip)

"""Held-out evaluation: greedy (or seeded sampled) completions scored by the task's reward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.rollout.sampling import encode_prompts, sample
from rlft.tasks import Problem


@dataclass
class EvalResult:
    accuracy: float
    """Mean reward over the problems; for exact-match tasks, the fraction solved."""
    completions: list[str]
    rewards: list[float]
    problems: list[Problem]
    """The problem of each completion (each held-out problem ``samples`` times, in order)."""


def decode_completions(tokenizer: PreTrainedTokenizerBase, completion_ids, completion_mask) -> list[str]:  # noqa: ANN001
    """Completion text of each row, up to (not including) EOS."""
    texts = []
    for ids, mask in zip(completion_ids.tolist(), completion_mask.tolist(), strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m and t != tokenizer.eos_token_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task,  # noqa: ANN001 - any task with reward(completions, problems)
    problems: Sequence[Problem],
    max_new_tokens: int,
    batch_size: int = 256,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
) -> EvalResult:
    """Decode every problem and score it with the task's reward.

    ``temperature=0`` decodes greedily (exact-answer tasks). ``temperature > 0`` samples each
    problem ``samples`` times with a generator seeded by ``seed``, so two evaluations of the same
    model agree; tasks with many good completions (the reviews task) are judged by what the
    policy samples, as it is used, rather than by its single most likely string.
    """
    was_training = model.training
    model.eval()
    greedy = temperature == 0.0
    repeated = [p for p in problems for _ in range(1 if greedy else samples)]
    gen = torch.Generator().manual_seed(seed)
    completions: list[str] = []
    for start in range(0, len(repeated), batch_size):
        chunk = repeated[start : start + batch_size]
        ids, mask = encode_prompts(tokenizer, [p.prompt for p in chunk])
        rollout = sample(
            model,
            ids,
            mask,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens,
            greedy=greedy,
            temperature=temperature if not greedy else 1.0,
            generator=gen,
        )
        completions += decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    model.train(was_training)
    rewards = task.reward(completions, repeated)
    return EvalResult(sum(rewards) / max(len(rewards), 1), completions, rewards, repeated)

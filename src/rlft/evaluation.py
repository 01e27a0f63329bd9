"""Held-out evaluation: greedy completions scored by the task's reward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.rollout.sampling import encode_prompts, sample
from rlft.tasks import Problem


@dataclass
class EvalResult:
    accuracy: float
    """Mean reward over the problems; for exact-match tasks, the fraction solved."""
    completions: list[str]
    rewards: list[float]


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
) -> EvalResult:
    """Greedy-decode every problem and score it with the task's reward."""
    was_training = model.training
    model.eval()
    completions: list[str] = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        ids, mask = encode_prompts(tokenizer, [p.prompt for p in chunk])
        rollout = sample(
            model,
            ids,
            mask,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens,
            greedy=True,
        )
        completions += decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    model.train(was_training)
    rewards = task.reward(completions, problems)
    return EvalResult(sum(rewards) / max(len(rewards), 1), completions, rewards)

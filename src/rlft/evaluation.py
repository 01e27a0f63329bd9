"""Held-out evaluation: greedy (or seeded sampled) completions scored by the task's reward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.models.tokens import decode_completions, encode_prompts
from rlft.rollout.sampling import sample
from rlft.tasks import Problem


@dataclass
class EvalResult:
    accuracy: float
    """Mean of the task's own reward; for exact-match tasks, the fraction solved (eval/accuracy)."""
    completions: list[str]
    rewards: list[float]
    """The recipe's reward of each completion (the task's own when the recipe sets none)."""
    problems: list[Problem]
    """The problem of each completion (each held-out problem ``samples`` times, in order)."""
    mean_reward: float = 0.0
    pass_rate: float = 0.0
    """Share of completions whose reward is at least the pass threshold (pass@1)."""
    pass_at_k: float | None = None
    """Share of problems with at least one passing completion among their ``k`` samples."""
    k: int = 1

    def metrics(self) -> dict[str, float]:
        """The logged metrics (docs/metrics.md): eval/accuracy, eval/mean_reward, eval/pass_rate and,
        with several samples per problem, eval/pass@k."""
        out = {"eval/accuracy": self.accuracy, "eval/mean_reward": self.mean_reward, "eval/pass_rate": self.pass_rate}
        if self.pass_at_k is not None:
            out[f"eval/pass@{self.k}"] = self.pass_at_k
        return out


def pass_rates(rewards: Sequence[float], samples: int, threshold: float) -> tuple[float, float | None]:
    """(pass@1, pass@k) of rewards laid out as each problem's ``samples`` completions in a row.

    pass@1 is the share of completions with reward >= threshold; pass@k (k = samples > 1) the
    share of problems with at least one such completion (the unbiased estimator of Chen et al.
    (2021) with n = k), None when samples == 1.
    """
    passed = [r >= threshold for r in rewards]
    pass_at_1 = sum(passed) / max(len(passed), 1)
    if samples == 1:
        return pass_at_1, None
    groups = [passed[i : i + samples] for i in range(0, len(passed), samples)]
    return pass_at_1, sum(any(g) for g in groups) / max(len(groups), 1)


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
    reward_fn: Callable[[list[str], list[Problem]], list[float]] | None = None,
    pass_threshold: float = 1.0,
) -> EvalResult:
    """Decode every problem and score it with the task's reward (``eval/accuracy``) and with
    ``reward_fn``, the recipe's reward (``eval/mean_reward``, ``eval/pass_rate``, ``eval/pass@k``);
    without ``reward_fn`` both are the task's reward.

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
    own = task.reward(completions, repeated)
    rewards = own if reward_fn is None else list(reward_fn(completions, repeated))
    pass_at_1, pass_at_k = pass_rates(rewards, 1 if greedy else samples, pass_threshold)
    mean = sum(rewards) / max(len(rewards), 1)
    return EvalResult(
        sum(own) / max(len(own), 1), completions, rewards, repeated, mean, pass_at_1, pass_at_k,
        1 if greedy else samples,
    )

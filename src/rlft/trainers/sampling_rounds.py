"""The rollout of one RL step: prompts drawn, completions sampled and rewarded, and (DAPO) the
batch shaped — groups without signal replaced by new ones, overlong completions penalised.

:func:`sample_batch` is what :func:`rlft.trainers.loop.collect` calls; it returns the rows of this
rank (all rows in one process) with their rewards, before any scoring by the models.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.dapo import informative_groups, overlong_buffer_of, overlong_penalty, truncated
from rlft.models.tokens import decode_completions, encode_prompts
from rlft.rollout.engine import RolloutEngine
from rlft.trainers.batch import step_token_rewards
from rlft.trainers.parallel import Ranks
from rlft.types import Rollout


@dataclass
class Sampled:
    """Rows of a step's batch with their rewards. ``prompt_ids``/``prompt_mask`` are the whole
    batch's (every rank's rows); ``rollout`` and the rest are this rank's rows ``[lo, hi)``."""

    problems: list[Any]  # the whole batch's problems, G consecutive rows per prompt
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    rollout: Rollout
    completions: list[str]
    rewards: torch.Tensor  # (rows,) the reward each completion is trained on
    components: dict[str, list[float]]
    truncated: torch.Tensor  # (rows,) bool: cut at max_new_tokens without EOS
    stats: dict[str, float] = field(default_factory=dict)
    token_rewards: torch.Tensor | None = None  # (rows, T) a reward's dense step rewards (batch.step_token_rewards)


def sample_round(config: Any, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Any,
                 gen: torch.Generator, engine: RolloutEngine, reward_fn: Any, groups: int, ranks: Ranks) -> Sampled:
    """``groups`` prompts drawn from ``gen``, G completions each, sampled and rewarded (this
    rank's share of the rows when there are several)."""
    G = config.algorithm.group_size
    problems = [p for p in task.train_problems(groups, gen) for _ in range(G)]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    lo, hi = ranks.share(len(problems))
    rollout = engine.sample(
        policy, prompt_ids[lo:hi], prompt_mask[lo:hi],
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=config.rollout.max_new_tokens, temperature=config.rollout.temperature,
        top_p=config.rollout.top_p, generator=gen,
        **({"noise_rows": (lo, len(problems))} if ranks.several else {}),
    )  # fmt: skip
    completions = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    scored = reward_fn(completions, problems[lo:hi])
    reward_list, components = scored.rewards, scored.components
    observe = getattr(task, "observe_groups", None)
    if observe is not None:  # the prompt sampler's pass rates (trainers/curriculum.py), from every rank's rows
        observe(problems, [r for share in ranks.gather(reward_list) for r in share])
    cut = truncated(rollout.completion_ids, rollout.completion_mask, tokenizer.eos_token_id,
                    config.rollout.max_new_tokens)
    # The whole batch's prompts, on the device the rollout was sampled on (gather_shares uses them).
    device = rollout.completion_mask.device
    dense = None if scored.step_rewards is None else \
        step_token_rewards(tokenizer, rollout.completion_ids, rollout.completion_mask, scored.step_rewards).to(device)
    return Sampled(problems, prompt_ids.to(device), prompt_mask.to(device), rollout, completions,
                   torch.tensor(reward_list, dtype=torch.float32, device=device), components, cut, token_rewards=dense)


def sample_batch(config: Any, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Any,
                 gen: torch.Generator, engine: RolloutEngine, reward_fn: Any, ranks: Ranks) -> Sampled:
    """The step's rows: one round of sampling, or (``algorithm.dynamic_sampling``) as many as it
    takes to fill the batch with groups that carry a signal; then the overlong penalty."""
    algo = config.algorithm
    groups = config.train.batch_size // algo.group_size
    sampled = sample_round(config, policy, tokenizer, task, gen, engine, reward_fn, groups, ranks)
    if algo.dynamic_sampling:
        sampled = _fill_with_signal(config, sampled, policy, tokenizer, task, gen, engine, reward_fn, ranks)
    buffer = overlong_buffer_of(algo.overlong_buffer, algo.overlong_buffer_fraction, config.rollout.max_new_tokens)
    if buffer:
        lengths = sampled.rollout.completion_mask.sum(-1)
        penalty = overlong_penalty(lengths, config.rollout.max_new_tokens, buffer, algo.overlong_penalty)
        sampled.rewards = sampled.rewards + penalty
        sampled.components["overlong_penalty"] = penalty.tolist()
    return sampled


def _fill_with_signal(config: Any, first: Sampled, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      task: Any, gen: torch.Generator, engine: RolloutEngine, reward_fn: Any, ranks: Ranks) -> Sampled:
    """DAPO's dynamic sampling: keep the groups whose rewards differ, sample new prompts for the
    others, at most ``algorithm.max_sampling_rounds`` more rounds; if the batch is still short,
    the first groups without signal fill it (counted, and warned about)."""
    G, algo = config.algorithm.group_size, config.algorithm
    needed = config.train.batch_size // G
    rounds, kept, spare = [first], [], []
    for extra in range(algo.max_sampling_rounds + 1):
        current = rounds[-1]
        signal = informative_groups(current.rewards, G)
        for group, has_signal in enumerate(signal.tolist()):
            (kept if has_signal else spare).append((len(rounds) - 1, group))
        if len(kept) >= needed or extra == algo.max_sampling_rounds:
            break
        rounds.append(sample_round(config, policy, tokenizer, task, gen, engine, reward_fn, needed - len(kept), ranks))
    chosen = kept[:needed]
    short = needed - len(chosen)
    if short:
        warnings.warn(f"dynamic sampling: {short} of {needed} groups still had equal rewards after "
                      f"{algo.max_sampling_rounds} extra rounds; they fill the batch (raise algorithm.max_sampling_rounds "
                      "or train.batch_size, or check that the reward can tell completions apart).", stacklevel=2)
        chosen += spare[:short]
    merged = _take_groups(rounds, sorted(chosen), G, tokenizer.pad_token_id)
    merged.stats = {"sampling/rounds": float(len(rounds)), "sampling/dropped_groups": float(len(spare)),
                    "sampling/kept_without_signal": float(short)}
    return merged


def _take_groups(rounds: list[Sampled], chosen: list[tuple[int, int]], G: int, pad_token_id: int) -> Sampled:
    """The chosen (round, group) groups of several rounds as one batch, in that order."""
    rows = [torch.arange(group * G, (group + 1) * G) for _, group in chosen]
    parts = [rounds[r] for r, _ in chosen]
    rollout = Rollout.concat([p.rollout.select(index) for p, index in zip(parts, rows, strict=True)], pad_token_id)
    keys = parts[0].components.keys()
    pick = lambda values, index: [values[i] for i in index.tolist()]  # noqa: E731
    return Sampled(
        problems=[q for p, index in zip(parts, rows, strict=True) for q in pick(p.problems, index)],
        prompt_ids=rollout.prompt_ids, prompt_mask=rollout.prompt_mask, rollout=rollout,
        completions=[c for p, index in zip(parts, rows, strict=True) for c in pick(p.completions, index)],
        rewards=torch.cat([p.rewards[index] for p, index in zip(parts, rows, strict=True)]),
        components={k: [v for p, index in zip(parts, rows, strict=True) for v in pick(p.components[k], index)]
                    for k in keys},
        truncated=torch.cat([p.truncated[index] for p, index in zip(parts, rows, strict=True)]),
        token_rewards=None if any(p.token_rewards is None for p in parts) else torch.cat([
            torch.nn.functional.pad(p.token_rewards[index], (0, rollout.completion_ids.shape[1] - p.token_rewards.shape[1]))
            for p, index in zip(parts, rows, strict=True)]),
    )

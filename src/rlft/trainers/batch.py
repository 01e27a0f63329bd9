"""From a rollout to a training batch: the one collector every RL path shares.

A rollout — single-turn completions from the sampler, or multi-turn episodes from
:func:`rlft.rollout.multiturn.rollout_episodes` — is turned into a :class:`Batch` by
:func:`score_rollout`: the reference's log-probs, the KL estimate, the KL penalty in the reward
(when the recipe puts it there), the advantages and returns of the recipe's estimator. The RL loop
(``trainers/loop.py``), the multi-turn agent trainer (``trainers/agent.py``) and the report's
per-token view (``rlft report``) all call it, so the three cannot drift apart.

A single-turn task is a one-step episode: its reward sits on the completion's last token
(:func:`outcome_token_rewards`); a multi-turn rollout brings per-turn rewards on the last token of
each agent turn, and environment tokens are outside ``completion_mask``.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
from rlft.algorithms.importance import truncated_importance_weights
from rlft.algorithms.kl import KL_ESTIMATORS, kl_penalised_rewards
from rlft.models.device import model_device
from rlft.models.tokens import tokens_ending_at
from rlft.models.value_head import ValueHead
from rlft.rollout.sampling import score_completions, sequence_logprobs
from rlft.types import Rollout


@dataclass
class Batch:
    """A scored rollout, ready for the update. Rows are grouped: G completions per prompt."""

    rollout: Rollout
    rewards: torch.Tensor  # (B,) task reward of each completion (an episode's return)
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T) critic targets
    ref_logprobs: torch.Tensor  # (B, T)
    old_logprobs: torch.Tensor | None  # (B, T); None when each row is used in one update only
    old_values: torch.Tensor | None  # (B, T); None without a critic
    kl: torch.Tensor  # (B, T) KL estimate of the sampling policy to the reference
    problems: list[Any] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    reward_components: dict[str, float] = field(default_factory=dict)  # mean of each component
    sampling_stats: dict[str, float] = field(default_factory=dict)  # dynamic sampling's counts
    # The sampler's log-probs are approximate (bf16, vLLM) and the update's own forward gives the
    # trainer's: truncated importance weights are applied in the loss, not here.
    correct_sampler_in_loss: bool = False


@dataclass
class Learner:
    """What the optimiser trains: the policy and, for actor-critic methods, the critic.

    ``critic_trunk`` is the policy itself for a value head on the policy's trunk, or a separate
    copy of the model; ``value_head`` maps its last hidden state to V(s_t).
    """

    policy: PreTrainedModel
    value_head: ValueHead | None = None
    critic_trunk: PreTrainedModel | None = None
    autocast: torch.dtype | None = None  # train.autocast: the dtype of the passes' matmuls
    # One pass per repeated prompt (see score_completions); off for sharded (fsdp) models, whose
    # ranks must all run the same number of forward passes.
    share_prompts: bool = True

    def modules(self) -> torch.nn.ModuleDict:
        """The trainable modules under stable names (checkpoint keys)."""
        parts: dict[str, torch.nn.Module] = {"policy": self.policy}
        if self.value_head is not None:
            parts["value_head"] = self.value_head
        if self.critic_trunk is not None and self.critic_trunk is not self.policy:
            parts["critic"] = self.critic_trunk
        return torch.nn.ModuleDict(parts)

    def score(
        self, rollout: Rollout, temperature: float, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(logprobs, entropy, values): one pass when the critic shares the policy's trunk.

        Under ``autocast`` the matmuls run in that dtype (torch.autocast) while the weights stay
        float32; log-softmax, the losses and the gradients are float32.
        """
        shared = self.critic_trunk is self.policy
        device = next(self.policy.parameters()).device.type
        precision = torch.autocast(device, self.autocast) if self.autocast else contextlib.nullcontext()
        with precision:
            logprobs, entropy, values = score_completions(
                self.policy, rollout, temperature, with_entropy, self.value_head if shared else None,
                share_prompts=self.share_prompts,
            )
            if self.value_head is not None and not shared:
                _, _, values = score_completions(self.critic_trunk, rollout, temperature, False, self.value_head,
                                                 share_prompts=self.share_prompts)
        return logprobs, entropy, values.float() if values is not None else None


def build_learner(config: Any, policy: PreTrainedModel) -> Learner:
    """The learner of a recipe: its ``algorithm.critic`` (none, value_head, separate) and
    ``train.autocast``."""
    autocast = torch.bfloat16 if config.train.autocast == "bfloat16" else None
    critic = config.algorithm.critic
    if critic == "none":
        return Learner(policy, autocast=autocast)
    trunk = policy if critic == "value_head" else copy.deepcopy(policy)  # (a copy stays on the policy's device)
    head = ValueHead(policy.config.hidden_size).to(model_device(policy))
    return Learner(policy, head, trunk, autocast)


def outcome_token_rewards(rewards: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence rewards -> (B, T), each on its completion's last counted token: a single-turn
    task is a one-step episode."""
    last = (completion_mask.sum(-1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(completion_mask)
    token_rewards[torch.arange(len(rewards)), last] = rewards
    return token_rewards


def step_token_rewards(
    tokenizer: Any, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
    step_rewards: list[list[tuple[int, float]]],
) -> torch.Tensor:
    """A reward's dense ``step_rewards`` (per completion, ``(end, reward)`` at character positions
    of its decoded text, ``rlft.rewards.RewardOutput``) -> (B, T) token rewards, each on the token
    where the text up to ``end`` ends (``rlft.models.tokens.tokens_ending_at``). A reward at the
    text's end sits on the last counted token (the EOS when there is one), where
    :func:`outcome_token_rewards` puts the outcome; rewards on one token add up."""
    token_rewards = torch.zeros_like(completion_mask, dtype=torch.float32)  # (B, T)
    for row, (ids, mask, steps) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist(), step_rewards,
                                                 strict=True)):
        counted = [t for t, m in enumerate(mask) if m]
        if not counted or not steps:
            continue
        # The columns of the tokens decode_completions reads (counted, EOS left out).
        columns = [t for t in counted if ids[t] != tokenizer.eos_token_id]
        text = tokenizer.decode([ids[t] for t in columns], skip_special_tokens=True)
        inside = [(end, value) for end, value in steps if end < len(text)]
        found = tokens_ending_at(tokenizer, [ids[t] for t in columns], [end for end, _ in inside])
        for (_, value), k in zip(inside, found, strict=True):
            token_rewards[row, columns[k]] += value
        token_rewards[row, counted[-1]] += sum(value for end, value in steps if end >= len(text))
    return token_rewards


def training_token_rewards(
    algo: Any, rewards: torch.Tensor, completion_mask: torch.Tensor, dense: torch.Tensor | None
) -> torch.Tensor:
    """The (B, T) token rewards the recipe's estimator reads: the reward's dense ones (``dense``,
    from :func:`step_token_rewards`) for an estimator that reads rewards token by token
    (``EstimatorInfo.token_level``: reinforce_pp, gae), else each sequence reward ``rewards`` (B,)
    on its last token."""
    if dense is not None and ADVANTAGE_ESTIMATORS.info(str(algo.advantage_estimator)).token_level:
        return dense.to(completion_mask.device)
    return outcome_token_rewards(rewards, completion_mask)


@dataclass(frozen=True)
class Sampler:
    """What the collector needs to know of the engine that sampled a rollout."""

    logprobs_are_policys: bool = False
    """The rollout's log-probs are this policy's own (rlft's sampler in this process, equal to a
    fresh forward within 1e-5, tested): the extra forward pass is skipped when nothing else needs it."""
    approximate_logprobs: bool = False
    """The log-probs are an approximation (bf16, vLLM): truncated importance weights correct it."""


@dataclass
class RowScores:
    """The per-row forward passes of :func:`score_rollout` (rows are independent, so a rank can
    compute its share and the shares be concatenated)."""

    ref_logprobs: torch.Tensor  # (B, T)
    old_logprobs: torch.Tensor  # (B, T) the sampling policy's (the learner's, or the sampler's own)
    old_values: torch.Tensor | None  # (B, T); None without a critic


def row_scores(
    learner: Learner, reference: PreTrainedModel, rollout: Rollout, *, temperature: float, reused: bool,
    sampler: Sampler = Sampler(), top_p: float = 1.0,
) -> RowScores:
    """The reference's log-probs and the sampling policy's log-probs and values of each row."""
    correct_in_loss = sampler.approximate_logprobs and not reused
    with torch.no_grad():
        ref_logprobs, _ = sequence_logprobs(reference, rollout, temperature, share_prompts=learner.share_prompts)
        own = sampler.logprobs_are_policys or correct_in_loss
        if learner.value_head is None and top_p == 1.0 and own:
            # An approximate sampler's log-probs stand in here (KL statistics); the loss corrects
            # for them with the update's own forward.
            return RowScores(ref_logprobs, rollout.logprobs, None)
        old_logprobs, _, old_values = learner.score(rollout, temperature)
    return RowScores(ref_logprobs, old_logprobs, old_values)


def score_rollout(
    algo: Any,
    learner: Learner,
    reference: PreTrainedModel,
    rollout: Rollout,
    rewards: torch.Tensor,
    token_rewards: torch.Tensor,
    *,
    temperature: float,
    kl_coef: float,
    reused: bool,
    sampler: Sampler = Sampler(),
    top_p: float = 1.0,
) -> Batch:
    """Score ``rollout`` for the update: reference log-probs, KL, the KL-penalised token rewards
    (``algo.kl_placement == "reward"``), advantages and returns of ``algo.advantage_estimator``.

    ``algo`` is the recipe's resolved ``algorithm`` section; ``rewards`` (B,) the task rewards
    (or episode returns) and ``token_rewards`` (B, T) where they sit; ``reused``: each row is
    used in more than one optimiser step (epochs or mini-batches), so the sampling policy's
    log-probs are kept for the importance ratio.
    """
    scores = row_scores(learner, reference, rollout, temperature=temperature, reused=reused, sampler=sampler,
                        top_p=top_p)
    return batch_from_scores(algo, rollout, rewards, token_rewards, scores, kl_coef=kl_coef, reused=reused,
                             sampler=sampler)


def batch_from_scores(
    algo: Any, rollout: Rollout, rewards: torch.Tensor, token_rewards: torch.Tensor, scores: RowScores, *,
    kl_coef: float, reused: bool, sampler: Sampler = Sampler(),
) -> Batch:
    """The batch-wide part of :func:`score_rollout` (KL, advantages, returns) from the rows' scores."""
    mask = rollout.completion_mask
    correct_in_loss = sampler.approximate_logprobs and not reused
    old_logprobs, old_values = scores.old_logprobs, scores.old_values
    kl = torch.where(mask.bool(), KL_ESTIMATORS[algo.kl_estimator](old_logprobs, scores.ref_logprobs,
                                                                  clamp=algo.kl_clamp), 0.0)
    if algo.kl_placement == "reward":
        token_rewards = kl_penalised_rewards(token_rewards, kl, mask, kl_coef)
    advantages, returns = ADVANTAGE_ESTIMATORS[algo.advantage_estimator](
        token_rewards, mask, values=old_values, group_size=algo.group_size, gamma=algo.gamma, lam=algo.lam,
        scale_rewards=algo.scale_rewards,
    )
    if sampler.approximate_logprobs and not correct_in_loss:
        # Truncated importance sampling (TIS) for the engine/trainer mismatch: the advantages of
        # tokens the engine over-sampled relative to the trainer are scaled down.
        advantages = advantages * truncated_importance_weights(old_logprobs, rollout.logprobs, mask)
    return Batch(
        rollout=rollout, rewards=rewards, advantages=advantages, returns=returns, ref_logprobs=scores.ref_logprobs,
        old_logprobs=old_logprobs if reused else None, old_values=old_values, kl=kl,
        correct_sampler_in_loss=correct_in_loss,
    )

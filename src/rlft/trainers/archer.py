"""A hierarchical actor-critic in the spirit of ArCHer (Zhou et al., 2024, arXiv:2402.19446).

Two levels. The *utterance-level critic* V(s_k), s_k the dialogue before agent turn k, is a value
head on its own copy of the trunk, read at the first token of each agent turn. It is trained
off-policy from a replay buffer of episodes with one-step TD targets on turns (paper, eq. 2-3):

    y_k = r_k + gamma * V_target(s_{k+1})      (0 after the last turn)

with a Polyak-averaged target critic. The *token-level actor* is the LM: every token of turn k
gets the critic's utterance advantage A_k = r_k + gamma * V(s_{k+1}) - V(s_k) (whitened over the
batch), and the policy gradient -w_t * A_k * log pi(a_t | s_t) is taken on fresh episodes plus,
optionally, replayed ones, with w_t the importance ratio pi / mu truncated at ``ratio_cap``.

Differences from the paper: the critic learns V only, not Q(s, a) and V (with one-step targets and
the utterance as the action, r + gamma V(s') is an unbiased sample of Q(s, a), so one head does);
the actor has no token-level baseline; the critic is a copy of the warm-started LM, not RoBERTa.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.advantages import masked_whiten
from rlft.algorithms.aggregation import masked_mean
from rlft.algorithms.importance import truncated_importance_weights
from rlft.algorithms.q_learning import next_counted_values, polyak
from rlft.envs import EnvFamily
from rlft.models.value_head import ValueHead
from rlft.rollout.multiturn import MultiTurnRollout
from rlft.rollout.replay import ReplayBuffer
from rlft.rollout.sampling import score_completions
from rlft.trainers.agent import episode_stats, play
from rlft.config.agent import AgentConfig, policy_learning_rate
from rlft.common.optim import adamw


def turn_rewards_at_starts(rollout: MultiTurnRollout) -> torch.Tensor:
    """(B, T): each agent turn's total reward, moved from its last token to its first token."""
    starts, ends = rollout.turn_starts().bool(), rollout.turn_ends().bool()
    out = torch.zeros_like(rollout.token_rewards)
    for i in range(out.shape[0]):  # few turns per row: a plain loop is clearest
        out[i, starts[i]] = rollout.token_rewards[i, ends[i]]
    return out


def utterance_td(
    values: torch.Tensor, target_values: torch.Tensor, rollout: MultiTurnRollout, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(targets, advantages, starts), each (B, T), non-zero only on the first token of each turn.

    values, target_values: (B, T) V(s_t) from the critic and its target copy. The "counted" steps
    are the turn starts, so :func:`next_counted_values` gives V(s_{k+1}) of the next turn.
    """
    starts = rollout.turn_starts()
    rewards = turn_rewards_at_starts(rollout)
    targets = (rewards + gamma * next_counted_values(target_values.detach(), starts)) * starts
    advantages = (rewards + gamma * next_counted_values(values.detach(), starts) - values.detach()) * starts
    return targets, advantages, starts


def spread_over_turns(per_turn: torch.Tensor, rollout: MultiTurnRollout) -> torch.Tensor:
    """(B, T) values on turn starts -> the same value on every token of that turn."""
    out = torch.zeros_like(per_turn)
    for i in range(out.shape[0]):
        turn = rollout.turn_index[i]
        starts = rollout.turn_starts()[i].bool()
        per_k = per_turn[i, starts]  # (K,)
        out[i, turn >= 0] = per_k[turn[turn >= 0]]
    return out


class Critic(torch.nn.Module):
    def __init__(self, trunk: PreTrainedModel) -> None:
        super().__init__()
        self.trunk, self.head = trunk, ValueHead(trunk.config.hidden_size)

    def forward(self, rollout: MultiTurnRollout) -> torch.Tensor:
        return score_completions(self.trunk, rollout, 1.0, False, self.head)[2]  # (B, T)


def _stack(rows: list[MultiTurnRollout]) -> MultiTurnRollout:
    P = max(r.prompt_ids.shape[1] for r in rows)
    T = max(r.completion_ids.shape[1] for r in rows)

    def left(x: torch.Tensor, fill: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (P - x.shape[1], 0), value=fill)

    def right(x: torch.Tensor, fill: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, T - x.shape[1]), value=fill)

    pad = 0  # padded positions are masked everywhere; their id never matters
    return MultiTurnRollout(
        torch.cat([left(r.prompt_ids, pad) for r in rows]), torch.cat([left(r.prompt_mask, 0) for r in rows]),
        torch.cat([right(r.completion_ids, pad) for r in rows]), torch.cat([right(r.completion_mask, 0) for r in rows]),
        torch.cat([right(r.logprobs, 0) for r in rows]), torch.cat([right(r.completion_attention, 0) for r in rows]),
        torch.cat([right(r.token_rewards, 0) for r in rows]), torch.cat([right(r.turn_index, -1) for r in rows]),
    )


def train_archer(
    config: AgentConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: EnvFamily,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> Critic:
    """ArCHer for ``config.episodes`` episodes; trains ``policy`` in place, returns the critic."""
    cfg = config.archer
    critic = Critic(copy.deepcopy(policy))
    target = copy.deepcopy(critic).requires_grad_(False)
    critic_opt = adamw(critic.parameters(), cfg.critic_learning_rate)
    actor_opt = adamw(policy.parameters(), policy_learning_rate(config))
    buffer = ReplayBuffer(cfg.buffer_capacity, cfg.max_staleness)
    gen = torch.Generator().manual_seed(config.seed)
    iterations = max(1, config.episodes // config.episodes_per_iteration)
    for it in range(iterations):
        envs = [copy.deepcopy(e) for e in family.train_envs(config.episodes_per_iteration, gen)]
        rollout, episodes = play(policy, tokenizer, envs, config, gen)
        buffer.add([rollout.select(slice(i, i + 1)) for i in range(len(rollout))], version=it)
        critic.train()
        critic_losses = []
        for _ in range(cfg.critic_steps):  # off-policy TD on replayed episodes
            batch = _stack([e.item for e in buffer.sample(cfg.critic_batch_size, it, gen)])
            values = critic(batch)
            with torch.no_grad():
                target_values = target(batch)
            targets, _, starts = utterance_td(values, target_values, batch, cfg.gamma)
            loss = masked_mean((values - targets).square(), starts)
            critic_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            critic_opt.step()
            with torch.no_grad():
                for t, o in zip(target.parameters(), critic.parameters(), strict=True):
                    t.copy_(polyak(t, o, cfg.polyak_alpha))
            critic_losses.append(loss.item())
        actor_loss = float("nan")
        if it >= cfg.warmup_iterations:
            actor_loss = _actor_update(config, policy, critic, rollout, buffer, it, gen, actor_opt)
        stats = episode_stats(episodes)
        if on_iteration:
            on_iteration({"iteration": it + 1, "episodes": (it + 1) * config.episodes_per_iteration,
                          "train/success": stats.success, "train/return": stats.mean_return,
                          "loss/critic": sum(critic_losses) / len(critic_losses), "loss/actor": actor_loss,
                          "replay/size": len(buffer), "env/errors": stats.errors})
    return critic


def _actor_update(
    config: AgentConfig, policy: PreTrainedModel, critic: Critic, fresh: MultiTurnRollout, buffer: ReplayBuffer,
    version: int, gen: torch.Generator, optimizer: torch.optim.Optimizer,
) -> float:
    """Token-level policy gradient with the critic's utterance advantages; returns the last loss."""
    cfg = config.archer
    rows = [fresh]
    if cfg.replay_actor_episodes:
        rows.append(_stack([e.item for e in buffer.sample(cfg.replay_actor_episodes, version, gen)]))
    batch = _stack([r.select(slice(i, i + 1)) for r in rows for i in range(len(r))])
    critic.eval()
    with torch.no_grad():
        values = critic(batch)
    _, per_turn, starts = utterance_td(values, values, batch, cfg.gamma)
    per_turn = masked_whiten(per_turn, starts)
    advantages = spread_over_turns(per_turn, batch)  # (B, T)
    mask = batch.completion_mask
    policy.train()
    loss_value = float("nan")
    for _ in range(cfg.actor_epochs):
        logprobs, _, _ = score_completions(policy, batch, config.episode.temperature)
        weights = truncated_importance_weights(logprobs, batch.logprobs, mask, cfg.ratio_cap)
        loss = masked_mean(-weights * advantages * logprobs, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
    policy.eval()
    return loss_value

"""A hierarchical actor-critic in the spirit of ArCHer (Zhou et al., 2024, arXiv:2402.19446).

Two levels. The *utterance-level critic* V(s_k), s_k the dialogue before agent turn k, is a value
head on its own copy of the trunk, read at the first token of each agent turn. It is trained
off-policy from a replay buffer of episodes with one-step TD targets on turns (paper, eq. 2-3;
``rlft.algorithms.utterance``):

    y_k = r_k + gamma * V_target(s_{k+1})      (0 after the last turn)

with a Polyak-averaged target critic. The *token-level actor* is the LM: every token of turn k
gets the critic's utterance advantage A_k = r_k + gamma * V(s_{k+1}) - V(s_k) (whitened over the
batch), and the policy gradient -w_t * A_k * log pi(a_t | s_t) is taken on fresh episodes plus,
optionally, replayed ones, with w_t the importance ratio pi / mu truncated at ``ratio_cap``.

Differences from the paper: the critic learns V only, not Q(s, a) and V (with one-step targets and
the utterance as the action, r + gamma V(s') is an unbiased sample of Q(s, a), so one head does);
the actor has no token-level baseline; the critic is a copy of the warm-started LM, not RoBERTa.

One harness step (:class:`ArcherTrainer`) is one iteration: ``episodes_per_iteration`` fresh
episodes into the buffer, ``critic_steps`` TD steps on replayed ones, then (after
``warmup_iterations``) the actor's update. The buffer, the target critic and the generator are
checkpointed, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from transformers import PreTrainedModel

from rlft.algorithms.advantages import masked_whiten
from rlft.algorithms.aggregation import masked_mean
from rlft.algorithms.importance import truncated_importance_weights
from rlft.algorithms.q_learning import polyak
from rlft.algorithms.utterance import spread_over_turns, utterance_td
from rlft.common.optim import adamw
from rlft.config.agent import AgentConfig, policy_learning_rate
from rlft.models.device import model_device
from rlft.models.value_head import ValueHead
from rlft.rollout.multiturn import MultiTurnRollout
from rlft.rollout.replay import ReplayBuffer, ReplayEntry
from rlft.rollout.sampling import score_completions
from rlft.trainers.agent import AgentTrainer, episode_metrics, play
from rlft.trainers.run import RunSession


class Critic(torch.nn.Module):
    def __init__(self, trunk: PreTrainedModel) -> None:
        super().__init__()
        self.trunk, self.head = trunk, ValueHead(trunk.config.hidden_size).to(model_device(trunk))

    def forward(self, rollout: MultiTurnRollout) -> torch.Tensor:
        return score_completions(self.trunk, rollout, 1.0, False, self.head)[2]  # (B, T)


def stack_rollouts(rows: list[MultiTurnRollout]) -> MultiTurnRollout:
    """Rollouts of different widths as one: prompts left-padded, completions right-padded."""
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


def critic_td_step(
    critic: Critic, target: Critic, optimizer: torch.optim.Optimizer, batch: MultiTurnRollout, gamma: float,
    polyak_alpha: float,
) -> tuple[float, bool]:
    """One TD step of the critic toward the target critic's one-step targets, then the target's
    Polyak update. Returns (loss, finite); a non-finite loss or gradient changes no weight."""
    values = critic(batch)
    with torch.no_grad():
        target_values = target(batch)
    targets, _, starts = utterance_td(values, target_values, batch.token_rewards, batch.turn_index, gamma)
    loss = masked_mean((values - targets).square(), starts)
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return float("nan"), False
    loss.backward()
    if not math.isfinite(float(torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0))):
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), False
    optimizer.step()
    with torch.no_grad():
        for t, o in zip(target.parameters(), critic.parameters(), strict=True):
            t.copy_(polyak(t, o, polyak_alpha))
    return loss.item(), True


def actor_update(
    config: AgentConfig, policy: PreTrainedModel, critic: Critic, batch: MultiTurnRollout,
    optimizer: torch.optim.Optimizer,
) -> tuple[float, bool]:
    """Token-level policy gradient with the critic's utterance advantages on ``batch`` (fresh
    episodes, then replayed ones). Returns (the last loss, finite)."""
    cfg = config.archer
    critic.eval()
    with torch.no_grad():
        values = critic(batch)
    _, per_turn, starts = utterance_td(values, values, batch.token_rewards, batch.turn_index, cfg.gamma)
    per_turn = masked_whiten(per_turn, starts)
    advantages = spread_over_turns(per_turn, batch.turn_index)  # (B, T)
    mask = batch.completion_mask
    policy.train()
    loss_value, finite = float("nan"), True
    for _ in range(cfg.actor_epochs):
        logprobs, _, _ = score_completions(policy, batch, config.episode.temperature)
        weights = truncated_importance_weights(logprobs, batch.logprobs, mask, cfg.ratio_cap)
        loss = masked_mean(-weights * advantages * logprobs, mask)
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            finite = math.isfinite(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)))
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
        loss_value = loss.item()
    policy.eval()
    return loss_value, finite


def replay_state(buffer: ReplayBuffer) -> dict[str, Any]:
    """The buffer's episodes (their tensors, by field) and versions, for a checkpoint."""
    return {"items": [dataclasses.asdict(e.item) for e in buffer.entries],
            "versions": [e.version for e in buffer.entries]}


def load_replay_state(buffer: ReplayBuffer, state: dict[str, Any], device: torch.device) -> None:
    """The buffer a checkpoint saved, its episodes on ``device`` (checkpoints load on the CPU)."""
    buffer.entries.clear()
    buffer.entries.extend(ReplayEntry(MultiTurnRollout(**item).to(device), version)
                          for item, version in zip(state["items"], state["versions"], strict=True))


class ArcherTrainer(AgentTrainer):
    """ArCHer (``algorithm: archer``) for the run harness: one step is one iteration."""

    def __init__(self, config: AgentConfig, session: RunSession, progress: bool = True) -> None:
        super().__init__(config, session, progress)
        cfg = config.archer
        self.critic = Critic(copy.deepcopy(self.policy))
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = adamw(self.critic.parameters(), cfg.critic_learning_rate)
        self.actor_opt = adamw(self.policy.parameters(), policy_learning_rate(config))
        self.buffer = ReplayBuffer(cfg.buffer_capacity, cfg.max_staleness)
        self.gen = torch.Generator().manual_seed(config.seed)

    def modules(self) -> torch.nn.Module:
        return torch.nn.ModuleDict({"policy": self.policy, "critic": self.critic, "target_critic": self.target})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state(), "replay": replay_state(self.buffer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])
        load_replay_state(self.buffer, state["replay"], self.device)

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        config, cfg, gen = self.config, self.config.archer, self.gen
        envs = [copy.deepcopy(e) for e in self.family.train_envs(config.episodes_per_iteration, gen)]
        rollout, episodes = play(self.policy, self.tokenizer, envs, config, gen)
        self.buffer.add([rollout.select(slice(i, i + 1)) for i in range(len(rollout))], version=step)
        self.critic.train()
        critic_losses, finite = [], True
        for _ in range(cfg.critic_steps):  # off-policy TD on replayed episodes
            batch = stack_rollouts([e.item for e in self.buffer.sample(cfg.critic_batch_size, step, gen)])
            loss, finite = critic_td_step(self.critic, self.target, self.critic_opt, batch, cfg.gamma,
                                          cfg.polyak_alpha)
            if not finite:
                break
            critic_losses.append(loss)
        actor_loss = float("nan")
        if finite and step >= cfg.warmup_iterations:
            rows = [rollout]
            if cfg.replay_actor_episodes:
                rows.append(stack_rollouts([e.item for e in self.buffer.sample(cfg.replay_actor_episodes, step, gen)]))
            batch = stack_rollouts([r.select(slice(i, i + 1)) for r in rows for i in range(len(r))])
            actor_loss, finite = actor_update(config, self.policy, self.critic, batch, self.actor_opt)
        metrics = {
            **episode_metrics(episodes, (step + 1) * config.episodes_per_iteration),
            "loss/critic": sum(critic_losses) / max(len(critic_losses), 1), "loss/actor": actor_loss,
            "replay/size": len(self.buffer),
        }
        return metrics, finite

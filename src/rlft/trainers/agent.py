"""Multi-turn agents: the tiny model, its warm start on scripted dialogues, held-out evaluation,
and GRPO / PPO over whole episodes.

GRPO and PPO here are the main loop's algorithms, not copies of it: the recipe is the loop's
:class:`rlft.config.RecipeConfig` preset, the model is the loop's :class:`Learner`, advantages
come from ``ADVANTAGE_ESTIMATORS`` and the optimisation is the loop's :func:`update` (mini-batches,
micro-batches, ``micro_batch_loss``). Only collection differs: a batch is G episodes of each
episode spec played by :func:`rlft.rollout.multiturn.rollout_episodes`, whose per-turn rewards sit
on the last token of each agent turn and whose environment tokens are masked out of every loss.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
from rlft.algorithms.kl import KL_ESTIMATORS, kl_penalised_rewards
from rlft.config import RecipeConfig, config_from_dict
from rlft.envs import ENV_FAMILIES, Env, EnvFamily
from rlft.models.loading import frozen_reference, load_policy
from rlft.models.tiny import build_tiny_model
from rlft.rollout.multiturn import Episode, MultiTurnRollout, encode_demonstration, rollout_episodes
from rlft.rollout.sampling import sequence_logprobs
from rlft.config.agent import AgentConfig, policy_learning_rate
from rlft.trainers.loop import Batch, Learner, build_learner, update
from rlft.common.optim import adamw
from rlft.trainers.sft import supervised_step


def make_family(config: AgentConfig) -> EnvFamily:
    env = config.env
    if env.name == "guess":
        return ENV_FAMILIES["guess"](high=env.high, max_turns=env.max_turns, seed=env.seed)
    return ENV_FAMILIES[env.name](max_turns=env.max_turns, seed=env.seed)


def build_agent_model(config: AgentConfig, family: EnvFamily, out_dir: str | Path) -> tuple[PreTrainedModel, Any]:
    """The tiny model with a tokenizer trained on the family's text, saved in ``out_dir``."""
    build_tiny_model(config.model, family.corpus(500, config.seed), out_dir, seed=config.seed)
    return load_policy(str(out_dir))


def warm_started_agent(config: AgentConfig, family: EnvFamily) -> tuple[PreTrainedModel, Any]:
    """The tiny model (tokenizer trained on the family's text) after the recipe's warm start."""
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = build_agent_model(config, family, tmp)
    ws = config.warm_start
    warm_start_agent(model, tokenizer, family, ws.steps, ws.batch_size, ws.learning_rate, config.seed)
    return model, tokenizer


def demonstration_batch(
    tokenizer: PreTrainedTokenizerBase, demos: list[list[str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), each (B, L), right-padded; labels are -100 except on
    the agent's tokens (and their EOS), so the warm start learns the agent's side only."""
    encoded = [encode_demonstration(tokenizer, d) for d in demos]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(demos), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(demos), width), dtype=torch.long)
    labels = torch.full((len(demos), width), -100)
    for i, (row, agent) in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, : len(row)] = torch.where(torch.tensor(agent).bool(), torch.tensor(row), -100)
    return ids, mask, labels


def warm_start_agent(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: EnvFamily,
    steps: int, batch_size: int, learning_rate: float, seed: int,
) -> list[float]:
    """Supervised steps on scripted successful episodes, in place; returns the losses."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = adamw(model.parameters(), learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        demos = [family.demonstration(env, gen) for env in family.train_envs(batch_size, gen)]
        losses.append(supervised_step(model, optimizer, *demonstration_batch(tokenizer, demos)))
    model.eval()
    return losses


def play(
    policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, envs: list[Env], config: AgentConfig,
    gen: torch.Generator, greedy: bool = False,
) -> tuple[MultiTurnRollout, list[Episode]]:
    """Play ``envs`` with the recipe's caps."""
    ep = config.episode
    was_training = policy.training
    policy.eval()
    out = rollout_episodes(
        policy, tokenizer, envs, max_turns=config.env.max_turns, max_turn_tokens=ep.max_turn_tokens,
        max_total_tokens=ep.max_total_tokens, temperature=ep.temperature, generator=gen, greedy=greedy,
        on_env_error=ep.on_env_error,
    )
    policy.train(was_training)
    return out


@dataclass
class SuccessStats:
    success: float
    mean_return: float
    mean_turns: float
    errors: int


def episode_stats(episodes: list[Episode]) -> SuccessStats:
    n = max(len(episodes), 1)
    return SuccessStats(
        success=sum(e.success for e in episodes) / n,
        mean_return=sum(e.total_reward for e in episodes) / n,
        mean_turns=sum(len(e.rewards) for e in episodes) / n,
        errors=sum(e.error is not None for e in episodes),
    )


def evaluate_agent(
    policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, family: EnvFamily, config: AgentConfig,
    seed: int = 12345,
) -> SuccessStats:
    """Success on the held-out episodes, each played ``eval_samples`` times with sampling."""
    envs = [copy.deepcopy(e) for e in family.eval_envs() for _ in range(config.eval_samples)]
    _, episodes = play(policy, tokenizer, envs, config, torch.Generator().manual_seed(seed))
    return episode_stats(episodes)


def policy_recipe(config: AgentConfig) -> RecipeConfig:
    """The main loop's recipe for grpo / ppo over whole episodes."""
    return config_from_dict({
        "seed": config.seed,
        "algorithm": {"name": config.algorithm, "group_size": config.group_size, "gamma": 1.0},
        "train": {"batch_size": config.episodes_per_iteration, "learning_rate": policy_learning_rate(config)},
        "rollout": {"temperature": config.episode.temperature, "max_new_tokens": config.episode.max_total_tokens},
    })


def collect_episodes(
    recipe: RecipeConfig, config: AgentConfig, learner: Learner, reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase, family: EnvFamily, gen: torch.Generator, kl_coef: float,
) -> tuple[Batch, list[Episode]]:
    """G episodes per drawn episode spec, scored for the loop's :func:`update`."""
    algo, G = recipe.algorithm, recipe.algorithm.group_size
    envs = [copy.deepcopy(e) for e in family.train_envs(recipe.train.batch_size // G, gen) for _ in range(G)]
    rollout, episodes = play(learner.policy, tokenizer, envs, config, gen)
    mask = rollout.completion_mask
    with torch.no_grad():
        ref_logprobs, _ = sequence_logprobs(reference, rollout, recipe.rollout.temperature)
        old_logprobs, _, old_values = learner.score(rollout, recipe.rollout.temperature)
    kl = torch.where(mask.bool(), KL_ESTIMATORS[algo.kl_estimator](old_logprobs, ref_logprobs, clamp=algo.kl_clamp), 0.0)
    token_rewards = rollout.token_rewards
    if algo.kl_placement == "reward":
        token_rewards = kl_penalised_rewards(token_rewards, kl, mask, kl_coef)
    advantages, returns = ADVANTAGE_ESTIMATORS[algo.advantage_estimator](
        token_rewards, mask, values=old_values, group_size=G, gamma=algo.gamma, lam=algo.lam,
        scale_rewards=algo.scale_rewards,
    )
    rewards = torch.tensor([e.total_reward for e in episodes])
    single = recipe.train.epochs_per_batch == 1 and recipe.train.mini_batch_size == recipe.train.batch_size
    batch = Batch(
        rollout=rollout, problems=[], completions=["".join(e.segments) for e in episodes], rewards=rewards,
        advantages=advantages, returns=returns, ref_logprobs=ref_logprobs,
        old_logprobs=None if single else old_logprobs, old_values=old_values, kl=kl, reward_components={},
    )
    return batch, episodes


Callback = Callable[[dict[str, Any]], None]


def train_policy_gradient(
    config: AgentConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: EnvFamily,
    on_iteration: Callback | None = None,
) -> Learner:
    """GRPO or PPO over whole episodes for ``config.episodes`` episodes; trains ``policy`` in place."""
    recipe = policy_recipe(config)
    reference = frozen_reference(policy)
    learner = build_learner(recipe, policy)
    optimizer = adamw(learner.modules().parameters(), recipe.train.learning_rate)
    kl_coef = float(recipe.algorithm.kl_coef or 0.0)
    gen = torch.Generator().manual_seed(config.seed)
    iterations = max(1, config.episodes // config.episodes_per_iteration)
    for it in range(iterations):
        batch, episodes = collect_episodes(recipe, config, learner, reference, tokenizer, family, gen, kl_coef)
        metrics, finite = update(recipe, learner, optimizer, batch, gen, kl_coef)
        stats = episode_stats(episodes)
        if on_iteration:
            on_iteration({"iteration": it + 1, "episodes": (it + 1) * config.episodes_per_iteration,
                          "train/success": stats.success, "train/return": stats.mean_return,
                          "train/skipped": 0 if finite else 1, "env/errors": stats.errors, **metrics})
    return learner

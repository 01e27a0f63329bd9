"""Multi-turn agents on the run harness: the tiny model and its warm start on scripted dialogues,
held-out evaluation, and GRPO / PPO over whole episodes.

Every agent method is a :class:`rlft.trainers.run.Trainer` picked by the agent recipe's
``algorithm`` from ``rlft.trainers.registry.AGENT_TRAINERS``; what they share is
:class:`AgentTrainer`: the environment family, the warm-started base (``base_model/``), held-out
success (``eval/success``, ``eval/mean_return``, ...), the final model and the summary. The
harness does the rest (checkpoints, resume, audit log, non-finite stop).

GRPO and PPO here (:class:`EpisodePolicyGradient`) are the main loop's algorithms, not copies of
it: the recipe is the loop's :class:`rlft.config.RecipeConfig` preset, the model is the loop's
:class:`Learner`, a batch is scored by the one collector (:func:`rlft.trainers.batch.score_rollout`)
and the optimisation is the loop's :func:`update` (mini-batches, micro-batches,
``micro_batch_loss``). Only the rollout differs: a batch is G episodes of each episode spec played
by :func:`rlft.rollout.multiturn.rollout_episodes`, whose per-turn rewards sit on the last token of
each agent turn and whose environment tokens are masked out of every loss.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.common.optim import adamw
from rlft.common.run_folder import RunFolder
from rlft.config import RecipeConfig
from rlft.config.agent import AgentConfig, agent_config_to_dict, agent_rl_recipe
from rlft.envs import ENV_FAMILIES, Env, EnvFamily
from rlft.models.device import model_device, move_model
from rlft.models.dropout import disable_dropout
from rlft.models.loading import frozen_reference, load_policy, save_model_atomic
from rlft.models.tiny import build_tiny_model
from rlft.rollout.multiturn import (
    Episode,
    MultiTurnRollout,
    encode_demonstration,
    episode_info_metrics,
    rollout_episodes,
)
from rlft.schema import build
from rlft.trainers.batch import Batch, Learner, Sampler, build_learner, score_rollout
from rlft.trainers.loop import update
from rlft.trainers.run import Evaluation, RunSession, Schedule
from rlft.trainers.session import open_session
from rlft.trainers.sft import supervised_step


def make_family(config: AgentConfig) -> EnvFamily:
    """The recipe's environment family, built from the ``env:`` fields it declares (``settings``),
    after its own settings dataclass (a plugin's family) when it has one."""
    family = ENV_FAMILIES[config.env.name]
    fields = {name: getattr(config.env, name) for name in family.settings}
    own = ENV_FAMILIES.info(config.env.name).settings
    return family(build(own, config.env.settings, "env"), **fields) if own is not None else family(**fields)


def build_agent_model(config: AgentConfig, family: EnvFamily, out_dir: str | Path) -> tuple[PreTrainedModel, Any]:
    """The tiny model with a tokenizer trained on the family's text, saved in ``out_dir``."""
    build_tiny_model(config.model, family.corpus(500, config.seed), out_dir, seed=config.seed)
    return load_policy(str(out_dir))


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


def prepare_agent(config: AgentConfig, family: EnvFamily, run: RunFolder,
                  device: torch.device | None = None) -> tuple[PreTrainedModel, Any]:
    """The warm-started base every agent method starts from, on ``device`` (the CPU when None),
    saved as ``base_model/`` the first time (a copy of the recipe's ``base_model``, else the tiny
    model, its tokenizer trained on the family's text, then the warm start on scripted dialogues,
    on the device) and loaded from there, so a resumed run starts from the same weights."""
    device = device or torch.device("cpu")
    if not run.base_model.exists() and config.base_model:
        copied = Path(tempfile.mkdtemp(dir=run.root, prefix=".base_model.", suffix=".tmp"))
        shutil.copytree(config.base_model, copied, dirs_exist_ok=True)
        copied.rename(run.base_model)  # whole or not at all
    if not run.base_model.exists():
        with tempfile.TemporaryDirectory() as tmp:
            model, tokenizer = build_agent_model(config, family, tmp)
        ws = config.warm_start
        if not config.dropout:
            disable_dropout(model)
        if ws.steps:
            move_model(model, device)
        warm_start_agent(model, tokenizer, family, ws.steps, ws.batch_size, ws.learning_rate, config.seed)
        save_model_atomic(model, tokenizer, run.base_model)
    model, tokenizer = load_policy(str(run.base_model))
    return move_model(model, device), tokenizer


def play(
    policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, envs: list[Env], config: AgentConfig,
    gen: torch.Generator, greedy: bool = False,
) -> tuple[MultiTurnRollout, list[Episode]]:
    """Play ``envs`` with the recipe's caps; the rollout is on the policy's device."""
    ep = config.episode
    was_training = policy.training
    policy.eval()
    rollout, episodes = rollout_episodes(
        policy, tokenizer, envs, max_turns=config.env.max_turns, max_turn_tokens=ep.max_turn_tokens,
        max_total_tokens=ep.max_total_tokens, temperature=ep.temperature, generator=gen, greedy=greedy,
        on_env_error=ep.on_env_error,
    )
    policy.train(was_training)
    return rollout.to(model_device(policy)), episodes


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


def held_out_episodes(
    policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, family: EnvFamily, config: AgentConfig,
    seed: int = 12345,
) -> list[Episode]:
    """The held-out episodes, each spec played ``eval_samples`` times with sampling."""
    envs = [copy.deepcopy(e) for e in family.eval_envs() for _ in range(config.eval_samples)]
    return play(policy, tokenizer, envs, config, torch.Generator().manual_seed(seed))[1]


def evaluate_agent(
    policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, family: EnvFamily, config: AgentConfig,
    seed: int = 12345,
) -> SuccessStats:
    """Success on the held-out episodes, each played ``eval_samples`` times with sampling."""
    return episode_stats(held_out_episodes(policy, tokenizer, family, config, seed))


def open_agent_run(config: AgentConfig, resume: bool, trainer: Any) -> RunSession:
    """The run folder of an agent recipe (``config.yaml`` and ``config.json``), for ``trainer``
    (its class: which recipe fields it lets a resumed run change, and how many steps it plans)."""
    return open_session(
        config.run_dir, agent_config_to_dict(config), resume=resume, defaults=agent_config_to_dict(AgentConfig()),
        resumable=trainer.resumable_changes, planned_steps=trainer.planned_steps(config),
        data={"base_model": config.base_model, "ilql.data": config.ilql.data}, copies=("config.json",),
    )


class AgentTrainer:
    """What every agent trainer shares: the family, the warm-started base (``self.policy``, the
    model that is trained and saved), held-out success and the summary. A subclass builds its
    optimisers and supplies ``step()``, ``modules()``, ``optimizers()`` and its state."""

    headline = "eval/success"
    nonfinite_hint = "Lower learning_rate, or raise max_consecutive_nonfinite."
    resumable_changes = frozenset({"episodes", "device"})
    """Recipe fields a resumed run may change: more episodes extend it."""

    @staticmethod
    def planned_steps(config: AgentConfig) -> int | None:
        """Iterations of ``episodes_per_iteration`` episodes each."""
        return max(1, config.episodes // config.episodes_per_iteration)

    def __init__(self, config: AgentConfig, session: RunSession, progress: bool = True) -> None:
        self.config, self.name, self.last_eval = config, config.algorithm, float("nan")
        self.family = make_family(config)
        self.device = session.ranks.device
        self.policy, self.tokenizer = prepare_agent(config, self.family, session.run, self.device)
        if not config.dropout:  # before archer's critic copies the policy
            disable_dropout(self.policy)
        self.schedule = self.make_schedule(self.planned_steps(config) or 1, 1)

    def make_schedule(self, steps: int, steps_per_iteration: int) -> Schedule:
        config = self.config
        return Schedule(steps, config.eval_every * steps_per_iteration, config.checkpoint.every,
                        config.checkpoint.keep, config.max_consecutive_nonfinite)

    def acting_policy(self) -> torch.nn.Module:
        """The policy that plays: the LM itself (ILQL perturbs its logits)."""
        return self.policy

    def evaluate(self, step: int) -> Evaluation:
        """Held-out success; one sample episode per held-out spec (up to 8)."""
        episodes = held_out_episodes(self.acting_policy(), self.tokenizer, self.family, self.config)
        stats = episode_stats(episodes)
        self.last_eval = stats.success
        metrics = {"eval/success": stats.success, "eval/mean_return": stats.mean_return,
                   "eval/mean_turns": stats.mean_turns, "eval/env_errors": float(stats.errors),
                   **{f"eval/{name}": value for name, value in episode_info_metrics(episodes).items()}}
        samples = [{"prompt": e.segments[0], "completion": "".join(e.segments[1:]), "reward": e.total_reward,
                    "success": e.success} for e in episodes[:: self.config.eval_samples][:8]]
        return Evaluation(metrics, samples)

    def progress(self, metrics: dict[str, Any]) -> dict[str, str]:
        shown = {"eval": f"{self.last_eval:.2f}"}
        if "train/success" in metrics:
            shown["success"] = f"{metrics['train/success']:.2f}"
        return shown

    def save_final(self, run: RunFolder) -> Path:
        save_model_atomic(self.policy, self.tokenizer, run.final_model)
        return run.final_model

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {"episodes": self.config.episodes,
                "eval_episodes": len(self.family.eval_envs()) * self.config.eval_samples}


def episode_metrics(episodes: list[Episode], episodes_so_far: int) -> dict[str, float]:
    """What a step logs of the episodes it played."""
    stats = episode_stats(episodes)
    return {"episodes": episodes_so_far, "train/success": stats.success, "train/return": stats.mean_return,
            "env/errors": stats.errors, **episode_info_metrics(episodes)}


def policy_recipe(config: AgentConfig) -> RecipeConfig:
    """The main loop's recipe for grpo / ppo over whole episodes (the recipe's policy_gradient
    fields over the preset)."""
    return agent_rl_recipe(config)


def collect_episodes(
    recipe: RecipeConfig, config: AgentConfig, learner: Learner, reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase, family: EnvFamily, gen: torch.Generator, kl_coef: float,
) -> tuple[Batch, list[Episode]]:
    """G episodes per drawn episode spec, scored by the one collector for the loop's :func:`update`.

    The episode's return is its reward; each turn's reward sits on the turn's last token. The
    rollout's log-probs are not used for the update: a fresh forward gives the policy's
    (``Sampler()``), as the batch's sequences mix sampled and environment tokens."""
    G, train = recipe.algorithm.group_size, recipe.train
    envs = [copy.deepcopy(e) for e in family.train_envs(train.batch_size // G, gen) for _ in range(G)]
    rollout, episodes = play(learner.policy, tokenizer, envs, config, gen)
    returns = torch.tensor([e.total_reward for e in episodes], device=rollout.completion_mask.device)  # (B,)
    batch = score_rollout(
        recipe.algorithm, learner, reference, rollout, returns, rollout.token_rewards,
        temperature=recipe.rollout.temperature, kl_coef=kl_coef, sampler=Sampler(),
        reused=train.epochs_per_batch != 1 or train.mini_batch_size != train.batch_size,
    )
    batch.completions = ["".join(e.segments) for e in episodes]
    return batch, episodes


class EpisodePolicyGradient(AgentTrainer):
    """GRPO or PPO over whole episodes (``algorithm: grpo | ppo``): one step is one iteration of
    ``episodes_per_iteration`` episodes and one :func:`update` on them."""

    def __init__(self, config: AgentConfig, session: RunSession, progress: bool = True) -> None:
        super().__init__(config, session, progress)
        self.recipe = policy_recipe(config)
        self.reference = frozen_reference(self.policy)  # the base, before any checkpoint is loaded
        self.learner = build_learner(self.recipe, self.policy)
        self.optimizer = adamw(self.learner.modules().parameters(), self.recipe.train.learning_rate)
        self.kl_coef = float(self.recipe.algorithm.kl_coef or 0.0)
        # One generator draws the episodes, samples them and shuffles the mini-batches; its state
        # is checkpointed, so a resumed run draws what an uninterrupted one would.
        self.gen = torch.Generator().manual_seed(config.seed)

    def modules(self) -> torch.nn.Module:
        return self.learner.modules()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        batch, episodes = collect_episodes(self.recipe, self.config, self.learner, self.reference, self.tokenizer,
                                           self.family, self.gen, self.kl_coef)
        metrics, finite = update(self.recipe, self.learner, self.optimizer, batch, self.gen, self.kl_coef)
        return {**episode_metrics(episodes, (step + 1) * self.config.episodes_per_iteration), **metrics}, finite

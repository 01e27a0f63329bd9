"""DPO and IPO: offline preference optimisation against a frozen reference (``algorithm.name: dpo``).

Each step takes a batch of preference pairs ``{prompt, chosen, rejected}``, scores chosen and
rejected completions under the policy and under a frozen copy of the starting policy (the
reference), and minimises ``PREFERENCE_LOSSES[preference.loss]`` (Rafailov et al. 2023, eq. 7;
Azar et al. 2023, eq. 17). There is no sampling, reward model or critic.

How it differs from the papers: the starting policy is the recipe's base policy (``model.path``,
or the tiny model with its supervised warm start), not an SFT model trained on the chosen
completions as Rafailov et al. recommend; completions are scored up to and including EOS, so the
policy also learns where to stop; sequence log-probabilities are sums over tokens (as in the
papers; TRL's IPO averages instead, which changes the scale of tau).

Metrics per step (``metrics.jsonl``): ``dpo/loss``; ``dpo/reward_accuracy``, the share of pairs
whose implicit reward ``beta * (log pi - log ref)`` ranks chosen above rejected; ``dpo/margin``,
the mean implicit-reward gap; ``dpo/chosen_reward``, ``dpo/rejected_reward``;
``optim/grad_norm``. Held-out evaluations (``base_eval.json`` before training, ``evals.jsonl``
every ``eval.every`` steps): ``eval/pairwise_accuracy`` (implicit reward, a tie counts half, so exactly
0.5 before training), ``eval/logp_accuracy`` (share of held-out pairs with log pi(chosen) >
log pi(rejected), meaningful before training too), ``eval/margin`` and the task's held-out
``eval/accuracy``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.preference import PREFERENCE_LOSSES, sequence_logps
from rlft.common.hashing import file_sha256, folder_sha256
from rlft.common.optim import adamw, advance, current_lr, lr_schedule
from rlft.common.run_folder import RunFolder
from rlft.config import RecipeConfig
from rlft.errors import ConfigError
from rlft.evaluation import evaluate
from rlft.models.device import enable_gradient_checkpointing, model_device
from rlft.models.dropout import disable_dropout
from rlft.models.loading import frozen_reference, save_model_atomic
from rlft.models.tokens import encode_prompts
from rlft.responsible.privacy import RunScrubber
from rlft.rewards.pairs import PreferencePair, load_pairs
from rlft.rollout.sampling import score_completions
from rlft.trainers.run import Evaluation, RunSession, Schedule
from rlft.trainers.setup import prepare_base_policy
from rlft.types import Rollout


def split_pairs(
    pairs: Sequence[PreferencePair], eval_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held out): a seeded shuffle; at least one held-out pair when eval_fraction > 0."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(pairs) * eval_fraction)) if eval_fraction > 0 else 0
    if n_eval >= len(pairs):
        raise ConfigError(
            f"preference.data has {len(pairs)} pairs: too few to hold out {eval_fraction:.0%}."
        )
    held = set(order[:n_eval])
    return [pairs[i] for i in order if i not in held], [pairs[i] for i in sorted(held)]


def pair_rollout(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferencePair]) -> Rollout:
    """Chosen rows then rejected rows, (2B, P) prompts left-padded and (2B, T) completions (the
    text and EOS) right-padded, in the layout the sampler produces, so the same scoring applies."""
    return completion_rollout(
        tokenizer, [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    )


def completion_rollout(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str]
) -> Rollout:
    """Row i is prompts[i] (left-padded, (B, P)) followed by completions[i] and EOS (right-padded,
    (B, T)): the layout the sampler produces, so texts written elsewhere are scored like samples."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, list(prompts))
    # A completion is what the sampler generates after the prompt: no BOS of its own.
    rows = [
        tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        for text in completions
    ]
    width = max(len(r) for r in rows)
    completion_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    completion_mask = torch.zeros((len(rows), width))
    for i, row in enumerate(rows):
        completion_ids[i, : len(row)] = torch.tensor(row)
        completion_mask[i, : len(row)] = 1.0
    return Rollout(
        prompt_ids, prompt_mask, completion_ids, completion_mask, torch.zeros_like(completion_mask)
    )


def chosen_rejected_logps(
    model: PreTrainedModel, batch: Rollout
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(chosen | prompt), log pi(rejected | prompt): (B,) each, from one (2B, ...) pass on
    the model's device."""
    batch = batch.to(model_device(model))
    logprobs, _, _ = score_completions(model, batch)  # (2B, T)
    logps = sequence_logps(logprobs, batch.completion_mask)  # (2B,)
    n = len(batch) // 2
    return logps[:n], logps[n:]


def preference_loss(
    config: RecipeConfig, policy: PreTrainedModel, reference: PreTrainedModel, batch: Rollout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards, log pi(chosen), log pi(rejected)), (B,) each."""
    pref = config.preference
    with torch.no_grad():
        ref_chosen, ref_rejected = chosen_rejected_logps(reference, batch)
    chosen, rejected = chosen_rejected_logps(policy, batch)
    extra = {"label_smoothing": pref.label_smoothing} if pref.label_smoothing else {}
    loss, chosen_rewards, rejected_rewards = PREFERENCE_LOSSES[pref.loss](
        chosen, rejected, ref_chosen, ref_rejected, pref.beta, **extra
    )
    return loss, chosen_rewards, rejected_rewards, chosen.detach(), rejected.detach()


def dpo_step(
    config: RecipeConfig,
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    pairs: Sequence[PreferencePair],
) -> tuple[dict[str, float], bool]:
    """One optimiser step on ``pairs``. Returns (metrics, finite); a non-finite loss or gradient
    leaves the weights untouched."""
    policy.train()
    loss, chosen_rewards, rejected_rewards, _, _ = preference_loss(
        config, policy, reference, pair_rollout(tokenizer, pairs)
    )
    loss = loss.mean()
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return {}, False
    loss.backward()
    grad_norm = float(
        torch.nn.utils.clip_grad_norm_(policy.parameters(), config.train.max_grad_norm)
    )
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return {}, False
    optimizer.step()
    return {
        "dpo/loss": loss.item(),
        "dpo/reward_accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
        "dpo/margin": (chosen_rewards - rejected_rewards).mean().item(),
        "dpo/chosen_reward": chosen_rewards.mean().item(),
        "dpo/rejected_reward": rejected_rewards.mean().item(),
        "optim/grad_norm": grad_norm,
    }, True


@torch.no_grad()
def evaluate_pairs(
    config: RecipeConfig,
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
) -> dict[str, float]:
    """Held-out pairwise accuracy of the implicit reward (a tie counts half), the share of pairs
    the policy gives chosen a higher log-probability than rejected, and the mean reward margin."""
    was_training = policy.training
    policy.eval()
    wins, logp_wins, margins = [], [], []
    for start in range(0, len(pairs), config.preference.batch_size):
        batch = pair_rollout(tokenizer, pairs[start : start + config.preference.batch_size])
        _, chosen_r, rejected_r, chosen, rejected = preference_loss(
            config, policy, reference, batch
        )
        wins.append((chosen_r > rejected_r).float() + 0.5 * (chosen_r == rejected_r).float())
        logp_wins.append((chosen > rejected).float())
        margins.append(chosen_r - rejected_r)
    policy.train(was_training)
    if not wins:
        return {}
    return {
        "eval/pairwise_accuracy": torch.cat(wins).mean().item(),
        "eval/logp_accuracy": torch.cat(logp_wins).mean().item(),
        "eval/margin": torch.cat(margins).mean().item(),
    }


def batch_of_step(
    train_pairs: Sequence[PreferencePair], batch_size: int, seed: int, step: int
) -> list[PreferencePair]:
    """The pairs of DPO step ``step``: each epoch is a fresh permutation seeded by (seed, epoch),
    so a resumed run sees exactly the batches an uninterrupted one would."""
    per_epoch = -(-len(train_pairs) // batch_size)
    epoch, index = divmod(step, per_epoch)
    digest = hashlib.sha256(f"{seed}:dpo-epoch:{epoch}".encode()).digest()
    order = list(range(len(train_pairs)))
    random.Random(int.from_bytes(digest[:8], "little")).shuffle(order)
    return [train_pairs[i] for i in order[index * batch_size : (index + 1) * batch_size]]


def load_preference_data(
    config: RecipeConfig, scrubber: RunScrubber
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The recipe's pairs, PII-scrubbed (privacy.scrub_pii), split into train and held out."""
    pairs = [scrubber.record(p) for p in load_pairs(config.preference.data)]
    return split_pairs(pairs, config.preference.eval_fraction, config.seed)


class DPOTrainer:
    """Offline preference optimisation (DPO, IPO) for the run harness: a step is one batch of pairs."""

    nonfinite_hint = "Lower train.learning_rate or preference.beta."

    def __init__(self, config: RecipeConfig, session: RunSession, task: Any, progress: bool = True) -> None:
        self.config, self.task, self.name = config, task, config.algorithm.name
        self.train_pairs, self.eval_pairs = load_preference_data(config, task.scrubber)
        data = Path(config.preference.data)
        session.audit.append("data", path=str(data), sha256=folder_sha256(data) if data.is_dir() else file_sha256(data),
                             train_pairs=len(self.train_pairs), eval_pairs=len(self.eval_pairs))
        self.policy, self.tokenizer = prepare_base_policy(config, task, session.run, progress,
                                                          device=session.ranks.device)
        if not config.train.dropout:
            disable_dropout(self.policy)
        self.reference = frozen_reference(self.policy)
        if config.model.gradient_checkpointing:
            enable_gradient_checkpointing(self.policy)
        self.optimizer = adamw(self.policy.parameters(), config.train.learning_rate, config.train.weight_decay,
                               float32_master=config.train.optimizer_dtype == "float32")
        steps = config.preference.epochs * -(-len(self.train_pairs) // config.preference.batch_size)
        self.schedule = Schedule(steps, config.eval.every, config.checkpoint.every, config.checkpoint.keep,
                                 config.train.max_consecutive_nonfinite)
        train = config.train
        self.lr_schedule = lr_schedule(self.optimizer, train.lr_scheduler, steps, train.warmup_steps, train.warmup_ratio)
        self.headline = "eval/pairwise_accuracy"

    def modules(self) -> torch.nn.Module:
        return self.policy

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"lr_schedule": self.lr_schedule.state_dict()}  # a step's batch follows from (seed, step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "lr_schedule" in state:
            self.lr_schedule.load_state_dict(state["lr_schedule"])

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        started = time.perf_counter()
        pairs = batch_of_step(self.train_pairs, self.config.preference.batch_size, self.config.seed, step)
        lr = current_lr(self.optimizer)
        metrics, finite = dpo_step(self.config, self.policy, self.reference, self.tokenizer, self.optimizer, pairs)
        advance(self.lr_schedule)
        return {**metrics, "train/lr": lr, "perf/step_seconds": time.perf_counter() - started}, finite

    def evaluate(self, step: int) -> Evaluation:
        """The task's held-out accuracy and the held-out pairs' preference metrics."""
        config, task = self.config, self.task
        result = evaluate(self.policy, self.tokenizer, task, task.eval_problems, config.rollout.max_new_tokens,
                          config.eval.batch_size, config.eval.temperature, config.eval.samples)
        metrics = {"eval/accuracy": result.accuracy,
                   **evaluate_pairs(config, self.policy, self.reference, self.tokenizer, self.eval_pairs)}
        samples = [
            {"prompt": problem.prompt, "completion": completion, "answer": problem.answer, "reward": reward}
            for problem, completion, reward in list(zip(task.eval_problems, result.completions, result.rewards,
                                                        strict=True))[:8]
        ]
        return Evaluation(metrics, samples)

    def progress(self, metrics: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{metrics.get('dpo/loss', float('nan')):.3f}"}

    def save_final(self, run: RunFolder) -> Path:
        save_model_atomic(self.policy, self.tokenizer, run.final_model)
        return run.final_model

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {
            "loss": self.config.preference.loss,
            "eval_size": len(self.task.eval_problems),
            "pairwise_accuracy_before": base.get("eval/pairwise_accuracy"),
            "pairwise_accuracy_after": final.get("eval/pairwise_accuracy"),
            "logp_accuracy_before": base.get("eval/logp_accuracy"),
            "logp_accuracy_after": final.get("eval/logp_accuracy"),
        }

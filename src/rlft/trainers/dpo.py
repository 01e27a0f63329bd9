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
``optim/grad_norm``. Held-out evaluations (``evals.jsonl``, before training and every
``eval.every`` steps): ``eval/pairwise_accuracy`` (implicit reward, a tie counts half, so exactly
0.5 before training), ``eval/logp_accuracy`` (share of held-out pairs with log pi(chosen) >
log pi(rejected), meaningful before training too), ``eval/margin`` and the task's held-out
``eval/accuracy``.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.preference import PREFERENCE_LOSSES, sequence_logps
from rlft.config import RecipeConfig, config_to_dict
from rlft.errors import ConfigError, NonFiniteError
from rlft.evaluation import evaluate
from rlft.models.loading import frozen_reference
from rlft.common.hashing import file_sha256, folder_sha256
from rlft.responsible.audit_log import AuditLog, run_provenance
from rlft.responsible.privacy import RunScrubber
from rlft.rewards.pairs import PreferencePair, load_pairs
from rlft.rollout.sampling import encode_prompts, score_completions
from rlft.trainers.checkpoint import (
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rlft.common.optim import adamw
from rlft.common.run_folder import RunFolder
from rlft.trainers.setup import close_run, open_run, prepare_base_policy, save_model_atomic
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
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [p.prompt for p in pairs] * 2)
    # A completion is what the sampler generates after the prompt: no BOS of its own.
    rows = [
        tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        for text in [p.chosen for p in pairs] + [p.rejected for p in pairs]
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
    """log pi(chosen | prompt), log pi(rejected | prompt): (B,) each, from one (2B, ...) pass."""
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


def _evaluate(
    config: RecipeConfig,
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Any,
    eval_pairs: list[PreferencePair],
    run: RunFolder,
    step: int,
) -> dict[str, Any]:
    result = evaluate(
        policy,
        tokenizer,
        task,
        task.eval_problems,
        config.rollout.max_new_tokens,
        config.eval.batch_size,
        config.eval.temperature,
        config.eval.samples,
    )
    record = {
        "step": step,
        "eval/accuracy": result.accuracy,
        **evaluate_pairs(config, policy, reference, tokenizer, eval_pairs),
    }
    run.append_jsonl(run.evals, record)
    for problem, completion, reward in list(
        zip(task.eval_problems, result.completions, result.rewards, strict=True)
    )[:8]:
        run.append_jsonl(
            run.samples,
            {
                "step": step,
                "prompt": problem.prompt,
                "completion": completion,
                "answer": problem.answer,
                "reward": reward,
            },
        )
    return record


def train_dpo(
    config: RecipeConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run a DPO/IPO recipe; returns the summary that is also written to ``summary.json``."""
    started = time.time()
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    run, task, fingerprint = open_run(config, resume)
    audit = AuditLog(run.root)
    audit.append(
        "run_resume" if resume else "run_start",
        config=config_to_dict(config),
        recipe_fingerprint=fingerprint,
        provenance=run_provenance(),
    )
    train_pairs, eval_pairs = load_preference_data(config, task.scrubber)
    data = Path(config.preference.data)
    audit.append(
        "data",
        path=str(data),
        sha256=folder_sha256(data) if data.is_dir() else file_sha256(data),
        train_pairs=len(train_pairs),
        eval_pairs=len(eval_pairs),
    )
    policy, tokenizer, base_accuracy = prepare_base_policy(config, task, run, progress)
    task.scrubber.write(run.root)
    if not resume:
        audit.append(
            "base_model",
            path="base_model",
            sha256=folder_sha256(run.base_model),
            base_accuracy=base_accuracy,
        )
    reference = frozen_reference(policy)
    optimizer = adamw(policy.parameters(), config.train.learning_rate, config.train.weight_decay)
    state = TrainerState(recipe_fingerprint=fingerprint)
    checkpoints = list_checkpoints(run.checkpoints)
    if resume and checkpoints:
        state = load_checkpoint(checkpoints[-1], policy, optimizer)
        for path in (run.metrics, run.evals, run.samples):
            run.truncate_jsonl(path, state.step)
    if state.step == 0 and not run.read_jsonl(run.evals):
        _evaluate(config, policy, reference, tokenizer, task, eval_pairs, run, 0)
    total = config.preference.epochs * -(-len(train_pairs) // config.preference.batch_size)
    bar = tqdm(
        total=total,
        initial=state.step,
        desc=f"offline ({config.preference.loss})",
        disable=not progress,
        dynamic_ncols=True,
    )
    for step in range(state.step, total):
        step_started = time.perf_counter()
        pairs = batch_of_step(train_pairs, config.preference.batch_size, config.seed, step)
        metrics, finite = dpo_step(config, policy, reference, tokenizer, optimizer, pairs)
        state.step = step + 1
        state.consecutive_nonfinite = 0 if finite else state.consecutive_nonfinite + 1
        state.skipped_steps += 0 if finite else 1
        if state.consecutive_nonfinite >= config.train.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"Stopped at DPO step {state.step}: {state.consecutive_nonfinite} steps in a row had a "
                "non-finite loss or gradient. Lower train.learning_rate or preference.beta."
            )
        metrics = {
            "step": state.step,
            **metrics,
            "perf/step_seconds": time.perf_counter() - step_started,
            "train/skipped": 0 if finite else 1,
        }
        if state.step % config.eval.every == 0 or state.step == total:
            metrics.update(
                _evaluate(config, policy, reference, tokenizer, task, eval_pairs, run, state.step)
            )
        run.append_jsonl(run.metrics, metrics)
        if on_step:
            on_step(metrics)
        bar.set_postfix(loss=f"{metrics.get('dpo/loss', float('nan')):.3f}")
        bar.update(1)
        if state.step % config.checkpoint.every == 0 or state.step == total:
            saved = save_checkpoint(
                run.checkpoints, policy, optimizer, state, config.checkpoint.keep
            )
            audit.append(
                "checkpoint",
                step=state.step,
                path=str(saved.relative_to(run.root)),
                sha256=folder_sha256(saved),
            )
            task.scrubber.write(run.root)  # privacy counts so far: a resumed run merges them
    bar.close()
    return _finish(config, run, audit, policy, tokenizer, task, state, base_accuracy, started)


def _finish(
    config: RecipeConfig,
    run: RunFolder,
    audit: AuditLog,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Any,
    state: TrainerState,
    base_accuracy: float,
    started: float,
) -> dict[str, Any]:
    evals = run.read_jsonl(run.evals)
    save_model_atomic(policy, tokenizer, run.final_model)
    summary = {
        "run_dir": str(run.root),
        "algorithm": config.algorithm.name,
        "loss": config.preference.loss,
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "base_accuracy": base_accuracy,
        "final_accuracy": evals[-1]["eval/accuracy"] if evals else base_accuracy,
        "eval_size": len(task.eval_problems),
        "pairwise_accuracy_before": evals[0].get("eval/pairwise_accuracy") if evals else None,
        "pairwise_accuracy_after": evals[-1].get("eval/pairwise_accuracy") if evals else None,
        "logp_accuracy_before": evals[0].get("eval/logp_accuracy") if evals else None,
        "logp_accuracy_after": evals[-1].get("eval/logp_accuracy") if evals else None,
        "seconds": round(time.time() - started, 1),
    }
    return close_run(run, task, audit, summary)

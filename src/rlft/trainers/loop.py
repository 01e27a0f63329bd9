"""The training loop: rollout, reward, advantage, update, log.

``train(config)`` runs a whole recipe: it builds (or loads) the policy, gives it the supervised
warm start, evaluates the base, then runs RL steps with checkpoints and evaluations, and ends with
a summary. ``rl_step`` is one RL step; it reads top to bottom and never branches on the
algorithm's name: the recipe's choices are looked up in the registries of ``rlft.algorithms``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
from rlft.algorithms.aggregation import aggregate_loss, masked_mean
from rlft.algorithms.kl import KL_ESTIMATORS
from rlft.algorithms.losses import clipped_surrogate_loss
from rlft.config import RecipeConfig
from rlft.errors import NonFiniteError
from rlft.evaluation import decode_completions, evaluate
from rlft.models.loading import frozen_reference
from rlft.rollout.sampling import encode_prompts, sample, sequence_logprobs
from rlft.tasks import Problem
from rlft.trainers.checkpoint import TrainerState, list_checkpoints, load_checkpoint, save_checkpoint
from rlft.trainers.run_folder import RunFolder, write_json_atomic
from rlft.trainers.setup import open_run, prepare_base_policy, save_model_atomic
from rlft.types import Rollout


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of RL step ``step``: prompts and samples depend only on (seed, step), which
    is what makes a resumed run identical to an uninterrupted one."""
    digest = hashlib.sha256(f"{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


@dataclass
class Batch:
    """A scored rollout, ready for the update. Rows are grouped: G completions per prompt."""

    rollout: Rollout
    problems: list[Problem]
    completions: list[str]
    rewards: torch.Tensor  # (B,)
    advantages: torch.Tensor  # (B, T)
    ref_logprobs: torch.Tensor  # (B, T)
    old_logprobs: torch.Tensor | None  # (B, T); None when the batch is used once (on-policy)


def collect(
    config: RecipeConfig,
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Any,
    gen: torch.Generator,
) -> Batch:
    """Rollout, reward and advantage for one step."""
    algo, G = config.algorithm, config.algorithm.group_size
    problems = [p for p in task.train_problems(config.train.batch_size // G, gen) for _ in range(G)]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    policy.eval()
    rollout = sample(
        policy,
        prompt_ids,
        prompt_mask,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=config.rollout.max_new_tokens,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
        generator=gen,
    )
    completions = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    rewards = torch.tensor(task.reward(completions, problems), dtype=torch.float32)  # (B,)
    # Outcome reward on the last counted token of each completion.
    last = (rollout.completion_mask.sum(-1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(rollout.completion_mask)
    token_rewards[torch.arange(len(problems)), last] = rewards
    advantages, _returns = ADVANTAGE_ESTIMATORS[algo.name](
        token_rewards,
        rollout.completion_mask,
        values=None,
        group_size=G,
        scale_rewards=algo.scale_rewards,
    )
    with torch.inference_mode():
        ref_logprobs, _ = sequence_logprobs(reference, rollout, config.rollout.temperature)
        old_logprobs = None
        if config.train.epochs_per_batch > 1:
            old_logprobs, _ = sequence_logprobs(policy, rollout, config.rollout.temperature)
    return Batch(
        rollout, problems, completions, rewards, advantages, ref_logprobs.clone(),
        None if old_logprobs is None else old_logprobs.clone(),
    )


def update(
    config: RecipeConfig,
    policy: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
) -> tuple[dict[str, float], bool]:
    """Optimise the policy on ``batch``; returns (metrics, all_finite).

    Micro-batch losses are normalised by whole-batch totals, so accumulating them gives the
    full-batch gradient. A non-finite loss or gradient norm skips the optimiser step.
    """
    algo, mask = config.algorithm, batch.rollout.completion_mask
    batch_tokens, batch_seqs = float(mask.sum()), float(mask.shape[0])
    totals = {"policy/kl": 0.0, "policy/entropy": 0.0, "policy/clip_fraction": 0.0, "loss/total": 0.0}
    policy.train()
    finite, grad_norm = True, 0.0
    for _epoch in range(config.train.epochs_per_batch):
        optimizer.zero_grad(set_to_none=True)
        for start in range(0, len(batch.rollout), config.train.micro_batch_size):
            rows = slice(start, start + config.train.micro_batch_size)
            micro, micro_mask = batch.rollout.select(rows), mask[rows]
            logprobs, entropy = sequence_logprobs(policy, micro, config.rollout.temperature, with_entropy=True)
            old = logprobs.detach() if batch.old_logprobs is None else batch.old_logprobs[rows]
            pg_loss, clipped = clipped_surrogate_loss(
                logprobs, old, batch.advantages[rows], algo.clip_eps, algo.clip_eps
            )
            kl = KL_ESTIMATORS[algo.kl_estimator](logprobs, batch.ref_logprobs[rows])
            loss = aggregate_loss(
                pg_loss + algo.kl_coef * kl, micro_mask, algo.loss_agg_mode,
                batch_tokens=batch_tokens, batch_sequences=batch_seqs, max_len=config.rollout.max_new_tokens,
            )
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            share = micro_mask.sum().item() / batch_tokens  # token share of this micro-batch
            totals["loss/total"] += loss.item()
            totals["policy/kl"] += masked_mean(kl.detach(), micro_mask).item() * share
            totals["policy/entropy"] += masked_mean(entropy, micro_mask).item() * share
            totals["policy/clip_fraction"] += masked_mean(clipped, micro_mask).item() * share
        if finite:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), config.train.max_grad_norm))
            finite = math.isfinite(grad_norm)
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
    epochs = config.train.epochs_per_batch
    metrics = {k: v / epochs for k, v in totals.items()}
    metrics["optim/grad_norm"] = grad_norm
    return metrics, finite


def rl_step(
    config: RecipeConfig,
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    task: Any,
    step: int,
) -> tuple[dict[str, Any], bool]:
    """One RL step. Returns (metrics, finite); a non-finite step leaves the weights untouched."""
    started = time.perf_counter()
    batch = collect(config, policy, reference, tokenizer, task, step_generator(config.seed, step))
    rollout_seconds = time.perf_counter() - started
    finite = bool(torch.isfinite(batch.rewards).all())
    update_metrics: dict[str, float] = {}
    if finite:
        update_metrics, finite = update(config, policy, optimizer, batch)
    seconds = time.perf_counter() - started
    generated = float(batch.rollout.completion_mask.sum())
    metrics = {
        "step": step + 1,
        "reward/mean": batch.rewards.mean().item(),
        "reward/std": batch.rewards.std().item(),
        "train/accuracy": (batch.rewards >= 1.0).float().mean().item(),
        **update_metrics,
        "completions/mean_length": generated / len(batch.rollout),
        "perf/tokens_per_s": generated / seconds,
        "perf/rollout_seconds": rollout_seconds,
        "perf/step_seconds": seconds,
        "train/skipped": 0 if finite else 1,
    }
    return metrics, finite


def run_eval(
    config: RecipeConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Any, run: RunFolder, step: int
) -> float:
    result = evaluate(policy, tokenizer, task, task.eval_problems, config.rollout.max_new_tokens, config.eval.batch_size)
    run.append_jsonl(run.evals, {"step": step, "eval/accuracy": result.accuracy})
    for problem, completion, reward in list(zip(task.eval_problems, result.completions, result.rewards, strict=True))[:8]:
        run.append_jsonl(
            run.samples,
            {"step": step, "prompt": problem.prompt, "completion": completion, "answer": problem.answer, "reward": reward},
        )
    return result.accuracy


def train(
    config: RecipeConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run a whole recipe; returns the summary that is also written to ``summary.json``."""
    started = time.time()
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    run, task, fingerprint = open_run(config, resume)
    policy, tokenizer, base_accuracy = prepare_base_policy(config, task, run, progress)
    reference = frozen_reference(policy)
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    state = TrainerState(kl_coef=config.algorithm.kl_coef, recipe_fingerprint=fingerprint)
    checkpoints = list_checkpoints(run.checkpoints)
    if resume and checkpoints:
        state = load_checkpoint(checkpoints[-1], policy, optimizer)
        for path in (run.metrics, run.evals, run.samples):
            run.truncate_jsonl(path, state.step)
    last_good = checkpoints[-1] if resume and checkpoints else None

    bar = tqdm(total=config.train.steps, initial=state.step, desc="RL (" + config.algorithm.name + ")",
               disable=not progress, dynamic_ncols=True)
    for step in range(state.step, config.train.steps):
        metrics, finite = rl_step(config, policy, reference, tokenizer, optimizer, task, step)
        state.step = step + 1
        state.consecutive_nonfinite = 0 if finite else state.consecutive_nonfinite + 1
        state.skipped_steps += 0 if finite else 1
        if state.consecutive_nonfinite >= config.train.max_consecutive_nonfinite:
            kept = f"The last good checkpoint, {last_good}, is intact." if last_good else "No checkpoint was written."
            raise NonFiniteError(
                f"Stopped at RL step {state.step}: {state.consecutive_nonfinite} steps in a row had a "
                f"non-finite loss, gradient or reward. {kept} Lower train.learning_rate, check the "
                "reward function, or raise train.max_consecutive_nonfinite."
            )
        if state.step % config.eval.every == 0 or state.step == config.train.steps:
            metrics["eval/accuracy"] = run_eval(config, policy, tokenizer, task, run, state.step)
        run.append_jsonl(run.metrics, metrics)
        if on_step:
            on_step(metrics)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", kl=f"{metrics.get('policy/kl', 0):.3f}",
                        eval_acc=f"{metrics.get('eval/accuracy', float('nan')):.2f}")
        bar.update(1)
        if state.step % config.checkpoint.every == 0 or state.step == config.train.steps:
            last_good = save_checkpoint(run.checkpoints, policy, optimizer, state, config.checkpoint.keep)
    bar.close()

    evals = run.read_jsonl(run.evals)
    final_accuracy = evals[-1]["eval/accuracy"] if evals else base_accuracy
    save_model_atomic(policy, tokenizer, run.final_model)
    summary = {
        "run_dir": str(run.root),
        "algorithm": config.algorithm.name,
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "base_accuracy": base_accuracy,
        "final_accuracy": final_accuracy,
        "eval_size": len(task.eval_problems),
        "seconds": round(time.time() - started, 1),
    }
    write_json_atomic(run.summary, summary)
    return summary

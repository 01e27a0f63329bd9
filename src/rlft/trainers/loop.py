"""The RL loop: rollout, reward, advantage, update, log.

:class:`RLTrainer` is the online RL trainer the run harness (``trainers/run.py``) drives: it
builds (or loads) the policy with its supervised warm start, and each :func:`rl_step` samples a
batch, scores it (:func:`rlft.trainers.batch.score_rollout`) and optimises on it. It reads top to
bottom and never branches on the algorithm's name: the recipe's choices are looked up in the
registries of ``rlft.algorithms``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.aggregation import aggregate_loss, masked_mean
from rlft.algorithms.importance import truncated_importance_weights
from rlft.algorithms.kl import KL_CONTROLLERS, KL_ESTIMATORS
from rlft.algorithms.losses import POLICY_LOSSES, clipped_value_loss, entropy_bonus
from rlft.common.optim import adamw, advance, current_lr, lr_schedule
from rlft.common.run_folder import RunFolder
from rlft.config import RecipeConfig
from rlft.models.device import cuda_memory_metrics, enable_gradient_checkpointing
from rlft.models.dropout import disable_dropout
from rlft.models.loading import frozen_reference, save_model_atomic
from rlft.rewards.base import RewardOutput
from rlft.rollout.engine import RolloutEngine, build_rollout_engine
from rlft.rollout.low_precision import low_precision_copy
from rlft.rollout.sampling import maybe_compile
from rlft.rollout.vllm_weights import check_sampler_logprob_gap
from rlft.tasks import Problem, reward_context
from rlft.trainers.async_rollout import Produced, RolloutProducer
from rlft.trainers.batch import (
    Batch,
    Learner,
    Sampler,
    batch_from_scores,
    build_learner,
    row_scores,
    training_token_rewards,
)
from rlft.trainers.curriculum import with_prompt_sampler
from rlft.trainers.parallel import Parallel, Ranks, full_state_dict, gather_rows, gather_shares
from rlft.trainers.run import Evaluation, RunSession, Schedule
from rlft.trainers.sampling_rounds import sample_batch
from rlft.trainers.setup import (
    evaluate_policy,
    prepare_base_policy,
    recipe_reward,
)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of RL step ``step``: prompts and samples depend only on (seed, step), which
    is what makes a resumed run identical to an uninterrupted one."""
    digest = hashlib.sha256(f"{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def asynchronous(config: RecipeConfig) -> bool:
    """Whether steps sample ahead in a producer thread: ``rollout.async`` on with a lag of 1 or more
    (a lag of 0 is the synchronous loop itself, so its runs are today's bit for bit)."""
    settings = config.rollout.async_
    return settings.enabled and settings.max_staleness > 0


def prepare_policy_and_reference(
    config: RecipeConfig, policy: PreTrainedModel
) -> tuple[PreTrainedModel, PreTrainedModel]:
    """Apply gradient checkpointing, LoRA and compile; the KL reference is the base with the
    adapter disabled under LoRA (one copy of the weights), otherwise a frozen copy (in bf16 under
    ``rollout.dtype: bfloat16``). Dropout is turned off first unless ``train.dropout`` (the
    critic, a copy of the policy, and the reference inherit it)."""
    if not config.train.dropout:
        disable_dropout(policy)
    if config.model.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    if config.lora.r:
        from rlft.models.lora import apply_lora, lora_reference

        lora = config.lora
        policy = apply_lora(policy, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        reference = lora_reference(policy)
    elif config.rollout.dtype == "bfloat16":
        reference = low_precision_copy(policy)
    else:
        reference = frozen_reference(policy)
    return maybe_compile(policy, config.rollout.compile), reference


RewardFn = Callable[[list[str], list[Problem]], RewardOutput]


def make_reward_fn(config: RecipeConfig, task: Any, reward: Any = None) -> RewardFn:
    """(completions, problems) -> RewardOutput (rewards, components, dense step rewards): ``reward`` (a callable given to
    ``rlft.train``), else the reward the task was built with (the dataset task), else the recipe's
    ``reward:`` spec, else the task's own verifiable reward. A reward gets ``answers``,
    ``problems`` and every extra data column as keyword lists (rlft.tasks.reward_context)."""
    from rlft.rewards import score
    from rlft.rewards.limits import LimitedReward, bind_task, limit_reward

    reward = reward or getattr(task, "reward_function", None) or recipe_reward(config)
    if reward is None:
        return lambda completions, problems: RewardOutput(task.reward(completions, problems))
    if not isinstance(reward, LimitedReward):  # a callable given to rlft.train
        limits = config.reward_limits
        reward = limit_reward(reward, limits.max_abs, limits.timeout, limits.workers)
    bind_task(reward, task)  # (a process reward takes the task's own reward as its outcome)

    def scored(completions: list[str], problems: list[Problem]) -> RewardOutput:
        out = score(reward, [p.prompt for p in problems], completions, **reward_context(problems))
        return RewardOutput(list(out.rewards), {k: list(v) for k, v in (out.components or {}).items()},
                            out.step_rewards)

    return scored


def held_out_scores(config: RecipeConfig, task: Any, reward: Any, reward_fn: RewardFn) -> Callable[..., list[float]] | None:
    """What evaluation scores with besides the task's own reward: the training reward when it is
    another one (a recipe's reward model on the reviews task), else None so that one reward is
    not computed twice (the built-in tasks' own reward; the dataset task, whose own is the recipe's)."""
    own = getattr(task, "reward_function", None)
    if (reward is None or reward is own) and (own is not None or config.reward is None):
        return None
    return lambda completions, problems: reward_fn(completions, problems).rewards


def collect(
    config: RecipeConfig,
    learner: Learner,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Any,
    gen: torch.Generator,
    kl_coef: float,
    reward_fn: RewardFn,
    engine: RolloutEngine,
    parallel: Parallel | None = None,
    produced: Produced | None = None,
) -> Batch:
    """Rollout, reward and advantage for one step; ``engine`` generates (this process's sampler,
    Ray workers, vLLM). With several ranks (``parallel``) each samples and scores its share of the
    rows and every rank ends with the whole batch (``trainers/parallel.py``). ``produced``: the
    batch the asynchronous producer sampled and rewarded (``rollout.async``), scored here."""
    parallel = parallel or Parallel()
    ranks = parallel.ranks
    learner.policy.eval()
    if produced is None:
        policy = parallel.sampling_policy(learner.policy)
        policy.eval()
        sampled = sample_batch(config, policy, tokenizer, task, gen, engine, reward_fn, ranks)
        sampler = Sampler(logprobs_are_policys=engine.logprobs_are_policys,
                          approximate_logprobs=engine.approximate_logprobs)
    else:  # sampled by older weights: its log-probs are the behaviour policy's (the loss corrects)
        sampled, sampler = produced.sampled, produced.sampler
    rollout, rewards, completions, components = sampled.rollout, sampled.rewards, sampled.completions, sampled.components
    train = config.train
    reused = train.epochs_per_batch != 1 or train.mini_batch_size != train.batch_size
    scores = row_scores(learner, reference, rollout, temperature=config.rollout.temperature, reused=reused,
                        sampler=sampler, top_p=config.rollout.top_p)
    dense = sampled.token_rewards  # a reward's step rewards, or None
    if ranks.several:
        rollout, rewards, scores, completions, components = gather_shares(
            ranks, gen, sampled.prompt_ids, sampled.prompt_mask, rollout, rewards, scores, completions, components,
            tokenizer.pad_token_id,
        )
        dense = gather_rows(ranks, dense, rollout.completion_mask.shape[1])
    token_rewards = training_token_rewards(config.algorithm, rewards, rollout.completion_mask, dense)
    batch = batch_from_scores(
        config.algorithm, rollout, rewards, token_rewards, scores, kl_coef=kl_coef, reused=reused, sampler=sampler,
    )
    mask_device = batch.rollout.completion_mask.device
    if config.algorithm.mask_truncated:  # DAPO's overlong filtering: cut-off completions teach nothing
        cut = torch.cat(ranks.gather(sampled.truncated)).to(mask_device) if ranks.several else sampled.truncated
        batch.advantages = torch.where(cut[:, None], 0.0, batch.advantages)
    batch.problems, batch.completions = sampled.problems, completions
    batch.reward_components = {k: float(torch.tensor(v).mean()) for k, v in components.items()}
    batch.sampling_stats = dict(sampled.stats)
    if engine.approximate_logprobs and batch.old_logprobs is not None and not batch.correct_sampler_in_loss:
        # The learner's log-probs are here already (rows reused): the engine's gap to them now
        # (otherwise the update's forward measures it, micro_batch_loss).
        gap = masked_mean((batch.old_logprobs - batch.rollout.logprobs).abs(), batch.rollout.completion_mask)
        batch.sampling_stats["rollout/sampler_logprob_gap"] = gap.item()
    return batch


def micro_batch_loss(
    config: RecipeConfig, learner: Learner, batch: Batch, rows: torch.Tensor, kl_coef: float,
    batch_tokens: float, batch_seqs: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of rows ``rows`` of ``batch``, normalised by the totals of their mini-batch."""
    algo = config.algorithm
    micro = batch.rollout.select(rows)
    mask = micro.completion_mask
    logprobs, entropy, values = learner.score(micro, config.rollout.temperature, with_entropy=True)
    assert entropy is not None
    # On-policy single update: the sampling policy is the current one, so the ratio is 1.
    old = logprobs.detach() if batch.old_logprobs is None else batch.old_logprobs[rows]
    advantages = batch.advantages[rows]
    sampler_stats = {}
    if batch.correct_sampler_in_loss:  # this forward is the trainer's view of the sampled tokens
        advantages = advantages * truncated_importance_weights(logprobs.detach(), micro.logprobs, mask)
        sampler_stats["rollout/sampler_logprob_gap"] = masked_mean((logprobs.detach() - micro.logprobs).abs(), mask).item()
    per_token, clipped = POLICY_LOSSES[algo.policy_loss](
        logprobs, old, advantages,
        clip_low=algo.clip_low, clip_high=algo.clip_high, clip_ratio_c=algo.clip_ratio_c, mask=mask,
    )
    kl = KL_ESTIMATORS[algo.kl_estimator](logprobs, batch.ref_logprobs[rows], clamp=algo.kl_clamp)
    if algo.kl_placement == "loss":
        per_token = per_token + kl_coef * kl
    if algo.entropy_coef:
        per_token = per_token + entropy_bonus(entropy, algo.entropy_coef)
    value_loss = torch.zeros(())
    if values is not None:
        assert batch.old_values is not None
        v_loss, _ = clipped_value_loss(values, batch.old_values[rows], batch.returns[rows], algo.value_clip)
        per_token = per_token + algo.vf_coef * v_loss
        value_loss = masked_mean(v_loss.detach(), mask)
    loss = aggregate_loss(
        per_token, mask, algo.loss_agg_mode,
        batch_tokens=batch_tokens, batch_sequences=batch_seqs, max_len=config.rollout.max_new_tokens,
    )
    stats = {
        "policy/kl": masked_mean(kl.detach(), mask).item(),
        "policy/entropy": masked_mean(entropy, mask).item(),
        "policy/clip_fraction": masked_mean(clipped, mask).item(),
        "loss/value": value_loss.item(),
        **sampler_stats,
    }
    return loss, stats


def update(
    config: RecipeConfig,
    learner: Learner,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    gen: torch.Generator,
    kl_coef: float,
    ranks: Ranks | None = None,
) -> tuple[dict[str, float], bool]:
    """Optimise on ``batch``: ``epochs_per_batch`` passes of shuffled mini-batches, each one
    optimiser step accumulated over micro-batches. Returns (metrics, all_finite).

    Micro-batch losses are normalised by their mini-batch's totals, so accumulating them gives
    the mini-batch gradient exactly. With several ``ranks`` each runs its share of every
    mini-batch and the gradients are summed across ranks. A non-finite loss or gradient norm
    skips the optimiser step.
    """
    ranks = ranks or Ranks()
    train = config.train
    assert train.mini_batch_size and train.micro_batch_size and train.epochs_per_batch
    params = [p for p in learner.modules().parameters() if p.requires_grad]
    mask = batch.rollout.completion_mask
    sums: dict[str, float] = {}
    grad_norms = []
    learner.modules().train()
    for _epoch in range(train.epochs_per_batch):
        order = torch.randperm(len(batch.rollout), generator=gen) if train.mini_batch_size < len(batch.rollout) \
            else torch.arange(len(batch.rollout))
        for mini in order.split(train.mini_batch_size):
            optimizer.zero_grad(set_to_none=True)
            mini_tokens, mini_seqs = float(mask[mini].sum()), float(len(mini))
            lo, hi = ranks.share(len(mini))
            finite = True
            for rows in mini[lo:hi].split(train.micro_batch_size):
                loss, stats = micro_batch_loss(config, learner, batch, rows, kl_coef, mini_tokens, mini_seqs)
                finite = finite and bool(torch.isfinite(loss))
                if not finite and not ranks.several:
                    break  # (ranks keep going: each runs as many passes as the others)
                loss.backward()
                weight = float(mask[rows].sum())  # token-weighted averages of the statistics
                sums["weight"] = sums.get("weight", 0.0) + weight
                sums["loss/total"] = sums.get("loss/total", 0.0) + loss.item()
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value * weight
            if not ranks.all_true(finite):
                optimizer.zero_grad(set_to_none=True)
                return {}, False
            ranks.sum_gradients(params)
            grad_norm = float(_full(torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)))
            if not math.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                return {}, False
            grad_norms.append(grad_norm)
            optimizer.step()
    sums = ranks.sum_floats(sums)
    n_updates = len(grad_norms)
    weight_total = max(sums.pop("weight", 0.0), 1.0)
    metrics = {k: v / weight_total for k, v in sums.items() if k != "loss/total"}
    metrics["loss/total"] = sums.get("loss/total", 0.0) / n_updates
    metrics["optim/grad_norm"] = sum(grad_norms) / n_updates
    return metrics, True


def _full(value: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) result as a whole tensor; a plain one as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def rl_step(
    config: RecipeConfig,
    learner: Learner,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    task: Any,
    step: int,
    kl_coef: float,
    reward_fn: RewardFn,
    engine: RolloutEngine,
    parallel: Parallel | None = None,
    producer: RolloutProducer | None = None,
) -> tuple[dict[str, Any], bool]:
    """One RL step. Returns (metrics, finite); a non-finite step leaves the weights untouched.
    With a ``producer`` (``rollout.async``) the step's batch was sampled ahead, by older weights."""
    parallel = parallel or Parallel()
    started = time.perf_counter()
    gen = step_generator(config.seed, step)
    produced, async_metrics = producer.take(step) if producer is not None else (None, {})
    if produced is not None:
        gen = produced.generator  # its state after sampling: the update shuffles with it, as in one thread
    batch = collect(config, learner, reference, tokenizer, task, gen, kl_coef, reward_fn, engine, parallel, produced)
    rollout_seconds = time.perf_counter() - started
    finite = bool(torch.isfinite(batch.rewards).all())
    update_metrics: dict[str, float] = {}
    if finite:
        update_metrics, finite = update(config, learner, optimizer, batch, gen, kl_coef, parallel.ranks)
    if config.rollout.backend == "vllm":  # a weight push that did not land stops the run here
        gap = update_metrics.get("rollout/sampler_logprob_gap", batch.sampling_stats.get("rollout/sampler_logprob_gap"))
        check_sampler_logprob_gap(float("nan") if gap is None else gap, config.rollout.vllm.max_logprob_gap, step + 1,
                                  top_p=config.rollout.top_p)
    # Workers serve the new version from the next step.
    pushed = time.perf_counter()
    if producer is not None:  # a copy into the producer's snapshots; it pushes to its engine itself
        producer.publish(step + 1, learner.policy)
    else:
        engine.push_weights(parallel.weights_for_engine(engine, learner.policy))
    update_metrics["perf/weight_sync_s"] = time.perf_counter() - pushed
    update_metrics.update(engine.metrics())
    seconds = time.perf_counter() - started
    mask = batch.rollout.completion_mask
    generated = float(mask.sum())
    metrics = {
        "step": step + 1,
        "reward/mean": batch.rewards.mean().item(),
        "reward/std": batch.rewards.std().item(),
        "train/accuracy": (batch.rewards >= 1.0).float().mean().item(),
        **{f"reward/{name}": value for name, value in batch.reward_components.items()},
        **batch.sampling_stats,
        **update_metrics,
        "policy/kl_per_sequence": float(batch.kl.sum(-1).mean()),
        "policy/kl_coef": kl_coef,
        "completions/mean_length": generated / len(batch.rollout),
        "perf/tokens_per_s": generated / seconds,
        "perf/rollout_seconds": rollout_seconds,
        "perf/step_seconds": seconds,
        "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # this rank's (Linux: KiB)
        **cuda_memory_metrics(mask.device),  # this step's peak GPU memory (on a GPU)
        **async_metrics,
        "train/skipped": 0 if finite else 1,
    }
    return metrics, finite


def headline_metric(task: Any) -> str:
    """The held-out metric a run is judged by: pass rate for data scored by a reward, accuracy
    for the built-in tasks (their own verifiable score)."""
    return "eval/pass_rate" if getattr(task, "reward_function", None) is not None else "eval/accuracy"


class RLTrainer:
    """Online RL on a task (every algorithm whose preset's trainer is ``rl``), for the harness."""

    nonfinite_hint = "Lower train.learning_rate, check the reward function, or raise train.max_consecutive_nonfinite."

    def __init__(self, config: RecipeConfig, session: RunSession, task: Any, progress: bool = True,
                 reward: Any = None) -> None:
        self.config, self.name = config, config.algorithm.name
        self.task = with_prompt_sampler(config, task)  # task.sampler: which training prompts a step draws
        self.schedule = Schedule(config.train.steps, config.eval.every, config.checkpoint.every,
                                 config.checkpoint.keep, config.train.max_consecutive_nonfinite)
        self.reward_fn = make_reward_fn(config, task, reward)
        self.eval_scores = held_out_scores(config, task, reward, self.reward_fn)
        self.parallel = Parallel(session.ranks)
        self.device = session.ranks.device
        with session.ranks.main_first():  # rank 0 warm-starts and saves base_model/; the others load it
            policy, self.tokenizer = prepare_base_policy(config, task, session.run, progress, self.eval_scores,
                                                         self.device)
        self.headline, self.last_eval = headline_metric(self.task), float("nan")
        policy, self.reference = prepare_policy_and_reference(config, policy)
        self.parallel.keep_plain_copy(policy)
        self.engine = build_rollout_engine(config, policy)
        self.learner = build_learner(config, policy)
        self.parallel.shard_learner(self.learner, self.reference)
        train = config.train
        self.optimizer = adamw(self.learner.modules().parameters(), train.learning_rate, train.weight_decay,
                               float32_master=train.optimizer_dtype == "float32")
        self.lr_schedule = lr_schedule(self.optimizer, train.lr_scheduler, train.steps, train.warmup_steps,
                                       train.warmup_ratio)
        assert config.algorithm.kl_coef is not None
        self._start_kl_control(config.algorithm.kl_coef)
        self.producer: RolloutProducer | None = None  # started by the first step (rollout.async)

    def modules(self) -> torch.nn.Module:
        return self.learner.modules()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        # The producer (rollout.async) updates the prompt sampler as it samples: read it between its batches.
        with self.producer.paused() if self.producer is not None else contextlib.nullcontext():
            sampler = self.task.sampler.state_dict()
        return {"kl_coef": self.kl_coef, "lr_schedule": self.lr_schedule.state_dict(), "prompt_sampler": sampler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start_kl_control(float(state["kl_coef"]))
        if "lr_schedule" in state:  # (checkpoints from before schedules had a constant rate)
            self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.task.sampler.load_state_dict(state.get("prompt_sampler", {}))
        # The engine was built from the weights before the checkpoint.
        self.engine.push_weights(self.parallel.weights_for_engine(self.engine, self.learner.policy))

    def _start_kl_control(self, kl_coef: float) -> None:
        algo = self.config.algorithm
        self.kl_coef = kl_coef
        self.kl_controller = KL_CONTROLLERS[algo.kl_controller](beta=kl_coef, target_kl=algo.kl_target,
                                                                horizon=algo.kl_horizon)

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        lr = current_lr(self.optimizer)
        if self.producer is None and asynchronous(self.config):  # from the step a run starts (or resumes) at
            self.producer = RolloutProducer(self.config, self.learner.policy, self.tokenizer, self.task, self.reward_fn,
                                            self.engine, step, self.schedule.steps - 1, step_generator)
        metrics, finite = rl_step(self.config, self.learner, self.reference, self.tokenizer, self.optimizer,
                                  self.task, step, self.kl_coef, self.reward_fn, self.engine, self.parallel,
                                  self.producer)
        metrics["train/lr"] = lr
        if self.producer is None:  # (the producer reports the sampler's figures as of the batch it made)
            metrics.update(self.task.sampler.metrics())
        advance(self.lr_schedule)
        if finite:  # the paper's target is a per-sequence KL (nats summed over tokens)
            self.kl_coef = self.kl_controller.update(metrics["policy/kl_per_sequence"], self.config.train.batch_size)
        return metrics, finite

    def evaluate(self, step: int) -> Evaluation:
        policy, ranks = self.parallel.sampling_policy(self.learner.policy), self.parallel.ranks
        # Rank 0 evaluates; every rank gets its result, so that all decide alike. The producer
        # (rollout.async) pauses: evaluation calls the reward it calls.
        with self.producer.paused() if self.producer is not None else contextlib.nullcontext():
            result = ranks.broadcast(
                evaluate_policy(self.config, policy, self.tokenizer, self.task, self.eval_scores) if ranks.is_main
                else None
            )
        samples = [
            {"prompt": problem.prompt, "completion": completion, "answer": problem.answer, "reward": reward}
            for problem, completion, reward in list(zip(result.problems, result.completions, result.rewards, strict=True))[:8]
        ]
        metrics = result.metrics()
        self.last_eval = metrics.get(self.headline, self.last_eval)
        return Evaluation(metrics, samples)

    def close(self) -> None:
        """Stop the producer thread (rollout.async); the harness calls it however the run ends."""
        if self.producer is not None:
            self.producer.close()
            self.producer = None

    def progress(self, metrics: dict[str, Any]) -> dict[str, str]:
        return {"reward": f"{metrics['reward/mean']:.2f}", "kl": f"{metrics.get('policy/kl', 0):.3f}",
                "eval": f"{self.last_eval:.2f}"}

    def save_final(self, run: RunFolder) -> Path:
        policy = self.parallel.sampling_policy(self.learner.policy)  # whole weights (gathered under fsdp)
        head = full_state_dict(self.learner.value_head) if self.learner.value_head is not None else None
        if self.parallel.ranks.is_main:
            save_model_atomic(policy, self.tokenizer, run.final_model)
            if head is not None:
                save_file(head, str(run.root / "value_head.safetensors"))
        return run.final_model

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {"eval_size": len(self.task.eval_problems), **self.task.sampler.summary()}

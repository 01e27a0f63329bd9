"""The training loop: rollout, reward, advantage, update, log.

``train(config)`` runs a whole recipe: it builds (or loads) the policy, gives it the supervised
warm start, evaluates the base, then runs RL steps with checkpoints and evaluations, and ends with
a summary. ``rl_step`` is one RL step; it reads top to bottom and never branches on the
algorithm's name: the recipe's choices are looked up in the registries of ``rlft.algorithms``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
from rlft.algorithms.aggregation import aggregate_loss, masked_mean
from rlft.algorithms.importance import truncated_importance_weights
from rlft.algorithms.kl import KL_CONTROLLERS, KL_ESTIMATORS, kl_penalised_rewards
from rlft.algorithms.losses import POLICY_LOSSES, clipped_value_loss, entropy_bonus
from rlft.config import RecipeConfig, config_to_dict
from rlft.errors import NonFiniteError, RlftError
from rlft.evaluation import decode_completions
from rlft.models.loading import frozen_reference
from rlft.models.value_head import ValueHead
from rlft.common.hashing import folder_sha256
from rlft.responsible.audit_log import AuditLog, run_provenance
from rlft.rollout.low_precision import LowPrecisionSampler, low_precision_copy
from rlft.rollout.sampling import (
    encode_prompts,
    maybe_compile,
    sample,
    score_completions,
    sequence_logprobs,
)
from rlft.tasks import Problem, reward_context
from rlft.trainers.checkpoint import (
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rlft.trainers.dpo import train_dpo
from rlft.common.optim import adamw
from rlft.common.run_folder import RunFolder
from rlft.trainers.setup import (
    close_run,
    evaluate_policy,
    open_run,
    prepare_base_policy,
    recipe_reward,
    save_model_atomic,
)
from rlft.types import Rollout

# Offline algorithms (config.OFFLINE_ALGORITHMS) have their own thin trainers; this dict, read at
# the top of train(), is the one place where an algorithm's name picks code.
OFFLINE_TRAINERS: dict[str, Callable[..., dict[str, Any]]] = {"dpo": train_dpo}


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
    rewards: torch.Tensor  # (B,) task reward of each completion
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T) critic targets
    ref_logprobs: torch.Tensor  # (B, T)
    old_logprobs: torch.Tensor | None  # (B, T); None when each row is used in one update only
    old_values: torch.Tensor | None  # (B, T); None without a critic
    kl: torch.Tensor  # (B, T) KL estimate of the sampling policy to the reference
    reward_components: dict[str, float]  # mean of each component of a combined reward
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
                self.policy, rollout, temperature, with_entropy, self.value_head if shared else None
            )
            if self.value_head is not None and not shared:
                _, _, values = score_completions(self.critic_trunk, rollout, temperature, False, self.value_head)
        return logprobs, entropy, values.float() if values is not None else None


def prepare_policy_and_reference(
    config: RecipeConfig, policy: PreTrainedModel
) -> tuple[PreTrainedModel, PreTrainedModel]:
    """Apply gradient checkpointing, LoRA and compile; the KL reference is the base with the
    adapter disabled under LoRA (one copy of the weights), otherwise a frozen copy (in bf16 under
    ``rollout.dtype: bfloat16``)."""
    if config.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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


def rollout_engine(config: RecipeConfig, policy: PreTrainedModel) -> Any:
    """The generation engine: None for rlft's own sampler in this process, else an object with
    ``sample(policy, prompt_ids, prompt_mask, **kw)``, ``push_weights(policy)`` and ``metrics()``."""
    if config.distributed.engine == "ray":
        from rlft.distributed.ray_engine import RayRolloutEngine

        dist = config.distributed
        return RayRolloutEngine(policy, dist.rollout_workers, dist.address)
    if config.rollout.backend == "vllm":
        from rlft.distributed.vllm_engine import VLLMRolloutEngine

        engine = VLLMRolloutEngine(policy.name_or_path, seed=config.seed)
        engine.push_weights(policy)
        return engine
    if config.rollout.dtype == "bfloat16":
        return LowPrecisionSampler(policy)
    return None


def build_learner(config: RecipeConfig, policy: PreTrainedModel) -> Learner:
    autocast = torch.bfloat16 if config.train.autocast == "bfloat16" else None
    critic = config.algorithm.critic
    if critic == "none":
        return Learner(policy, autocast=autocast)
    trunk = policy if critic == "value_head" else copy.deepcopy(policy)
    return Learner(policy, ValueHead(policy.config.hidden_size), trunk, autocast)


def outcome_token_rewards(rewards: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence rewards -> (B, T), each on its completion's last counted token."""
    last = (completion_mask.sum(-1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(completion_mask)
    token_rewards[torch.arange(len(rewards)), last] = rewards
    return token_rewards


RewardFn = Callable[[list[str], list[Problem]], tuple[list[float], dict[str, list[float]]]]


def make_reward_fn(config: RecipeConfig, task: Any, reward: Any = None) -> RewardFn:
    """(completions, problems) -> (rewards, components): ``reward`` (a callable given to
    ``rlft.train``), else the reward the task was built with (the dataset task), else the recipe's
    ``reward:`` spec, else the task's own verifiable reward. A reward gets ``answers``,
    ``problems`` and every extra data column as keyword lists (rlft.tasks.reward_context)."""
    from rlft.rewards import score

    reward = reward or getattr(task, "reward_function", None) or recipe_reward(config)
    if reward is None:
        return lambda completions, problems: (task.reward(completions, problems), {})

    def scored(completions: list[str], problems: list[Problem]) -> tuple[list[float], dict[str, list[float]]]:
        out = score(reward, [p.prompt for p in problems], completions, **reward_context(problems))
        return list(out.rewards), {k: list(v) for k, v in (out.components or {}).items()}

    return scored


def held_out_scores(config: RecipeConfig, task: Any, reward: Any, reward_fn: RewardFn) -> Callable[..., list[float]] | None:
    """What evaluation scores with besides the task's own reward: the training reward when it is
    another one (a recipe's reward model on the reviews task), else None so that one reward is
    not computed twice (the built-in tasks' own reward; the dataset task, whose own is the recipe's)."""
    own = getattr(task, "reward_function", None)
    if (reward is None or reward is own) and (own is not None or config.reward is None):
        return None
    return lambda completions, problems: reward_fn(completions, problems)[0]


def collect(
    config: RecipeConfig,
    learner: Learner,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Any,
    gen: torch.Generator,
    kl_coef: float,
    reward_fn: RewardFn,
    engine: Any = None,
) -> Batch:
    """Rollout, reward and advantage for one step. ``engine`` generates instead of this process's
    sampler when set (Ray workers, vLLM)."""
    algo, G = config.algorithm, config.algorithm.group_size
    problems = [p for p in task.train_problems(config.train.batch_size // G, gen) for _ in range(G)]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    learner.policy.eval()
    rollout = (sample if engine is None else engine.sample)(
        learner.policy,
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
    reward_list, components = reward_fn(completions, problems)
    rewards = torch.tensor(reward_list, dtype=torch.float32)  # (B,)
    mask = rollout.completion_mask
    single_update = config.train.epochs_per_batch == 1 and config.train.mini_batch_size == config.train.batch_size
    approximate = engine is not None and getattr(engine, "approximate_logprobs", False)
    correct_in_loss = approximate and single_update
    with torch.no_grad():
        ref_logprobs, _ = sequence_logprobs(reference, rollout, config.rollout.temperature)
        if learner.value_head is None and config.rollout.top_p == 1.0 and (engine is None or correct_in_loss):
            # The sampler's own log-probs are those of this policy (equal to a fresh forward
            # within 1e-5, tested), so the extra forward pass is skipped. An approximate sampler's
            # stand in here (KL statistics); the loss corrects for them with the update's forward.
            old_logprobs, old_values = rollout.logprobs, None
        else:
            old_logprobs, _, old_values = learner.score(rollout, config.rollout.temperature)
    kl = torch.where(mask.bool(), KL_ESTIMATORS[algo.kl_estimator](old_logprobs, ref_logprobs, clamp=algo.kl_clamp), 0.0)
    token_rewards = outcome_token_rewards(rewards, mask)
    if algo.kl_placement == "reward":
        token_rewards = kl_penalised_rewards(token_rewards, kl, mask, kl_coef)
    advantages, returns = ADVANTAGE_ESTIMATORS[algo.advantage_estimator](
        token_rewards,
        mask,
        values=old_values,
        group_size=G,
        gamma=algo.gamma,
        lam=algo.lam,
        scale_rewards=algo.scale_rewards,
    )
    if approximate and not correct_in_loss:
        # Truncated importance sampling (TIS) for the engine/trainer mismatch: the advantages of
        # tokens the engine over-sampled relative to the trainer are scaled down.
        advantages = advantages * truncated_importance_weights(old_logprobs, rollout.logprobs, mask)
    return Batch(
        rollout, problems, completions, rewards, advantages, returns, ref_logprobs,
        None if single_update else old_logprobs, old_values, kl,
        {k: float(torch.tensor(v).mean()) for k, v in components.items()},
        correct_sampler_in_loss=correct_in_loss,
    )


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
        clip_low=algo.clip_low, clip_high=algo.clip_high, clip_ratio_c=algo.clip_ratio_c,
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
) -> tuple[dict[str, float], bool]:
    """Optimise on ``batch``: ``epochs_per_batch`` passes of shuffled mini-batches, each one
    optimiser step accumulated over micro-batches. Returns (metrics, all_finite).

    Micro-batch losses are normalised by their mini-batch's totals, so accumulating them gives
    the mini-batch gradient exactly. A non-finite loss or gradient norm skips the optimiser step.
    """
    train = config.train
    assert train.mini_batch_size and train.micro_batch_size and train.epochs_per_batch
    params = [p for p in learner.modules().parameters() if p.requires_grad]
    mask = batch.rollout.completion_mask
    sums: dict[str, float] = {}
    weight_total, grad_norms = 0.0, []
    learner.modules().train()
    for _epoch in range(train.epochs_per_batch):
        order = torch.randperm(len(batch.rollout), generator=gen) if train.mini_batch_size < len(batch.rollout) \
            else torch.arange(len(batch.rollout))
        for mini in order.split(train.mini_batch_size):
            optimizer.zero_grad(set_to_none=True)
            mini_tokens, mini_seqs = float(mask[mini].sum()), float(len(mini))
            for rows in mini.split(train.micro_batch_size):
                loss, stats = micro_batch_loss(config, learner, batch, rows, kl_coef, mini_tokens, mini_seqs)
                if not torch.isfinite(loss):
                    optimizer.zero_grad(set_to_none=True)
                    return {}, False
                loss.backward()
                weight = float(mask[rows].sum())  # token-weighted averages of the statistics
                weight_total += weight
                sums["loss/total"] = sums.get("loss/total", 0.0) + loss.item()
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value * weight
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm))
            if not math.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                return {}, False
            grad_norms.append(grad_norm)
            optimizer.step()
    n_updates = len(grad_norms)
    metrics = {k: v / max(weight_total, 1.0) for k, v in sums.items() if k != "loss/total"}
    metrics["loss/total"] = sums.get("loss/total", 0.0) / n_updates
    metrics["optim/grad_norm"] = sum(grad_norms) / n_updates
    return metrics, True


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
    engine: Any = None,
) -> tuple[dict[str, Any], bool]:
    """One RL step. Returns (metrics, finite); a non-finite step leaves the weights untouched."""
    started = time.perf_counter()
    gen = step_generator(config.seed, step)
    batch = collect(config, learner, reference, tokenizer, task, gen, kl_coef, reward_fn, engine)
    rollout_seconds = time.perf_counter() - started
    finite = bool(torch.isfinite(batch.rewards).all())
    update_metrics: dict[str, float] = {}
    if finite:
        update_metrics, finite = update(config, learner, optimizer, batch, gen, kl_coef)
    if engine is not None:
        engine.push_weights(learner.policy)  # workers serve the new version from the next step
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
        **update_metrics,
        "policy/kl_per_sequence": float(batch.kl.sum(-1).mean()),
        "policy/kl_coef": kl_coef,
        "completions/mean_length": generated / len(batch.rollout),
        "perf/tokens_per_s": generated / seconds,
        "perf/rollout_seconds": rollout_seconds,
        "perf/step_seconds": seconds,
        "train/skipped": 0 if finite else 1,
    }
    return metrics, finite


def run_eval(
    config: RecipeConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Any, run: RunFolder,
    step: int, scores: Callable[..., list[float]] | None = None,
) -> dict[str, float]:
    """Evaluate on the held-out problems (``scores``: see :func:`held_out_scores`); appends the
    metrics to evals.jsonl and returns them."""
    result = evaluate_policy(config, policy, tokenizer, task, scores)
    metrics = result.metrics()
    run.append_jsonl(run.evals, {"step": step, **metrics})
    for problem, completion, reward in list(zip(result.problems, result.completions, result.rewards, strict=True))[:8]:
        run.append_jsonl(
            run.samples,
            {"step": step, "prompt": problem.prompt, "completion": completion, "answer": problem.answer, "reward": reward},
        )
    return metrics


def train(
    config: RecipeConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    reward: Any = None,
    task: Any = None,
) -> dict[str, Any]:
    """Run a whole recipe; returns the summary that is also written to ``summary.json``.

    ``reward`` (a batched reward callable) replaces the recipe's ``reward:``; ``task`` (an object
    following :class:`rlft.tasks.Task`) replaces its ``task:`` section.
    """
    offline = OFFLINE_TRAINERS.get(config.algorithm.name)
    if offline is not None:
        if reward is not None or task is not None:
            raise RlftError(f"algorithm.name={config.algorithm.name!r} trains on preference pairs; it takes no reward or task.")
        return offline(config, resume=resume, progress=progress, on_step=on_step)
    started = time.time()
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    run, task, fingerprint = open_run(config, resume, reward, task)
    audit = AuditLog(run.root)  # hash-chained record of the run (rlft audit verify RUN)
    audit.append("run_resume" if resume else "run_start", config=config_to_dict(config),
                 recipe_fingerprint=fingerprint, provenance=run_provenance(),
                 data_sha256=getattr(task, "data_sha256", None))
    reward_fn = make_reward_fn(config, task, reward)
    eval_scores = held_out_scores(config, task, reward, reward_fn)
    policy, tokenizer, base_accuracy = prepare_base_policy(config, task, run, progress, eval_scores)
    task.scrubber.write(run.root)  # RUN/privacy.json: PII counts, never values
    if not resume:
        audit.append("base_model", path="base_model", sha256=folder_sha256(run.base_model),
                     base_accuracy=base_accuracy)
    policy, reference = prepare_policy_and_reference(config, policy)
    engine = rollout_engine(config, policy)
    learner = build_learner(config, policy)
    optimizer = adamw(learner.modules().parameters(), config.train.learning_rate, config.train.weight_decay)
    algo = config.algorithm
    assert algo.kl_coef is not None
    state = TrainerState(kl_coef=algo.kl_coef, recipe_fingerprint=fingerprint)
    checkpoints = list_checkpoints(run.checkpoints)
    if resume and checkpoints:
        state = load_checkpoint(checkpoints[-1], learner.modules(), optimizer)
        if engine is not None:  # the engine was built from the weights before the checkpoint
            engine.push_weights(learner.policy)
        for path in (run.metrics, run.evals, run.samples):
            run.truncate_jsonl(path, state.step)
    elif resume:  # stopped before its first checkpoint: the run restarts at step 0
        for path in (run.metrics, run.evals, run.samples):
            run.truncate_jsonl(path, 0)
    kl_controller = KL_CONTROLLERS[algo.kl_controller](
        beta=state.kl_coef, target_kl=algo.kl_target, horizon=algo.kl_horizon
    )
    last_good = checkpoints[-1] if resume and checkpoints else None

    headline = headline_metric(task)
    base_metrics = json.loads(run.base_eval.read_text())
    if progress:
        tqdm.write(f"held-out {headline.removeprefix('eval/')} before RL: {base_metrics[headline]:.1%} "
                   f"({len(task.eval_problems)} problems)")
    evals_so_far = run.read_jsonl(run.evals)
    last_eval = (evals_so_far[-1] if evals_so_far else base_metrics)[headline]
    bar = tqdm(total=config.train.steps, initial=state.step, desc="RL (" + config.algorithm.name + ")",
               disable=not progress, dynamic_ncols=True)
    for step in range(state.step, config.train.steps):
        metrics, finite = rl_step(
            config, learner, reference, tokenizer, optimizer, task, step, state.kl_coef, reward_fn, engine
        )
        if finite:  # the paper's target is a per-sequence KL (nats summed over tokens)
            state.kl_coef = kl_controller.update(metrics["policy/kl_per_sequence"], config.train.batch_size)
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
            metrics.update(run_eval(config, policy, tokenizer, task, run, state.step, eval_scores))
        run.append_jsonl(run.metrics, metrics)
        if on_step:
            on_step(metrics)
        last_eval = metrics.get(headline, last_eval)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", kl=f"{metrics.get('policy/kl', 0):.3f}",
                        eval_acc=f"{last_eval:.2f}")
        bar.update(1)
        if state.step % config.checkpoint.every == 0 or state.step == config.train.steps:
            last_good = save_checkpoint(run.checkpoints, learner.modules(), optimizer, state, config.checkpoint.keep)
            audit.append("checkpoint", step=state.step, path=str(last_good.relative_to(run.root)),
                         sha256=folder_sha256(last_good))
            task.scrubber.write(run.root)  # privacy counts so far: a resumed run merges them
    bar.close()
    return finish_run(config, run, learner, tokenizer, task, audit, state, base_accuracy, started)


def finish_run(
    config: RecipeConfig, run: RunFolder, learner: Learner, tokenizer: PreTrainedTokenizerBase,
    task: Any, audit: AuditLog, state: TrainerState, base_accuracy: float, started: float,
) -> dict[str, Any]:
    """Save the final model, write the summary and close the audit trail; returns the summary."""
    evals = run.read_jsonl(run.evals)
    base_metrics = json.loads(run.base_eval.read_text())
    final_metrics = evals[-1] if evals else base_metrics
    final_accuracy = final_metrics["eval/accuracy"]
    save_model_atomic(learner.policy, tokenizer, run.final_model)
    if learner.value_head is not None:
        save_file(learner.value_head.state_dict(), str(run.root / "value_head.safetensors"))
    summary = {
        "run_dir": str(run.root),
        "algorithm": config.algorithm.name,
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "base_accuracy": base_accuracy,
        "final_accuracy": final_accuracy,
        **eval_summary(base_metrics, final_metrics, headline_metric(task)),
        "eval_size": len(task.eval_problems),
        "seconds": round(time.time() - started, 1),
    }
    return close_run(run, task, audit, summary)


def headline_metric(task: Any) -> str:
    """The held-out metric a run is judged by: pass rate for data scored by a reward, accuracy
    for the built-in tasks (their own verifiable score)."""
    return "eval/pass_rate" if getattr(task, "reward_function", None) is not None else "eval/accuracy"


def eval_summary(base: dict[str, Any], final: dict[str, Any], headline: str) -> dict[str, Any]:
    """base_* and final_* of every held-out metric besides accuracy, and which one is the headline."""
    out: dict[str, Any] = {"headline_metric": headline.removeprefix("eval/")}
    for key in final:
        if key.startswith("eval/") and key != "eval/accuracy" and key in base:
            name = key.removeprefix("eval/")
            out[f"base_{name}"], out[f"final_{name}"] = base[key], final[key]
    return out

"""Typed, validated recipes.

A recipe is YAML that maps onto the frozen dataclasses below. It is validated once, at load time:
an unknown key names the nearest valid one, a wrong type or an out-of-range value names the field,
the value and what is allowed. The resolved config (every default filled in) is written into the
run folder and never mutated afterwards.

Each field carries its documentation in ``metadata["help"]``; ``docs/recipes.md`` is generated
from it (``python -m rlft.config``) and a test checks the two agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from rlft.errors import ConfigError

T = TypeVar("T")


def _f(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with its documentation and range checks (ge, gt, le, lt)."""
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the small Qwen2-architecture model rlft builds offline when ``model.path`` is empty."""

    hidden_size: int = _f(256, "Width of the residual stream.", ge=8)
    num_layers: int = _f(4, "Number of transformer blocks.", ge=1)
    num_heads: int = _f(4, "Attention heads.", ge=1)
    num_kv_heads: int = _f(2, "Key/value heads (grouped-query attention); must divide num_heads.", ge=1)
    intermediate_size: int = _f(768, "Hidden width of the MLP.", ge=8)
    vocab_size: int = _f(320, "Target vocabulary size of the byte-level BPE tokenizer trained on task text.", ge=260)
    context_length: int = _f(512, "Longest sequence (prompt + completion), in tokens: max_position_embeddings.", ge=16)


@dataclass(frozen=True)
class ModelConfig:
    """Which causal language model to train."""

    path: str | None = _f(
        None,
        "A local Hugging Face model folder or a hub id. Empty: build the tiny model offline.",
    )
    tiny: TinyModelConfig = _f(TinyModelConfig(), "Shape of the offline model (used when path is empty).")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "Parameter dtype.")
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in the backward pass: less memory, about 30% more compute."
    )


@dataclass(frozen=True)
class TaskConfig:
    """The task: prompts, answers and the verifiable reward."""

    name: Literal["arithmetic", "reviews", "dataset"] = _f(
        "arithmetic",
        "Which task (rlft.tasks.TASKS): 'arithmetic' (verifiable answers), 'reviews' (two-clause "
        "reviews whose quality is a preference; the RLHF example's task, docs/rlhf.md) or 'dataset' "
        "(your own prompts and answers from a file, scored by the recipe's reward; docs/datasets.md).",
    )
    data: str = _f(
        "", "dataset: the training data: a .jsonl/.json/.csv/.parquet file, a datasets.save_to_disk "
        "folder or a hub dataset id.",
    )
    split: str = _f("train", "dataset: the split of task.data to read (hub ids and saved DatasetDicts).")
    eval_data: str = _f(
        "", "dataset: held-out data in any format task.data takes. Empty: hold out task.eval_fraction "
        "of task.data's distinct prompts (seeded by task.seed; never trained on).",
    )
    eval_split: str = _f("test", "dataset: the split of task.eval_data to read (hub ids and DatasetDicts).")
    eval_fraction: float = _f(
        0.1, "dataset: share of task.data's distinct prompts held out when task.eval_data is empty.", ge=0, lt=1
    )
    prompt_field: str = _f(
        "prompt", "dataset: the column of the prompt: a string, or a list of {role, content} messages."
    )
    answer_field: str | None = _f(
        "answer",
        "dataset: the column of the reference answer (reaches rewards as `answers`; the warm "
        "start's target). null for data without answers.",
    )
    system_prompt: str | None = _f(
        None, "dataset: a system message put before each conversational prompt that has none."
    )
    chat_template: Literal["auto", "none", "always"] = _f(
        "auto",
        "dataset: auto renders conversational prompts with the tokenizer's chat template and leaves "
        "string prompts as plain text; always also sends each string prompt as a user message; "
        "none refuses conversational prompts.",
    )
    digits: int = _f(2, "Operands have at most this many digits.", ge=1, le=6)
    operations: list[str] = _f(["+"], "Operations to draw from: any of '+', '-', '*'.")
    eval_size: int = _f(
        256, "Number of held-out problems (never seen in training); dataset: at most this many "
        "held-out rows are evaluated.", ge=1,
    )
    seed: int = _f(1234, "Seed of the problem split (kept apart from the training seed).")
    answer_format: Literal["answer", "steps"] = _f(
        "steps",
        "'answer': the completion is the answer; 'steps': column-addition steps, then '#' and the "
        "answer (only the answer is rewarded; '+' only).",
    )


@dataclass(frozen=True)
class WarmStartConfig:
    """A short supervised stage so that the base policy solves some problems but far from all."""

    steps: int = _f(160, "Supervised steps on (prompt, target) pairs. 0 skips the warm start.", ge=0)
    batch_size: int = _f(64, "Examples per supervised step.", ge=1)
    learning_rate: float = _f(1e-3, "AdamW learning rate of the warm start.", gt=0)
    target_field: str | None = _f(
        None, "dataset: the column the warm start imitates. Empty: task.answer_field."
    )
    data: str = _f(
        "", "dataset: demonstrations to warm-start on instead of the training split (same columns: "
        "task.prompt_field and the target).",
    )


@dataclass(frozen=True)
class RolloutConfig:
    """How completions are sampled from the policy."""

    temperature: float = _f(1.0, "Sampling temperature.", gt=0)
    top_p: float = _f(1.0, "Nucleus sampling: keep the smallest set of tokens with this much mass.", gt=0, le=1)
    max_new_tokens: int = _f(24, "Longest completion, in tokens; sampling stops earlier at EOS.", ge=1)
    max_prompt_tokens: int | None = _f(
        None, "Refuse data with prompts longer than this many tokens. Empty: the model's context "
        "window minus max_new_tokens.", ge=1,
    )
    backend: Literal["hf", "vllm"] = _f(
        "hf", "Generation engine: hf (rlft's KV-cache sampler) or vllm (GPU only; docs/distributed.md)."
    )
    compile: bool = _f(False, "torch.compile the policy (pays off for long runs of larger models).")
    dtype: Literal["model", "bfloat16"] = _f(
        "model",
        "Precision of sampling and of the reference pass: model (the policy's own dtype) or bfloat16 "
        "(bf16 copies; the learner stays float32; truncated importance weights correct the mismatch; "
        "docs/performance.md).",
    )


# The fields of the task section each task reads (``name`` aside); setting another is refused.
TASK_FIELDS: dict[str, frozenset[str]] = {
    "arithmetic": frozenset({"digits", "operations", "answer_format", "eval_size", "seed"}),
    "reviews": frozenset({"eval_size", "seed"}),
    "dataset": frozenset({"data", "split", "eval_data", "eval_split", "eval_fraction", "prompt_field",
                          "answer_field", "system_prompt", "chat_template", "eval_size", "seed"}),
}

ALGORITHMS = ("grpo", "dr_grpo", "rloo", "reinforce", "reinforce_pp", "ppo", "a2c")
# Offline algorithms train on a fixed data set instead of rollouts; each has its own thin trainer
# (rlft.trainers.loop.OFFLINE_TRAINERS) and no RL preset.
OFFLINE_ALGORITHMS = ("dpo",)
# PPO's default learning rate: its 4 epochs x 4 mini-batches make 16 optimiser steps per batch, so
# it takes smaller ones than the single-update algorithms (1e-4 collapsed it on the arithmetic
# benchmark, docs/algorithms.md).
PPO_LEARNING_RATE = 3e-5

# Each algorithm is a named combination of registry entries (see docs/algorithms.md). A recipe may
# override any of these; fields it leaves empty (null) take the algorithm's value.
ALGORITHM_PRESETS: dict[str, dict[str, Any]] = {
    # Shao et al. (2024), DeepSeekMath: group-normalised outcome advantages, clipped surrogate,
    # k3 KL in the loss. Token-mean aggregation (as in DAPO / TRL) rather than the paper's
    # sequence mean, so long completions are not down-weighted per token.
    "grpo": dict(advantage_estimator="grpo", policy_loss="ppo_clip", critic="none", scale_rewards=True,
                 kl_placement="loss", kl_estimator="k3", kl_coef=0.04, loss_agg_mode="token_mean"),
    # Liu et al. (2025), "Understanding R1-Zero-Like Training": no std scaling, no length
    # normalisation (constant normaliser), no KL.
    "dr_grpo": dict(advantage_estimator="grpo", policy_loss="ppo_clip", critic="none", scale_rewards=False,
                    kl_placement="loss", kl_estimator="k3", kl_coef=0.0, loss_agg_mode="seq_mean_token_sum_norm"),
    # Ahmadian et al. (2024), "Back to Basics": leave-one-out baseline, REINFORCE on whole
    # sequences, KL to the reference as a reward penalty.
    "rloo": dict(advantage_estimator="rloo", policy_loss="vanilla_pg", critic="none", scale_rewards=False,
                 kl_placement="reward", kl_estimator="k1", kl_coef=0.05, loss_agg_mode="seq_mean_token_mean"),
    # Williams (1992) with a batch-mean baseline.
    "reinforce": dict(advantage_estimator="reinforce", policy_loss="vanilla_pg", critic="none",
                      scale_rewards=False, kl_placement="reward", kl_estimator="k1", kl_coef=0.05,
                      loss_agg_mode="seq_mean_token_mean"),
    # Hu (2025), REINFORCE++: global batch normalisation, clipped surrogate, token KL in the reward.
    "reinforce_pp": dict(advantage_estimator="reinforce_pp", policy_loss="ppo_clip", critic="none",
                         scale_rewards=True, kl_placement="reward", kl_estimator="k1", kl_coef=0.01,
                         loss_agg_mode="token_mean"),
    # Schulman et al. (2017) as used for RLHF by Ziegler et al. (2019) / Ouyang et al. (2022): a
    # critic on the policy's trunk, GAE, several epochs of minibatches, KL penalty in the reward.
    "ppo": dict(advantage_estimator="gae", policy_loss="ppo_clip", critic="value_head", scale_rewards=True,
                kl_placement="reward", kl_estimator="k1", kl_coef=0.05, loss_agg_mode="token_mean"),
    # Mnih et al. (2016), synchronous advantage actor-critic: one on-policy update per batch.
    "a2c": dict(advantage_estimator="gae", policy_loss="vanilla_pg", critic="value_head", scale_rewards=True,
                kl_placement="reward", kl_estimator="k1", kl_coef=0.05, loss_agg_mode="token_mean",
                lam=1.0, entropy_coef=0.01),
}


@dataclass(frozen=True)
class AlgorithmConfig:
    """The RL algorithm: a named combination of an advantage estimator, a policy loss, a critic
    and KL control. Fields left empty take the value of the named algorithm (``ALGORITHM_PRESETS``)."""

    name: Literal["grpo", "dr_grpo", "rloo", "reinforce", "reinforce_pp", "ppo", "a2c", "dpo"] = _f(
        "grpo",
        "Which algorithm; sets the defaults of the fields below (docs/algorithms.md). 'dpo' trains "
        "offline on preference pairs (the preference section) and ignores the RL fields.",
    )
    advantage_estimator: Literal["grpo", "rloo", "reinforce", "reinforce_pp", "gae"] | None = _f(
        None, "Advantage estimator (rlft.algorithms.advantages.ADVANTAGE_ESTIMATORS)."
    )
    policy_loss: Literal["ppo_clip", "vanilla_pg"] | None = _f(
        None, "Policy loss (rlft.algorithms.losses.POLICY_LOSSES)."
    )
    critic: Literal["none", "value_head", "separate"] | None = _f(
        None, "Critic: none, a value head on the policy's trunk, or a separate copy of the model with its own head."
    )
    group_size: int = _f(8, "Completions sampled per prompt (G).", ge=1)
    clip_low: float = _f(0.2, "PPO clip range below 1 of the importance ratio.", gt=0, lt=1)
    clip_high: float = _f(0.2, "PPO clip range above 1 (larger than clip_low = DAPO's clip-higher).", gt=0)
    clip_ratio_c: float | None = _f(None, "Dual-clip bound for negative advantages (e.g. 3.0); empty disables it.", gt=1)
    kl_coef: float | None = _f(None, "Initial weight of the KL penalty to the reference model (beta).", ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] | None = _f(None, "Estimator of KL(policy || reference).")
    kl_placement: Literal["loss", "reward"] | None = _f(
        None, "Where the KL penalty goes: a term of the loss (GRPO) or a per-token reward penalty (PPO)."
    )
    kl_controller: Literal["fixed", "adaptive"] = _f(
        "fixed", "Fixed beta, or the adaptive controller of Ziegler et al. (2019) that steers toward kl_target."
    )
    kl_target: float = _f(6.0, "Target KL (nats per sequence) of the adaptive controller.", gt=0)
    kl_horizon: int = _f(10000, "Horizon (samples) of the adaptive controller.", ge=1)
    kl_clamp: float | None = _f(
        10.0,
        "Cap on the per-token KL estimate (k1 to [-cap, cap]). Where the cap is active the KL term has "
        "no gradient: with 10, k3 tokens below a log-ratio of -2.61 (docs/algorithms.md). Empty: no cap.",
        gt=0,
    )
    scale_rewards: bool | None = _f(
        None, "Divide advantages by a std (group std for grpo, batch std for reinforce_pp/gae); False for grpo is Dr.GRPO."
    )
    loss_agg_mode: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] | None = _f(
        None, "How per-token losses are averaged into one number."
    )
    gamma: float = _f(1.0, "Discount per token (gae, reinforce_pp).", ge=0, le=1)
    lam: float | None = _f(None, "GAE lambda (0.95 for ppo, 1.0 for a2c).", ge=0, le=1)
    entropy_coef: float | None = _f(None, "Weight of the entropy bonus (0.01 for a2c, 0 otherwise).", ge=0)
    vf_coef: float = _f(0.5, "Weight of the critic's value loss.", ge=0)
    value_clip: float | None = _f(0.2, "Value clipping range of the critic loss; empty disables it.", gt=0)

    def resolved(self) -> AlgorithmConfig:
        """This config with every empty field taken from the named algorithm."""
        if self.name not in ALGORITHM_PRESETS:  # offline (dpo): no RL fields to fill
            return self
        preset = {"lam": 0.95, "entropy_coef": 0.0, **ALGORITHM_PRESETS[self.name]}
        fill = {k: v for k, v in preset.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)


@dataclass(frozen=True)
class TrainConfig:
    """The RL optimisation."""

    steps: int = _f(100, "Optimiser steps of RL.", ge=0)
    batch_size: int = _f(128, "Completions per step; must be a multiple of algorithm.group_size.", ge=1)
    micro_batch_size: int | None = _f(
        None, "Completions per forward/backward pass (gradient accumulation). Empty: the mini-batch size.", ge=1
    )
    epochs_per_batch: int | None = _f(
        None, "Passes over each rollout batch (sample reuse). Empty: 4 for ppo, 1 otherwise.", ge=1
    )
    mini_batch_size: int | None = _f(
        None, "Completions per optimiser step within a batch. Empty: batch_size/4 for ppo, batch_size otherwise.", ge=1
    )
    learning_rate: float | None = _f(
        None,
        "AdamW learning rate. Empty: 3e-5 for ppo (its 4 epochs x 4 mini-batches make 16 optimiser "
        "steps per batch; 1e-4 collapsed it on the arithmetic benchmark), 1e-4 otherwise.",
        gt=0,
    )
    weight_decay: float = _f(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: float = _f(1.0, "Clip the global gradient norm to this.", gt=0)
    max_consecutive_nonfinite: int = _f(
        3, "Stop after this many steps in a row with a non-finite loss, gradient or reward.", ge=1
    )
    torch_threads: int = _f(0, "torch.set_num_threads; 0 leaves the default.", ge=0)
    autocast: Literal["none", "bfloat16"] = _f(
        "none",
        "Mixed precision of the learner's passes: none (the model's dtype) or bfloat16 (torch.autocast; "
        "weights, gradients and optimiser state stay float32). float16 is not offered: it needs loss scaling.",
    )


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation during training."""

    every: int = _f(25, "Evaluate every this many RL steps (and always before and after).", ge=1)
    batch_size: int = _f(256, "Problems per generation batch.", ge=1)
    temperature: float = _f(
        0.0,
        "0: greedy decoding (exact-answer tasks). Above 0: sample each held-out prompt `samples` "
        "times at this temperature, with a fixed seed (tasks with many good completions).",
        ge=0,
    )
    samples: int = _f(1, "Sampled completions per held-out prompt when temperature > 0 (pass@k uses k = samples).", ge=1)
    pass_threshold: float = _f(
        1.0, "A held-out completion passes when its reward is at least this (eval/pass_rate, eval/pass@k)."
    )


@dataclass(frozen=True)
class LoraConfig:
    """LoRA through peft (Hu et al., 2021): only the adapter trains; the KL reference is the base
    with the adapter disabled, so the weights are in memory once. `rlft export RUN` merges it."""

    r: int = _f(0, "Adapter rank; 0 disables LoRA (all weights train).", ge=0)
    alpha: float = _f(16.0, "The update is (alpha / r) * B A.", gt=0)
    dropout: float = _f(0.0, "Dropout on the adapter's input.", ge=0, lt=1)
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Linear layers that get an adapter.",
    )


@dataclass(frozen=True)
class DistributedConfig:
    """Where rollouts run (docs/distributed.md)."""

    engine: Literal["local", "ray"] = _f("local", "local: one process; ray: rollout workers are Ray actors.")
    rollout_workers: int = _f(2, "Number of Ray rollout workers.", ge=1)
    address: str | None = _f(
        None, "'auto' joins a running Ray cluster, HOST:PORT names one, empty starts a local one."
    )


@dataclass(frozen=True)
class CheckpointConfig:
    """Atomic checkpoints for resuming a killed run."""

    every: int = _f(25, "Write a checkpoint every this many RL steps (and at the end).", ge=1)
    keep: int = _f(2, "How many recent checkpoints to keep.", ge=1)


@dataclass(frozen=True)
class PreferenceConfig:
    """Offline preference optimisation (algorithm.name: dpo): the pairs and the loss. DPO also
    reads train.learning_rate, weight_decay, max_grad_norm and torch_threads; eval.every and
    checkpoint.every count DPO steps."""

    data: str = _f(
        "", "Preference pairs {prompt, chosen, rejected}: .jsonl, .parquet or a dataset folder "
        "(e.g. from `rlft feedback export`).",
    )
    loss: Literal["dpo", "ipo"] = _f(
        "dpo", "dpo: Rafailov et al. (2023) eq. 7; ipo: Azar et al. (2023) eq. 17 (PREFERENCE_LOSSES)."
    )
    beta: float = _f(0.1, "DPO's beta (weight of the implicit KL to the reference); IPO's tau.", gt=0)
    label_smoothing: float = _f(
        0.0, "Conservative DPO: assumed probability that a label is flipped (dpo only).", ge=0, lt=0.5
    )
    eval_fraction: float = _f(0.1, "Share of the pairs held out for pairwise accuracy.", ge=0, lt=1)
    epochs: int = _f(1, "Passes over the training pairs.", ge=1)
    batch_size: int = _f(16, "Pairs per optimiser step.", ge=1)


@dataclass(frozen=True)
class PrivacyConfig:
    """Personal data in what a run reads (docs/responsible.md#privacy-in-a-run)."""

    scrub_pii: bool = _f(
        True,
        "Replace PII (e-mail, phone, card, IP, government ID, street address; names with an NER "
        "backend) by typed placeholders in every prompt and preference record before training or "
        "logging; counts go to RUN/privacy.json.",
    )


@dataclass(frozen=True)
class RecipeConfig:
    """A whole rlft recipe."""

    seed: int = _f(0, "Seed of sampling, data order and initialisation.")
    run_dir: str = _f("runs/demo", "Folder of this run (config, metrics, checkpoints, samples, summary).")
    model: ModelConfig = _f(ModelConfig(), "The policy model.")
    task: TaskConfig = _f(TaskConfig(), "The task and its reward.")
    warm_start: WarmStartConfig = _f(WarmStartConfig(), "Supervised warm start before RL.")
    rollout: RolloutConfig = _f(RolloutConfig(), "Sampling.")
    algorithm: AlgorithmConfig = _f(AlgorithmConfig(), "RL algorithm.")
    train: TrainConfig = _f(TrainConfig(), "RL optimisation.")
    eval: EvalConfig = _f(EvalConfig(), "Evaluation.")
    checkpoint: CheckpointConfig = _f(CheckpointConfig(), "Checkpointing.")
    lora: LoraConfig = _f(LoraConfig(), "LoRA adapters (r: 0 trains all weights).")
    distributed: DistributedConfig = _f(DistributedConfig(), "Rollout workers on Ray.")
    reward: dict[str, Any] | None = _f(
        None,
        "The reward (docs/rewards.md), e.g. {type: weighted, components: [...]}; empty: the task's own "
        "verifiable reward.",
    )
    preference: PreferenceConfig = _f(PreferenceConfig(), "Preference pairs and loss (algorithm.name: dpo).")
    privacy: PrivacyConfig = _f(PrivacyConfig(), "Privacy of the data a run reads.")

    def resolved(self) -> RecipeConfig:
        """Fill every empty field from the named algorithm's defaults."""
        algorithm = self.algorithm.resolved()
        reuse = algorithm.name == "ppo"
        mini = self.train.mini_batch_size or (
            max(self.train.batch_size // 4, 1) if reuse else self.train.batch_size
        )
        train = dataclasses.replace(
            self.train,
            epochs_per_batch=self.train.epochs_per_batch or (4 if reuse else 1),
            learning_rate=self.train.learning_rate or (PPO_LEARNING_RATE if reuse else 1e-4),
            mini_batch_size=mini,
            micro_batch_size=self.train.micro_batch_size or mini,
        )
        # Local data and reward files are recorded as absolute paths, so that `rlft eval RUN` and
        # --resume find them from any working directory (hub ids are left as they are).
        task = dataclasses.replace(self.task, data=_absolute(self.task.data), eval_data=_absolute(self.task.eval_data))
        warm_start = dataclasses.replace(self.warm_start, data=_absolute(self.warm_start.data))
        reward = _absolute_reward_files(self.reward)
        return dataclasses.replace(self, algorithm=algorithm, train=train, task=task, warm_start=warm_start, reward=reward)

    def check(self) -> None:
        """Cross-field checks that no single field can express (on a resolved config)."""
        if self.algorithm.name in OFFLINE_ALGORITHMS:
            self._check_offline()
        else:
            self._check_rl()
        self._check_model_and_task()
        self._check_eval()
        self._check_unread_fields()

    def _check_eval(self) -> None:
        if self.eval.samples > 1 and self.eval.temperature == 0:
            raise ConfigError(
                f"eval.samples={self.eval.samples} needs eval.temperature > 0: greedy decoding gives the "
                "same completion every time. Set eval.temperature (e.g. 1.0) for pass@k, or eval.samples: 1."
            )

    def _check_unread_fields(self) -> None:
        """A field set for a task or algorithm that does not read it is refused, not dropped."""
        defaults, used = TaskConfig(), TASK_FIELDS[self.task.name] | {"name"}
        for f in dataclasses.fields(TaskConfig):
            if f.name not in used and getattr(self.task, f.name) != getattr(defaults, f.name):
                readers = [name for name, fields in TASK_FIELDS.items() if f.name in fields]
                raise ConfigError(
                    f"task.{f.name} is set, but task.name={self.task.name!r} does not read it (it is "
                    f"read by task.name {' / '.join(readers)}). Remove it, or set task.name."
                )
        if self.task.name != "dataset" and (self.warm_start.target_field or self.warm_start.data):
            raise ConfigError(
                "warm_start.target_field and warm_start.data are read by task.name='dataset' only; "
                f"task.name={self.task.name!r} makes its own warm-start targets. Remove them."
            )
        if self.algorithm.name not in OFFLINE_ALGORITHMS and self.preference != PreferenceConfig():
            raise ConfigError(
                f"The preference section is read by algorithm.name='dpo' only, but the algorithm is "
                f"{self.algorithm.name!r}, which would ignore it. Remove the preference section, or "
                "set algorithm.name: dpo."
            )

    def _check_offline(self) -> None:
        if not self.preference.data:
            raise ConfigError(
                f"algorithm.name={self.algorithm.name!r} trains on preference pairs, but "
                "preference.data is empty; give a pairs file (e.g. from `rlft feedback export`)."
            )
        if self.preference.loss != "dpo" and self.preference.label_smoothing:
            raise ConfigError("preference.label_smoothing applies to loss 'dpo' only; set it to 0 for 'ipo'.")

    def _check_rl(self) -> None:
        algo = self.algorithm
        if algo.advantage_estimator == "gae" and algo.critic == "none":
            raise ConfigError(
                "algorithm.advantage_estimator='gae' needs a critic to estimate values, but "
                "algorithm.critic='none'. Set algorithm.critic: value_head (or separate), or use a "
                "critic-free estimator (grpo, rloo, reinforce, reinforce_pp)."
            )
        if algo.critic != "none" and algo.advantage_estimator != "gae":
            raise ConfigError(
                f"algorithm.critic={algo.critic!r} would be trained but never used: the "
                f"{algo.advantage_estimator!r} estimator ignores values. Use advantage_estimator: gae, "
                "or critic: none."
            )
        if algo.advantage_estimator in ("grpo", "rloo") and algo.group_size < 2:
            raise ConfigError(
                f"algorithm.advantage_estimator={algo.advantage_estimator!r} compares completions of "
                "the same prompt, so algorithm.group_size must be at least 2."
            )
        reuses = (self.train.epochs_per_batch or 1) > 1 or (self.train.mini_batch_size or 0) < self.train.batch_size
        if algo.policy_loss == "vanilla_pg" and reuses:
            raise ConfigError(
                "algorithm.policy_loss='vanilla_pg' has no importance ratio, so it is only correct "
                "for one on-policy update per batch; set train.epochs_per_batch=1 and "
                "train.mini_batch_size=train.batch_size, or use policy_loss: ppo_clip."
            )
        if self.train.mini_batch_size and self.train.batch_size % self.train.mini_batch_size:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not a multiple of "
                f"train.mini_batch_size={self.train.mini_batch_size}."
            )
        if self.train.mini_batch_size and self.train.mini_batch_size % (self.train.micro_batch_size or 1):
            raise ConfigError(
                f"train.mini_batch_size={self.train.mini_batch_size} is not a multiple of "
                f"train.micro_batch_size={self.train.micro_batch_size}; pick a divisor."
            )
        if self.reward is not None:
            from rlft.rewards import build_reward  # validates the spec: names bad keys and types

            build_reward(self.reward)
        g = self.algorithm.group_size
        if self.train.batch_size % g:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not a multiple of algorithm.group_size={g}: "
                f"each prompt gets {g} completions. Use e.g. train.batch_size={max(g, self.train.batch_size // g * g)}."
            )

    def _check_model_and_task(self) -> None:
        if self.train.autocast != "none" and self.model.dtype != "float32":
            raise ConfigError(
                f"train.autocast={self.train.autocast!r} needs float32 weights, but model.dtype={self.model.dtype}. "
                "Use model.dtype: float32 (autocast keeps float32 master weights) or train.autocast: none."
            )
        if self.rollout.dtype == "bfloat16":
            clash = (
                "lora.r > 0 (the reference is the base with the adapter off, not a copy)" if self.lora.r
                else "distributed.engine='ray'" if self.distributed.engine == "ray"
                else "rollout.backend='vllm' (vLLM has its own dtype)" if self.rollout.backend == "vllm"
                else f"model.dtype={self.model.dtype} (already low precision)" if self.model.dtype != "float32"
                else None
            )
            if clash:
                raise ConfigError(
                    f"rollout.dtype='bfloat16' cannot be combined with {clash}. Use rollout.dtype: model."
                )
        if self.rollout.backend == "vllm" and self.distributed.engine == "ray":
            raise ConfigError(
                "rollout.backend='vllm' and distributed.engine='ray' cannot be combined yet: vLLM "
                "generates on the learner's GPU. Use one of them."
            )
        if self.rollout.backend == "vllm":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    "rollout.backend='vllm' needs a CUDA GPU and the vllm package; this machine has no "
                    "GPU. Use rollout.backend: hf."
                )
        if self.model.tiny.num_heads % self.model.tiny.num_kv_heads:
            raise ConfigError(
                f"model.tiny.num_kv_heads={self.model.tiny.num_kv_heads} must divide "
                f"model.tiny.num_heads={self.model.tiny.num_heads}."
            )
        if self.model.tiny.hidden_size % self.model.tiny.num_heads:
            raise ConfigError(
                f"model.tiny.hidden_size={self.model.tiny.hidden_size} must be a multiple of "
                f"model.tiny.num_heads={self.model.tiny.num_heads}."
            )
        if self.task.name == "reviews":
            from rlft.tasks.reviews import N_PROMPTS

            if self.task.eval_size > N_PROMPTS // 2:
                raise ConfigError(f"task.eval_size={self.task.eval_size}: the reviews task has {N_PROMPTS} prompts; "
                                  f"hold out at most {N_PROMPTS // 2}.")  # fmt: skip
        elif self.task.answer_format == "steps" and set(self.task.operations) != {"+"}:
            raise ConfigError(
                f"task.answer_format='steps' writes column-addition steps, so task.operations must be "
                f"['+'], not {self.task.operations!r}; use answer_format: answer for other operations."
            )
        bad_ops = [op for op in self.task.operations if op not in ("+", "-", "*")]
        if bad_ops or not self.task.operations:
            raise ConfigError(
                f"task.operations={self.task.operations!r}: allowed are '+', '-', '*' (at least one)."
            )


def _absolute(path: str) -> str:
    """``path`` made absolute when it names an existing local file or folder; else unchanged."""
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path


def absolute_paths(recipe: dict[str, Any]) -> dict[str, Any]:
    """A raw recipe mapping with its local data and reward files made absolute, as ``resolved()``
    records them (for comparing with a config.yaml written before paths were recorded so)."""
    out = _deepcopy(recipe)
    for section, key in (("task", "data"), ("task", "eval_data"), ("warm_start", "data")):
        if isinstance(out.get(section), dict) and isinstance(out[section].get(key), str):
            out[section][key] = _absolute(out[section][key])
    if "reward" in out:
        out["reward"] = _absolute_reward_files(out["reward"])
    return out


def _absolute_reward_files(spec: Any) -> Any:
    """A reward spec with each python reward's ``file.py:function`` made absolute (nested too)."""
    if isinstance(spec, list):
        return [_absolute_reward_files(item) for item in spec]
    if not isinstance(spec, dict):
        return spec
    out = {key: _absolute_reward_files(value) for key, value in spec.items()}
    function = out.get("function")
    if out.get("type") == "python" and isinstance(function, str) and ".py:" in function:
        file, _, name = function.rpartition(":")
        out["function"] = f"{_absolute(file)}:{name}"
    return out


# ----------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with errors a user can act on.


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}={value!r} is not allowed; choose one of {_type_name(tp)}.{hint}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the most precise
            return _convert(value, options[0], where)
        for arg in options:
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}={value!r} has the wrong type; expected {_type_name(tp)}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type; expected a mapping.")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} has the wrong type; expected {_type_name(tp)}.")
        (item_tp,) = get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type; expected a mapping of fields.")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads "1e-5" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None:
            if not math.isfinite(number):  # .inf/.nan pass every range check and poison training
                raise ConfigError(f"{where}={value!r} is not a finite number; give a finite value.")
            return number
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}={value!r} has the wrong type; expected {_type_name(tp)}.")


def _check_range(value: Any, f: dataclasses.Field[Any], where: str) -> None:
    md = f.metadata
    for key, ok, words in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        if key in md and value is not None and not ok(value, md[key]):
            raise ConfigError(f"{where}={value!r} is out of range; it must be {words} {md[key]}.")


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            raise ConfigError(
                f"Unknown recipe key '{where}'.{hint} Valid keys here: {', '.join(fields)}."
            )
        converted = _convert(value, hints[key], where)
        _check_range(converted, fields[key], where)
        kwargs[key] = converted
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section.")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML (numbers, lists, null...)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=50.")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return parsed


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> RecipeConfig:
    """Validate a recipe given as plain data, with optional ``key=value`` overrides."""
    data = _deepcopy(data)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value)
    config = _build(RecipeConfig, data).resolved()
    config.check()
    return config


def read_recipe_yaml(path: str | Path, hint: str = "") -> dict[str, Any]:
    """The mapping in a YAML recipe file, or a ConfigError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Recipe file {path} does not exist.{' ' + hint if hint else ''}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Recipe {path} must be a mapping of fields or sections (key: value).")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RecipeConfig:
    """Load and validate a YAML recipe. ``None`` gives the embedded default (the demo)."""
    if path is None:
        return config_from_dict({}, overrides)
    data = read_recipe_yaml(path, "Check the path, or run `rlft demo`.")
    return config_from_dict(data, overrides)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: RecipeConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


def reference_markdown() -> str:
    """Every recipe field with its type, default and documentation, as Markdown."""
    lines = [
        "# Recipe reference",
        "",
        "Generated from `src/rlft/config.py` by `python -m rlft.config > docs/recipes.md`.",
        "Every field is optional; the defaults are the embedded demo recipe.",
        "",
    ]

    def walk(cls: Any, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        lines.append(f"## `{prefix or 'top level'}`")
        lines.append("")
        lines.append((cls.__doc__ or "").strip())
        lines.append("")
        lines.append("| key | type | default | meaning |")
        lines.append("|---|---|---|---|")
        nested = []
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                nested.append((tp, key))
                lines.append(f"| `{key}` | section | | {f.metadata['help']} See below. |")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
            rng = ", ".join(f"{k} {f.metadata[k]}" for k in ("ge", "gt", "le", "lt") if k in f.metadata)
            help_text = f.metadata["help"] + (f" ({rng})" if rng else "")
            type_cell = _type_name(tp).replace("|", "\\|")  # a pipe would end the table cell
            help_cell = help_text.replace("|", "\\|")
            lines.append(f"| `{key}` | {type_cell} | `{default!r}` | {help_cell} |")
        lines.append("")
        for tp, key in nested:
            walk(tp, key)

    walk(RecipeConfig, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")

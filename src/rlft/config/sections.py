"""The sections of a recipe: one frozen dataclass each, every field documented.

Each field carries its documentation in ``metadata["help"]`` (``rlft.schema.setting``);
``docs/recipes.md`` is generated from it (``python -m rlft.config``) and a test checks the two agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from rlft.algorithms.presets import ALGORITHM_PRESETS
from rlft.config.asynchronous import AsyncConfig
from rlft.config.curriculum import CurriculumConfig
from rlft.config.vllm import VLLMConfig
from rlft.errors import ConfigError
from rlft.models.tiny_config import TinyModelConfig
from rlft.schema import Registered, setting

# Fields that name a registry entry accept any registered name, a plugin's too (docs/extending.md);
# the registry is read when a recipe is checked.
TaskName = Annotated[str, Registered("rlft.tasks:TASKS")]
AlgorithmName = Annotated[str, Registered("rlft.algorithms.presets:ALGORITHM_PRESETS")]
AdvantageEstimatorName = Annotated[str, Registered("rlft.algorithms.advantages:ADVANTAGE_ESTIMATORS")]
PolicyLossName = Annotated[str, Registered("rlft.algorithms.losses:POLICY_LOSSES")]
KLEstimatorName = Annotated[str, Registered("rlft.algorithms.kl:KL_ESTIMATORS")]
KLControllerName = Annotated[str, Registered("rlft.algorithms.kl:KL_CONTROLLERS")]
LossAggModeName = Annotated[str, Registered("rlft.algorithms.aggregation:LOSS_AGG_MODES")]
PreferenceLossName = Annotated[str, Registered("rlft.algorithms.preference:PREFERENCE_LOSSES")]


@dataclass(frozen=True)
class ModelConfig:
    """Which causal language model to train."""

    path: str | None = setting(
        None,
        "A local Hugging Face model folder or a hub id. Empty: build the tiny model offline.",
    )
    tiny: TinyModelConfig = setting(TinyModelConfig(), "Shape of the offline model (used when path is empty).")
    dtype: Literal["float32", "bfloat16", "float16"] = setting("float32", "Parameter dtype.")
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass: less memory, about 30% more compute."
    )


@dataclass(frozen=True)
class TaskConfig:
    """The task: prompts, answers and the verifiable reward."""

    name: TaskName = setting(
        "arithmetic",
        "Which task (rlft.tasks.TASKS): 'arithmetic' (verifiable answers), 'reviews' (two-clause "
        "reviews whose quality is a preference; the RLHF example's task, docs/rlhf.md), 'multistep' (word "
        "problems of 3 to 6 dependent steps, a sparse outcome reward; its settings min_steps, max_steps, train_size "
        "go next to the name; docs/sparse_rewards.md), 'dataset' "
        "(your own prompts and answers from a file, scored by the recipe's reward; docs/datasets.md) "
        "or a plugin's (rlft.register_task; docs/extending.md).",
    )
    data: str = setting(
        "", "dataset: the training data: a .jsonl/.json/.csv/.parquet file, a datasets.save_to_disk "
        "folder or a hub dataset id.",
    )
    split: str = setting("train", "dataset: the split of task.data to read (hub ids and saved DatasetDicts).")
    eval_data: str = setting(
        "", "dataset: held-out data in any format task.data takes. Empty: hold out task.eval_fraction "
        "of task.data's distinct prompts (seeded by task.seed; never trained on).",
    )
    eval_split: str = setting("test", "dataset: the split of task.eval_data to read (hub ids and DatasetDicts).")
    eval_fraction: float = setting(
        0.1, "dataset: share of task.data's distinct prompts held out when task.eval_data is empty.", ge=0, lt=1
    )
    prompt_field: str = setting(
        "prompt", "dataset: the column of the prompt: a string, or a list of {role, content} messages."
    )
    answer_field: str | None = setting(
        "answer",
        "dataset: the column of the reference answer (reaches rewards as `answers`; the warm "
        "start's target). null for data without answers.",
    )
    system_prompt: str | None = setting(
        None, "dataset: a system message put before each conversational prompt that has none."
    )
    chat_template: Literal["auto", "none", "always"] = setting(
        "auto",
        "dataset: auto renders conversational prompts with the tokenizer's chat template and leaves "
        "string prompts as plain text; always also sends each string prompt as a user message; "
        "none refuses conversational prompts.",
    )
    digits: int = setting(2, "Operands have at most this many digits.", ge=1, le=6)
    operations: list[str] = setting(["+"], "Operations to draw from: any of '+', '-', '*'.")
    eval_size: int = setting(
        256, "Number of held-out problems (never seen in training); dataset: at most this many "
        "held-out rows are evaluated.", ge=1,
    )
    seed: int = setting(1234, "Seed of the problem split (kept apart from the training seed).")
    answer_format: Literal["answer", "steps"] = setting(
        "steps",
        "'answer': the completion is the answer; 'steps': column-addition steps, then '#' and the "
        "answer (only the answer is rewarded; '+' only).",
    )
    sampler: Literal["uniform", "curriculum"] = setting(
        "uniform",
        "How a step picks its training prompts: uniform (as the task draws them) or curriculum (prompts not seen "
        "yet first, then in proportion to p (1 - p), p each prompt's recent pass rate; needs a task with a finite "
        "training set: multistep, dataset; docs/sparse_rewards.md). RL algorithms only.",
    )
    curriculum: CurriculumConfig = setting(CurriculumConfig(), "The curriculum (read when sampler is curriculum).")
    settings: dict[str, Any] = setting(
        {},
        "A plugin's task (rlft.register_task): its own settings, checked by its settings dataclass. Write "
        "them in the task section next to name (task: {name: mine, size: 3}); config.yaml records them here.",
    )


# The keys of the task section that are TaskConfig's own (the others are a plugin task's settings).
TASK_FIELDS = {f.name for f in dataclasses.fields(TaskConfig)}
# The fields every task reads (the others, only the tasks whose TaskEntry names them).
COMMON_TASK_FIELDS = frozenset({"name", "sampler", "curriculum"})


@dataclass(frozen=True)
class WarmStartConfig:
    """A short supervised stage so that the base policy solves some problems but far from all."""

    steps: int = setting(160, "Supervised steps on (prompt, target) pairs. 0 skips the warm start.", ge=0)
    batch_size: int = setting(64, "Examples per supervised step.", ge=1)
    learning_rate: float = setting(1e-3, "AdamW learning rate of the warm start.", gt=0)
    lr_scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = setting(
        "constant",
        "Learning-rate schedule over warm_start.steps (transformers' get_scheduler): constant, linear (decay to 0), "
        "cosine (to 0), constant_with_warmup; every one but constant warms up first when warmup is set.",
    )
    warmup_steps: int = setting(0, "Steps of linear warm-up from 0 to the learning rate.", ge=0)
    warmup_ratio: float = setting(
        0.0, "Warm-up as a fraction of the steps (used when warmup_steps is 0).", ge=0, le=1
    )
    target_field: str | None = setting(
        None, "dataset: the column the warm start imitates. Empty: task.answer_field."
    )
    data: str = setting(
        "", "dataset: demonstrations to warm-start on instead of the training split (same columns: "
        "task.prompt_field and the target).",
    )


@dataclass(frozen=True)
class RolloutConfig:
    """How completions are sampled from the policy."""

    temperature: float = setting(1.0, "Sampling temperature.", gt=0)
    top_p: float = setting(1.0, "Nucleus sampling: keep the smallest set of tokens with this much mass.", gt=0, le=1)
    max_new_tokens: int = setting(24, "Longest completion, in tokens; sampling stops earlier at EOS.", ge=1)
    max_prompt_tokens: int | None = setting(
        None, "Refuse data with prompts longer than this many tokens. Empty: the model's context "
        "window minus max_new_tokens.", ge=1,
    )
    backend: Literal["hf", "vllm"] = setting(
        "hf", "Generation engine: hf (rlft's KV-cache sampler) or vllm (GPU only; docs/distributed.md)."
    )
    compile: bool = setting(False, "torch.compile the policy (pays off for long runs of larger models).")
    dtype: Literal["model", "bfloat16"] = setting(
        "model",
        "Precision of sampling and of the reference pass: model (the policy's own dtype) or bfloat16 "
        "(bf16 copies; the learner stays float32; truncated importance weights correct the mismatch; "
        "docs/performance.md).",
    )
    vllm: VLLMConfig = setting(VLLMConfig(), "vLLM beside the learner (read when backend is vllm).")
    async_: AsyncConfig = setting(
        AsyncConfig(), "Asynchronous rollouts: sample the next batches while the learner trains (docs/performance.md)."
    )


@dataclass(frozen=True)
class AlgorithmConfig:
    """The RL algorithm: a named combination of an advantage estimator, a policy loss, a critic
    and KL control. Fields left empty take the value of the named algorithm (``ALGORITHM_PRESETS``)."""

    name: AlgorithmName = setting(
        "grpo",
        "Which algorithm; sets the defaults of the fields below (docs/algorithms.md). 'dpo' trains "
        "offline on preference pairs (the preference section) and ignores the RL fields.",
    )
    advantage_estimator: AdvantageEstimatorName | None = setting(
        None, "Advantage estimator (rlft.algorithms.advantages.ADVANTAGE_ESTIMATORS)."
    )
    policy_loss: PolicyLossName | None = setting(
        None, "Policy loss (rlft.algorithms.losses.POLICY_LOSSES)."
    )
    critic: Literal["none", "value_head", "separate"] | None = setting(
        None, "Critic: none, a value head on the policy's trunk, or a separate copy of the model with its own head."
    )
    group_size: int = setting(8, "Completions sampled per prompt (G).", ge=1)
    clip_low: float | None = setting(
        None, "Clip range below 1 of the importance ratio (0.2; gspo: 3e-4, of the sequence ratio).", gt=0, lt=1
    )
    clip_high: float | None = setting(
        None, "Clip range above 1 (0.2; larger than clip_low is DAPO's clip-higher, 0.28; gspo: 4e-4).", gt=0
    )
    clip_ratio_c: float | None = setting(None, "Dual-clip bound for negative advantages (e.g. 3.0); empty disables it.", gt=1)
    kl_coef: float | None = setting(None, "Initial weight of the KL penalty to the reference model (beta).", ge=0)
    kl_estimator: KLEstimatorName | None = setting(None, "Estimator of KL(policy || reference).")
    kl_placement: Literal["loss", "reward"] | None = setting(
        None, "Where the KL penalty goes: a term of the loss (GRPO) or a per-token reward penalty (PPO)."
    )
    kl_controller: KLControllerName = setting(
        "fixed", "Fixed beta, or the adaptive controller of Ziegler et al. (2019) that steers toward kl_target."
    )
    kl_target: float = setting(6.0, "Target KL (nats per sequence) of the adaptive controller.", gt=0)
    kl_horizon: int = setting(10000, "Horizon (samples) of the adaptive controller.", ge=1)
    kl_clamp: float | None = setting(
        10.0,
        "Cap on the per-token KL estimate (k1 to [-cap, cap]). Where the cap is active the KL term has "
        "no gradient: with 10, k3 tokens below a log-ratio of -2.61 (docs/algorithms.md). Empty: no cap.",
        gt=0,
    )
    scale_rewards: bool | None = setting(
        None, "Divide advantages by a std (group std for grpo, batch std for reinforce_pp/gae); False for grpo is Dr.GRPO."
    )
    loss_agg_mode: LossAggModeName | None = setting(
        None, "How per-token losses are averaged into one number."
    )
    gamma: float = setting(1.0, "Discount per token (gae, reinforce_pp).", ge=0, le=1)
    lam: float | None = setting(None, "GAE lambda (0.95 for ppo, 1.0 for a2c).", ge=0, le=1)
    entropy_coef: float | None = setting(None, "Weight of the entropy bonus (0.01 for a2c, 0 otherwise).", ge=0)
    vf_coef: float = setting(0.5, "Weight of the critic's value loss.", ge=0)
    dynamic_sampling: bool | None = setting(
        None, "DAPO: replace groups whose rewards are all equal (no signal) by newly sampled ones (dapo: true)."
    )
    max_sampling_rounds: int = setting(
        4, "Dynamic sampling: extra rounds of sampling at most per step; then the batch keeps some groups "
        "without signal (counted in sampling/kept_without_signal).", ge=1,
    )
    overlong_buffer: int | None = setting(
        None, "DAPO's soft overlong penalty: completions longer than rollout.max_new_tokens minus this many tokens "
        "lose up to overlong_penalty, linearly; 0: overlong_buffer_fraction decides.", ge=0,
    )
    overlong_buffer_fraction: float | None = setting(
        None, "The overlong buffer as a fraction of rollout.max_new_tokens (rounded down), when overlong_buffer is 0 "
        "(dapo: 0.2, the paper's 4096 of 20480; 0 turns the penalty off).", ge=0, lt=1,
    )
    overlong_penalty: float = setting(1.0, "The largest overlong penalty (at rollout.max_new_tokens).", ge=0)
    mask_truncated: bool | None = setting(
        None, "DAPO's overlong filtering: completions cut at rollout.max_new_tokens without EOS are left out of the "
        "loss (dapo: false).",
    )
    value_clip: float | None = setting(0.2, "Value clipping range of the critic loss; empty disables it.", gt=0)

    def resolved(self) -> AlgorithmConfig:
        """This config with every empty field taken from the named algorithm's preset (an
        offline algorithm's preset fills none: it reads no RL field)."""
        preset = ALGORITHM_PRESETS[self.name]["algorithm"]
        return dataclasses.replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})


@dataclass(frozen=True)
class TrainConfig:
    """The RL optimisation."""

    steps: int = setting(100, "Optimiser steps of RL.", ge=0)
    batch_size: int = setting(128, "Completions per step; must be a multiple of algorithm.group_size.", ge=1)
    micro_batch_size: int | None = setting(
        None, "Completions per forward/backward pass (gradient accumulation). Empty: the mini-batch size.", ge=1
    )
    epochs_per_batch: int | None = setting(
        None, "Passes over each rollout batch (sample reuse). Empty: 4 for ppo, 1 otherwise.", ge=1
    )
    mini_batch_size: int | None = setting(
        None, "Completions per optimiser step within a batch. Empty: batch_size/4 for ppo, batch_size otherwise.", ge=1
    )
    learning_rate: float | None = setting(
        None,
        "AdamW learning rate. Empty: 3e-5 for ppo (its 4 epochs x 4 mini-batches make 16 optimiser "
        "steps per batch; 1e-4 collapsed it on the arithmetic benchmark), 1e-4 otherwise.",
        gt=0,
    )
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: float = setting(1.0, "Clip the global gradient norm to this.", gt=0)
    lr_scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = setting(
        "constant",
        "Learning-rate schedule over train.steps (RL steps; DPO: optimiser steps) (transformers' get_scheduler): constant, linear (decay to 0), "
        "cosine (to 0), constant_with_warmup; every one but constant warms up first when warmup is set.",
    )
    warmup_steps: int = setting(0, "Steps of linear warm-up from 0 to the learning rate.", ge=0)
    warmup_ratio: float = setting(
        0.0, "Warm-up as a fraction of the steps (used when warmup_steps is 0).", ge=0, le=1
    )
    max_consecutive_nonfinite: int = setting(
        3, "Stop after this many steps in a row with a non-finite loss, gradient or reward.", ge=1
    )
    torch_threads: int = setting(0, "torch.set_num_threads; 0 leaves the default.", ge=0)
    dropout: bool = setting(
        False,
        "Keep the model's dropout in the updates (the warm start's and RL's or DPO's). false (the default): every "
        "dropout probability is set to 0, as TRL does, so the update computes what the sampler and the reference "
        "compute (step-1 KL 0; GPT-2 and OPT checkpoints have dropout 0.1). LoRA's lora.dropout is its own setting.",
    )
    parallel: Literal["ddp", "fsdp"] = setting(
        "ddp",
        "How several processes (torchrun, rlft train --nproc N) share the update: ddp (every rank holds the "
        "model; gradients are summed) or fsdp (FSDP2: parameters, gradients and optimiser state sharded over "
        "the ranks). One process ignores it (docs/distributed.md).",
    )
    autocast: Literal["none", "bfloat16"] = setting(
        "none",
        "Mixed precision of the learner's passes: none (the model's dtype) or bfloat16 (torch.autocast; "
        "weights, gradients and optimiser state stay float32; logits and log-softmax in float32). float16 is not "
        "offered: it needs loss scaling.",
    )
    device: str = setting(
        "auto",
        "Where the run trains: auto (cuda:LOCAL_RANK when CUDA is visible, else cpu), cpu, cuda (cuda:LOCAL_RANK) or "
        "cuda:N. The policy, reference, critic, rollout and batches all live there (docs/distributed.md).",
    )
    deterministic: bool = setting(
        False,
        "Deterministic CUDA kernels (torch.use_deterministic_algorithms): a GPU run resumed after kill -9 is then "
        "bit-identical to an uninterrupted one, at some speed. CPU runs are deterministic without it.",
    )
    optimizer_dtype: Literal["model", "float32"] = setting(
        "model",
        "Precision of the optimiser for low-precision weights (model.dtype: bfloat16 or float16): model (AdamW's "
        "state in the weights' dtype) or float32 (float32 master weights and moments; the model's weights are "
        "their rounded copies, so small updates are not lost to bf16 rounding).",
    )

    def resolved(self, algorithm: str) -> TrainConfig:
        """This config with every empty field taken from the training defaults of the named
        algorithm's preset; the micro-batch defaults to the mini-batch."""
        preset = ALGORITHM_PRESETS[algorithm]["train"]
        mini = self.mini_batch_size or max(self.batch_size // preset["mini_batches"], 1)
        return dataclasses.replace(
            self,
            epochs_per_batch=self.epochs_per_batch or preset["epochs_per_batch"],
            learning_rate=self.learning_rate or preset["learning_rate"],
            mini_batch_size=mini,
            micro_batch_size=self.micro_batch_size or mini,
        )


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation during training."""

    every: int = setting(25, "Evaluate every this many RL steps (and always before and after).", ge=1)
    batch_size: int = setting(256, "Problems per generation batch.", ge=1)
    temperature: float = setting(
        0.0,
        "0: greedy decoding (exact-answer tasks). Above 0: sample each held-out prompt `samples` "
        "times at this temperature, with a fixed seed (tasks with many good completions).",
        ge=0,
    )
    samples: int = setting(1, "Sampled completions per held-out prompt when temperature > 0 (pass@k uses k = samples).", ge=1)
    pass_threshold: float = setting(
        1.0, "A held-out completion passes when its reward is at least this (eval/pass_rate, eval/pass@k)."
    )


@dataclass(frozen=True)
class LoraConfig:
    """LoRA through peft (Hu et al., 2021): only the adapter trains; the KL reference is the base
    with the adapter disabled, so the weights are in memory once. `rlft export RUN` merges it."""

    r: int = setting(0, "Adapter rank; 0 disables LoRA (all weights train).", ge=0)
    alpha: float = setting(16.0, "The update is (alpha / r) * B A.", gt=0)
    dropout: float = setting(0.0, "Dropout on the adapter's input.", ge=0, lt=1)
    target_modules: list[str] = setting(
        ["all-linear"],
        "Linear layers that get an adapter: [all-linear] (peft's name) is every linear layer of the decoder "
        "except the output head, whatever the architecture calls them; or names such as [q_proj, v_proj] "
        "(Phi-3: qkv_proj, GPT-2: c_attn), checked against the model before the run folder is written.",
    )


@dataclass(frozen=True)
class DistributedConfig:
    """Where rollouts run (docs/distributed.md)."""

    engine: Literal["local", "ray"] = setting("local", "local: one process; ray: rollout workers are Ray actors.")
    rollout_workers: int = setting(2, "Number of Ray rollout workers.", ge=1)
    address: str | None = setting(
        None, "'auto' joins a running Ray cluster, HOST:PORT names one, empty starts a local one."
    )


def check_schedule(prefix: str, scheduler: str, warmup_steps: int, warmup_ratio: float) -> None:
    """A warm-up needs a schedule that has one (transformers' constant ignores it). ``prefix``:
    where the fields sit in the recipe (``train.``, ``warm_start.``, or empty)."""
    if scheduler == "constant" and (warmup_steps or warmup_ratio):
        raise ConfigError(
            f"{prefix}lr_scheduler: constant has no warm-up, so {prefix}warmup_steps/warmup_ratio would be ignored. "
            f"Use {prefix}lr_scheduler: constant_with_warmup (or linear, cosine), or drop the warm-up."
        )


@dataclass(frozen=True)
class LogConfig:
    """Where a run's metrics go besides metrics.jsonl (docs/trackers.md)."""

    report_to: list[Literal["jsonl", "tensorboard", "wandb", "mlflow", "trackio"]] = setting(
        ["jsonl"],
        "Trackers that receive every metric, the recipe and sample completions: jsonl (metrics.jsonl, always "
        "written), tensorboard (RUN/tensorboard), wandb (offline: RUN/wandb), mlflow (RUN/mlflow.db), trackio "
        "(RUN/trackio). All but jsonl need `pip install 'rlft[tracking]'`; see docs/trackers.md.",
    )
    project: str = setting("rlft", "The tracker's project (W&B, Trackio) or experiment (MLflow).")
    run_name: str | None = setting(None, "The run's name in the trackers; empty: the run folder's name.")
    wandb_mode: Literal["offline", "online"] = setting(
        "offline", "W&B: offline writes RUN/wandb (upload later with `wandb sync`); online needs `wandb login` or WANDB_API_KEY."
    )
    mlflow_tracking_uri: str | None = setting(
        None, "MLflow store: sqlite:///PATH.db, file:FOLDER or a server URL; empty: sqlite:///RUN/mlflow.db "
        "(MLflow 3 prefers a database to a file: store)."
    )


@dataclass(frozen=True)
class CheckpointConfig:
    """Atomic checkpoints for resuming a killed run."""

    every: int = setting(25, "Write a checkpoint every this many RL steps (and at the end).", ge=1)
    keep: int = setting(2, "How many recent checkpoints to keep.", ge=1)


@dataclass(frozen=True)
class PreferenceConfig:
    """Offline preference optimisation (algorithm.name: dpo): the pairs and the loss. DPO also
    reads train.learning_rate, weight_decay, max_grad_norm and torch_threads; eval.every and
    checkpoint.every count DPO steps."""

    data: str = setting(
        "", "Preference pairs {prompt, chosen, rejected}: .jsonl, .parquet or a dataset folder "
        "(e.g. from `rlft feedback export`).",
    )
    loss: PreferenceLossName = setting(
        "dpo", "dpo: Rafailov et al. (2023) eq. 7; ipo: Azar et al. (2023) eq. 17 (PREFERENCE_LOSSES)."
    )
    beta: float = setting(0.1, "DPO's beta (weight of the implicit KL to the reference); IPO's tau.", gt=0)
    label_smoothing: float = setting(
        0.0, "Conservative DPO: assumed probability that a label is flipped (dpo only).", ge=0, lt=0.5
    )
    eval_fraction: float = setting(0.1, "Share of the pairs held out for pairwise accuracy.", ge=0, lt=1)
    epochs: int = setting(1, "Passes over the training pairs.", ge=1)
    batch_size: int = setting(16, "Pairs per optimiser step.", ge=1)


@dataclass(frozen=True)
class PrivacyConfig:
    """Personal data in what a run reads (docs/responsible.md#privacy-in-a-run)."""

    scrub_pii: bool = setting(
        True,
        "Replace PII (e-mail, phone, card, IP, government ID, street address; names with an NER "
        "backend) by typed placeholders in every prompt and preference record before training or "
        "logging; counts go to RUN/privacy.json.",
    )


@dataclass(frozen=True)
class RewardLimitsConfig:
    """What a reward may return and how long it may take; a breach stops the run (docs/rewards.md)."""

    max_abs: float | None = setting(
        1e6,
        "Largest magnitude a reward (or a weighted reward's component) may return; a larger one stops the "
        "run, since advantages and metrics computed from it overflow. null: no bound.",
        gt=0,
    )
    timeout: float | None = setting(
        60.0,
        "Seconds a reward of your own (type: python, --reward FILE.py:FUNCTION, rlft.train(reward=...)) may "
        "take for one call (a batch, or with workers > 1 one share of it); longer stops the run, except in the "
        "pool, where the share is scored 0 and counted (reward/timed_out). The built-in rewards are not timed. "
        "null: no limit.",
        gt=0,
    )
    workers: int = setting(
        1,
        "Calls of a reward of your own that may run at once: with workers > 1 a batch is split into that many "
        "shares scored concurrently, when the reward is an async def or declares itself thread-safe "
        "(rlft.rewards.thread_safe); otherwise one call per batch, as with 1.",
        ge=1,
    )

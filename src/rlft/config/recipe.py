"""The whole recipe: :class:`RecipeConfig`, how it is resolved and checked, read and written.

A recipe is validated once, at load time (:func:`config_from_dict`): each field by
``rlft.schema.build`` (unknown keys, types, ranges), then :meth:`RecipeConfig.resolved` fills every
empty field from the algorithm's preset (``rlft.algorithms.presets``), then
:meth:`RecipeConfig.check` refuses combinations no single field can express. The resolved config
is written into the run folder and never mutated afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlft.algorithms.presets import (
    ALGORITHM_PRESETS,
    OFFLINE_ALGORITHMS,
    SMOOTHED_PREFERENCE_LOSSES,
)
from rlft.config.asynchronous import check_async_recipe
from rlft.config.sections import (
    COMMON_TASK_FIELDS,
    TASK_FIELDS,
    AlgorithmConfig,
    CheckpointConfig,
    DistributedConfig,
    EvalConfig,
    LogConfig,
    LoraConfig,
    ModelConfig,
    PreferenceConfig,
    PrivacyConfig,
    RewardLimitsConfig,
    RolloutConfig,
    TaskConfig,
    TrainConfig,
    WarmStartConfig,
    check_schedule,
)
from rlft.config.vllm import check_vllm_recipe
from rlft.errors import ConfigError
from rlft.plugins import with_plugins
from rlft.schema import (
    build,
    dataclass_markdown,
    gather_settings,
    plain_copy,
    read_recipe_yaml,
    recipe_dict,
    setting,
    with_overrides,
)


@dataclass(frozen=True)
class RecipeConfig:
    """A whole rlft recipe."""

    seed: int = setting(0, "Seed of sampling, data order and initialisation.")
    run_dir: str = setting("runs/demo", "Folder of this run (config, metrics, checkpoints, samples, summary).")
    plugins: list[str] = setting(
        [],
        "Your own code to import before the recipe is checked: .py files or module names whose registrations "
        "(rlft.register_policy_loss, register_env, ...) the recipe then names (docs/extending.md). --plugin adds "
        "more; config.yaml records them all (files as absolute paths) for --resume, rlft eval and rlft report.",
    )
    model: ModelConfig = setting(ModelConfig(), "The policy model.")
    task: TaskConfig = setting(TaskConfig(), "The task and its reward.")
    warm_start: WarmStartConfig = setting(WarmStartConfig(), "Supervised warm start before RL.")
    rollout: RolloutConfig = setting(RolloutConfig(), "Sampling.")
    algorithm: AlgorithmConfig = setting(AlgorithmConfig(), "RL algorithm.")
    train: TrainConfig = setting(TrainConfig(), "RL optimisation.")
    eval: EvalConfig = setting(EvalConfig(), "Evaluation.")
    checkpoint: CheckpointConfig = setting(CheckpointConfig(), "Checkpointing.")
    log: LogConfig = setting(LogConfig(), "Trackers (TensorBoard, W&B, MLflow, Trackio).")
    lora: LoraConfig = setting(LoraConfig(), "LoRA adapters (r: 0 trains all weights).")
    distributed: DistributedConfig = setting(DistributedConfig(), "Rollout workers on Ray.")
    reward: dict[str, Any] | None = setting(
        None,
        "The reward (docs/rewards.md), e.g. {type: weighted, components: [...]}; empty: the task's own "
        "verifiable reward.",
    )
    reward_limits: RewardLimitsConfig = setting(
        RewardLimitsConfig(), "What the reward may return and how long it may take."
    )
    preference: PreferenceConfig = setting(PreferenceConfig(), "Preference pairs and loss (algorithm.name: dpo).")
    privacy: PrivacyConfig = setting(PrivacyConfig(), "Privacy of the data a run reads.")

    def resolved(self) -> RecipeConfig:
        """Fill every empty field from the named algorithm's preset."""
        algorithm = self.algorithm.resolved()
        train = self.train.resolved(algorithm.name)
        # Local data and reward files are recorded as absolute paths, so that `rlft eval RUN` and
        # --resume find them from any working directory (hub ids are left as they are).
        task = dataclasses.replace(self.task, data=_absolute(self.task.data), eval_data=_absolute(self.task.eval_data))
        warm_start = dataclasses.replace(self.warm_start, data=_absolute(self.warm_start.data))
        reward = _absolute_reward_files(self.reward)
        task = _with_task_settings(task)
        return dataclasses.replace(self, algorithm=algorithm, train=train, task=task, warm_start=warm_start, reward=reward)

    def check(self) -> None:
        """Cross-field checks that no single field can express (on a resolved config)."""
        TRAINER_CHECKS[ALGORITHM_PRESETS[self.algorithm.name]["trainer"]](self)
        self._check_model()
        self._check_task()
        self._check_eval()
        self._check_sampler()
        self._check_unread_fields()
        if self.algorithm.overlong_buffer and self.algorithm.overlong_buffer >= self.rollout.max_new_tokens:
            raise ConfigError(
                f"algorithm.overlong_buffer={self.algorithm.overlong_buffer} is not below rollout.max_new_tokens="
                f"{self.rollout.max_new_tokens}: every completion would be penalised for its length. Use a buffer "
                "smaller than max_new_tokens (DAPO: a fifth of it)."
            )
        for name, section in (("train", self.train), ("warm_start", self.warm_start)):
            check_schedule(f"{name}.", section.lr_scheduler, section.warmup_steps, section.warmup_ratio)

    def _check_sampler(self) -> None:
        if self.task.sampler != "curriculum" and self.task.curriculum != TaskConfig().curriculum:
            raise ConfigError(
                f"task.curriculum is set, but task.sampler={self.task.sampler!r} does not read it. Set "
                "task.sampler: curriculum, or remove task.curriculum."
            )
        if self.task.sampler != "uniform" and ALGORITHM_PRESETS[self.algorithm.name]["trainer"] != "rl":
            raise ConfigError(
                f"task.sampler={self.task.sampler!r} picks the prompts of online RL steps, but "
                f"algorithm.name={self.algorithm.name!r} trains on fixed data. Remove task.sampler."
            )

    def _check_eval(self) -> None:
        if self.eval.samples > 1 and self.eval.temperature == 0:
            raise ConfigError(
                f"eval.samples={self.eval.samples} needs eval.temperature > 0: greedy decoding gives the "
                "same completion every time. Set eval.temperature (e.g. 1.0) for pass@k, or eval.samples: 1."
            )

    def _check_unread_fields(self) -> None:
        """A field set for a task or algorithm that does not read it is refused, not dropped."""
        from rlft.tasks import TASKS  # imports torch: only when a recipe is checked

        entry = TASKS[self.task.name]
        defaults, used = TaskConfig(), entry.fields | COMMON_TASK_FIELDS
        for f in dataclasses.fields(TaskConfig):
            if f.name not in used and getattr(self.task, f.name) != getattr(defaults, f.name):
                readers = " / ".join(name for name, other in TASKS.items() if f.name in other.fields)
                raise ConfigError(
                    f"task.{f.name} is set, but task.name={self.task.name!r} does not read it (it is "
                    f"read by task.name {readers}). Remove it, or set task.name."
                )
        optional = set().union(*(other.warm_start_fields for other in TASKS.values()))
        unread = [f.name for f in dataclasses.fields(WarmStartConfig) if f.name in optional - entry.warm_start_fields]
        if any(getattr(self.warm_start, key) for key in unread):
            warm_readers = " / ".join(repr(name) for name, other in TASKS.items() if other.warm_start_fields)
            raise ConfigError(
                f"{' and '.join('warm_start.' + key for key in unread)} are read by task.name={warm_readers} only; "
                f"task.name={self.task.name!r} makes its own warm-start targets. Remove them."
            )
        if self.algorithm.name not in OFFLINE_ALGORITHMS and self.preference != PreferenceConfig():
            offline = " / ".join(repr(name) for name in OFFLINE_ALGORITHMS)
            raise ConfigError(
                f"The preference section is read by algorithm.name={offline} only, but the algorithm is "
                f"{self.algorithm.name!r}, which would ignore it. Remove the preference section, or "
                f"set algorithm.name: {OFFLINE_ALGORITHMS[0]}."
            )

    def _check_preference(self) -> None:
        """The sections an offline preference algorithm reads."""
        if not self.preference.data:
            raise ConfigError(
                f"algorithm.name={self.algorithm.name!r} trains on preference pairs, but "
                "preference.data is empty; give a pairs file (e.g. from `rlft feedback export`)."
            )
        if self.preference.loss not in SMOOTHED_PREFERENCE_LOSSES and self.preference.label_smoothing:
            smoothed = " / ".join(repr(loss) for loss in sorted(SMOOTHED_PREFERENCE_LOSSES))
            raise ConfigError(
                f"preference.label_smoothing applies to loss {smoothed} only; set it to 0 for "
                f"{self.preference.loss!r}."
            )

    def _check_rl(self) -> None:
        """The sections the online RL loop reads."""
        # The registries of maths import torch: only when a recipe is checked.
        from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
        from rlft.algorithms.losses import POLICY_LOSSES

        algo = self.algorithm
        estimator = ADVANTAGE_ESTIMATORS.info(str(algo.advantage_estimator))
        critics = {name: ADVANTAGE_ESTIMATORS.info(name).needs_critic for name in ADVANTAGE_ESTIMATORS}
        if estimator.needs_critic and algo.critic == "none":
            raise ConfigError(
                f"algorithm.advantage_estimator={algo.advantage_estimator!r} needs a critic to estimate "
                "values, but algorithm.critic='none'. Set algorithm.critic: value_head (or separate), or "
                f"use a critic-free estimator ({', '.join(n for n, needs in critics.items() if not needs)})."
            )
        if algo.critic != "none" and not estimator.needs_critic:
            raise ConfigError(
                f"algorithm.critic={algo.critic!r} would be trained but never used: the "
                f"{algo.advantage_estimator!r} estimator ignores values. Use advantage_estimator: "
                f"{' or '.join(n for n, needs in critics.items() if needs)}, or critic: none."
            )
        if estimator.needs_groups and algo.group_size < 2:
            raise ConfigError(
                f"algorithm.advantage_estimator={algo.advantage_estimator!r} compares completions of "
                "the same prompt, so algorithm.group_size must be at least 2."
            )
        reuses = (self.train.epochs_per_batch or 1) > 1 or (self.train.mini_batch_size or 0) < self.train.batch_size
        if not POLICY_LOSSES.info(str(algo.policy_loss)).needs_old_logprobs and reuses:
            raise ConfigError(
                f"algorithm.policy_loss={algo.policy_loss!r} has no importance ratio, so it is only correct "
                "for one on-policy update per batch; set train.epochs_per_batch=1 and "
                "train.mini_batch_size=train.batch_size, or use policy_loss: ppo_clip."
            )
        self._check_batch_sizes()
        if self.reward is not None:
            from rlft.rewards import build_reward  # validates the spec: names bad keys and types

            build_reward(self.reward)
        g = self.algorithm.group_size
        if self.train.batch_size % g:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not a multiple of algorithm.group_size={g}: "
                f"each prompt gets {g} completions. Use e.g. train.batch_size={max(g, self.train.batch_size // g * g)}."
            )

    def _check_batch_sizes(self) -> None:
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

    def _check_model(self) -> None:
        from rlft.models.device import check_device_spec

        check_device_spec(self.train.device)
        if self.train.autocast != "none" and self.model.dtype != "float32":
            raise ConfigError(
                f"train.autocast={self.train.autocast!r} needs float32 weights, but model.dtype={self.model.dtype}. "
                "Use model.dtype: float32 (autocast keeps float32 master weights) or train.autocast: none."
            )
        self._check_rollout()
        tiny = self.model.tiny
        if tiny.num_heads % tiny.num_kv_heads:
            raise ConfigError(
                f"model.tiny.num_kv_heads={tiny.num_kv_heads} must divide model.tiny.num_heads={tiny.num_heads}."
            )
        if tiny.hidden_size % tiny.num_heads:
            raise ConfigError(
                f"model.tiny.hidden_size={tiny.hidden_size} must be a multiple of "
                f"model.tiny.num_heads={tiny.num_heads}."
            )

    def _check_rollout(self) -> None:
        check_async_recipe(self)
        if self.rollout.dtype == "bfloat16":
            clash = (
                "lora.r > 0 (the reference is the base with the adapter off, not a copy)" if self.lora.r
                else "distributed.engine='ray'" if self.distributed.engine == "ray"
                else "rollout.backend='vllm' (vLLM has its own dtype)" if self.rollout.backend == "vllm"
                else f"model.dtype={self.model.dtype} (already low precision)" if self.model.dtype != "float32"
                else None
            )  # fmt: skip
            if clash:
                raise ConfigError(
                    f"rollout.dtype='bfloat16' cannot be combined with {clash}. Use rollout.dtype: model."
                )
        if self.rollout.backend == "vllm" and self.distributed.engine == "ray":
            raise ConfigError(
                "rollout.backend='vllm' and distributed.engine='ray' cannot be combined yet: vLLM runs in the "
                "learner's process, on the learner's GPU (colocated), while Ray samples in worker processes. Use one "
                "of them."
            )
        check_vllm_recipe(self)  # before the GPU check below: these refusals hold on any machine
        if self.rollout.backend == "vllm":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    "rollout.backend='vllm' needs a CUDA GPU and the vllm package; this machine has no "
                    "GPU. Use rollout.backend: hf."
                )

    def _check_task(self) -> None:
        """The task's own checks of its fields (``rlft.tasks.TASKS``)."""
        from rlft.tasks import TASKS  # imports torch: only when a recipe is checked

        TASKS[self.task.name].check(self.task)


# The checks of the sections each trainer reads, by the trainer an algorithm's preset names.
TRAINER_CHECKS: dict[str, Callable[[RecipeConfig], None]] = {
    "rl": RecipeConfig._check_rl,
    "dpo": RecipeConfig._check_preference,
}


def _absolute(path: str) -> str:
    """``path`` made absolute when it names an existing local file or folder; else unchanged."""
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path


def absolute_paths(recipe: dict[str, Any]) -> dict[str, Any]:
    """A raw recipe mapping with its local data and reward files made absolute, as ``resolved()``
    records them (for comparing with a config.yaml written before paths were recorded so)."""
    out = plain_copy(recipe)
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


def config_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, plugins: list[str] | None = None
) -> RecipeConfig:
    """Validate a recipe given as plain data, with optional ``key=value`` overrides; its plugins
    (and ``plugins``, from --plugin) are imported first, so the names they register are valid."""
    data = with_plugins(with_overrides(data, overrides), plugins or [])
    data = _gather_task_settings(data)
    config = build(RecipeConfig, data).resolved()
    config.check()
    return config


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, plugins: list[str] | None = None
) -> RecipeConfig:
    """Load and validate a YAML recipe. ``None`` gives the embedded default (the demo)."""
    if path is None:
        return config_from_dict({}, overrides, plugins)
    data = read_recipe_yaml(path, "Check the path, or run `rlft demo`.")
    return config_from_dict(data, overrides, plugins)


def _gather_task_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A plugin's task takes its own settings next to its name (``task: {name: mine, size: 3}``):
    the keys of the task section that are not TaskConfig's go under ``task.settings``. Other
    tasks keep them, so that building the section names them as unknown keys."""
    section = data.get("task")
    if not isinstance(section, dict) or set(section) <= TASK_FIELDS:
        return data
    from rlft.tasks import TASKS  # imports torch: only for a section with keys of its own

    entry = TASKS.get(section.get("name", TaskConfig.name))
    if entry is None or entry.settings is None:
        return data
    return {**data, "task": gather_settings(section, TASK_FIELDS)}


def _with_task_settings(task: TaskConfig) -> TaskConfig:
    """``task.settings`` checked by the named task's settings dataclass (errors name ``task.KEY``)
    and recorded with every default filled in; a task without one reads no settings."""
    from rlft.tasks import TASKS  # imports torch: only when a recipe is checked

    cls = TASKS[task.name].settings
    if cls is None:
        return task
    return dataclasses.replace(task, settings=dataclasses.asdict(build(cls, task.settings, "task")))


def config_to_dict(config: Any) -> dict[str, Any]:
    """The recipe as plain data, under its recipe keys (``rollout.async``): config.yaml's content."""
    return recipe_dict(config)


def dump_config(config: RecipeConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def reference_markdown() -> str:
    """Every recipe field with its type, default and documentation, as Markdown."""
    lines = [
        "# Recipe reference",
        "",
        "Generated from `src/rlft/config/` by `python -m rlft.config > docs/recipes.md`.",
        "Every field is optional; the defaults are the embedded demo recipe.",
        "",
    ]
    from rlft.config.online import OnlineRecipe
    from rlft.config.process_reward import ProcessRewardRecipe

    online = ["", "# The `rlft online` recipe", "", "What `rlft online RECIPE.yaml` reads (docs/online.md).", ""]
    prm = ["", "# The `rlft prm` recipe", "", "What `rlft prm label` and `rlft prm train` read (docs/sparse_rewards.md).", ""]
    return "\n".join(lines + dataclass_markdown(RecipeConfig) + online + dataclass_markdown(OnlineRecipe)
                     + prm + dataclass_markdown(ProcessRewardRecipe)) + "\n"

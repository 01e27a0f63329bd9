"""The recipe of reward-model training (``rlft rm train RECIPE.yaml``; the training itself is
``rlft.trainers.reward_model``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlft.config.sections import CheckpointConfig, check_schedule
from rlft.errors import ConfigError
from rlft.models.tiny_config import TinyModelConfig
from rlft.plugins import with_plugins
from rlft.schema import build, read_recipe_yaml, setting, with_overrides


@dataclass(frozen=True)
class RewardModelRecipe:
    """What ``rlft rm train`` reads."""

    plugins: list[str] = setting(
        [], "Your own code to import before the recipe is checked: .py files or module names (--plugin adds more; "
        "docs/extending.md).",
    )
    train_data: str = setting(
        "", "Preference pairs {prompt, chosen, rejected}: .jsonl, .parquet or a dataset folder."
    )
    eval_data: str | None = setting(None, "Held-out pairs. Empty: hold out eval_fraction of train_data.")
    eval_fraction: float = setting(
        0.1, "Share of train_data held out when eval_data is empty.", ge=0, lt=1
    )
    model_path: str | None = setting(
        None,
        "Causal LM (folder or hub id) whose body starts the reward model, with a new scalar head. "
        "Empty: build the tiny model offline, its tokenizer trained on the pairs' text.",
    )
    tiny: TinyModelConfig = setting(
        TinyModelConfig(), "Shape of the offline model (used when model_path is empty)."
    )
    learning_rate: float = setting(
        1e-5,
        "AdamW learning rate (InstructGPT used 9e-6; a tiny model from scratch wants ~1e-3).",
        gt=0,
    )
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)
    lr_scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = setting(
        "constant",
        "Learning-rate schedule over the optimiser steps (transformers' get_scheduler); every one but constant "
        "warms up first when warmup is set.",
    )
    warmup_steps: int = setting(0, "Steps of linear warm-up from 0 to the learning rate.", ge=0)
    warmup_ratio: float = setting(0.0, "Warm-up as a fraction of the steps (used when warmup_steps is 0).", ge=0, le=1)
    epochs: int = setting(
        1,
        "Passes over the training pairs (more than 1 tends to overfit, Ouyang et al. 2022).",
        ge=1,
    )
    batch_size: int = setting(8, "Pairs per optimiser step.", ge=1)
    max_grad_norm: float = setting(1.0, "Clip the gradient norm to this.", gt=0)
    dropout: bool = setting(
        False, "Keep the model's dropout in training. false (the default): every dropout probability is set to 0, "
        "as in the RL trainers (a checkpoint's dropout, e.g. GPT-2's 0.1, would otherwise add noise to every score).",
    )
    margin: bool = setting(False, "Use each pair's 'margin' field in the loss (Llama 2, eq. 2).")
    max_length: int = setting(
        512, "Longest prompt + completion in tokens (the prompt's start is cut first).", ge=8
    )
    seed: int = setting(0, "Seed of initialisation, the held-out split and shuffling.")
    scrub_pii: bool = setting(
        True,
        "Replace PII in every pair (prompt, chosen, rejected) by typed placeholders before the "
        "tokenizer or the model sees it; counts go to OUTPUT_DIR/privacy.json.",
    )
    torch_threads: int = setting(0, "CPU threads for torch; 0 keeps torch's default.", ge=0)
    device: str = setting(
        "auto", "Where the reward model trains: auto (cuda:LOCAL_RANK when CUDA is visible, else cpu), cpu, cuda or cuda:N."
    )
    output_dir: str = setting(
        "runs/reward_model", "Folder to write model/, metrics.jsonl and summary.json into."
    )
    eval_every: int | None = setting(
        None, "Score the held-out pairs every this many steps (and at the end). Empty: only at the end.", ge=1
    )
    checkpoint: CheckpointConfig = setting(
        CheckpointConfig(), "Atomic checkpoints for `rlft rm train --resume`, every this many steps."
    )
    max_consecutive_nonfinite: int = setting(
        3, "Stop after this many steps in a row with a non-finite loss or gradient.", ge=1
    )


def rm_recipe_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None
) -> RewardModelRecipe:
    recipe = build(RewardModelRecipe, with_plugins(with_overrides(data, overrides)))
    if not recipe.train_data:
        raise ConfigError(
            "train_data is empty; give the preference pairs file (e.g. from `rlft feedback export`)."
        )
    check_schedule("", recipe.lr_scheduler, recipe.warmup_steps, recipe.warmup_ratio)
    from rlft.models.device import check_device_spec

    check_device_spec(recipe.device, "device")
    return recipe


def load_rm_recipe(path: str | Path, overrides: list[str] | None = None) -> RewardModelRecipe:
    return rm_recipe_from_dict(read_recipe_yaml(path), overrides)

"""The recipe of a process reward model: ``rlft prm label RECIPE.yaml`` writes step labels with
the ``label:`` section, ``rlft prm train RECIPE.yaml`` trains on them (``rlft.trainers.process_reward``)."""

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
class StepLabelConfig:
    """How ``rlft prm label`` makes step labels without people (Math-Shepherd, Wang et al. 2024):
    sample solutions, and from every step prefix of each, ``rollouts`` continuations."""

    recipe: str = setting(
        "", "The RL recipe (YAML) of the task: its task section gives the training prompts (never the held-out "
        "ones), its eval.pass_threshold what a right answer is, its rollout section the sampling.",
    )
    policy: str = setting(
        "", "The model that writes solutions and continuations: a model folder or hub id, or a run folder "
        "(its final_model/, else base_model/).",
    )
    prompts: int = setting(128, "Training prompts to write solutions for.", ge=1)
    solutions: int = setting(2, "Solutions sampled per prompt.", ge=1)
    rollouts: int = setting(4, "Continuations sampled from each step prefix (Math-Shepherd's N).", ge=1)
    batch_size: int = setting(256, "Sequences sampled per batch.", ge=1)


@dataclass(frozen=True)
class ProcessRewardRecipe:
    """What ``rlft prm label`` and ``rlft prm train`` read."""

    plugins: list[str] = setting([], "Your own code to import first: .py files or module names (docs/extending.md).")
    train_data: str = setting(
        "", "Step labels {prompt, steps, labels} (JSONL): what `rlft prm label` writes and `rlft prm train` reads.",
    )
    eval_data: str | None = setting(None, "Held-out step labels. Empty: hold out eval_fraction of train_data's prompts.")
    eval_fraction: float = setting(0.1, "Share of train_data's distinct prompts held out when eval_data is empty.",
                                   ge=0, lt=1)
    step_separator: str = setting("\n", "What splits a solution into steps (and what the PRM reads between them).")
    labels: Literal["soft", "hard"] = setting(
        "soft", "soft: the BCE target is the label itself; hard: 1 where the label is above 0 (some continuation "
        "reached the answer; Math-Shepherd's hard estimate), else 0.",
    )
    label: StepLabelConfig = setting(StepLabelConfig(), "rlft prm label: the solutions and rollouts that make labels.")
    model_path: str | None = setting(
        None, "Causal LM (folder or hub id) whose body starts the PRM, with a new value head; a good choice is the "
        "policy's own base model. Empty: build the tiny model offline, its tokenizer trained on the labels' text.",
    )
    tiny: TinyModelConfig = setting(TinyModelConfig(), "Shape of the offline model (used when model_path is empty).")
    learning_rate: float = setting(1e-4, "AdamW learning rate.", gt=0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)
    lr_scheduler: Literal["constant", "linear", "cosine", "constant_with_warmup"] = setting(
        "constant", "Learning-rate schedule over the optimiser steps (transformers' get_scheduler)."
    )
    warmup_steps: int = setting(0, "Steps of linear warm-up from 0 to the learning rate.", ge=0)
    warmup_ratio: float = setting(0.0, "Warm-up as a fraction of the steps (used when warmup_steps is 0).", ge=0, le=1)
    epochs: int = setting(2, "Passes over the labelled solutions.", ge=1)
    batch_size: int = setting(16, "Labelled solutions per optimiser step.", ge=1)
    max_grad_norm: float = setting(1.0, "Clip the gradient norm to this.", gt=0)
    dropout: bool = setting(False, "Keep the model's dropout in training (false: every dropout probability is 0).")
    max_length: int = setting(512, "Longest prompt + steps in tokens (the prompt's start is cut first).", ge=8)
    seed: int = setting(0, "Seed of labelling, initialisation, the held-out split and shuffling.")
    scrub_pii: bool = setting(True, "Replace PII in prompts and steps by typed placeholders before training "
                              "(counts in OUTPUT_DIR/privacy.json).")
    torch_threads: int = setting(0, "CPU threads for torch; 0 keeps torch's default.", ge=0)
    device: str = setting("auto", "Where the PRM trains and labelling samples: auto, cpu, cuda or cuda:N.")
    output_dir: str = setting("runs/prm", "Folder to write model/, metrics.jsonl, summary.json and model_card.md into.")
    eval_every: int | None = setting(None, "Score the held-out steps every this many steps (and at the end).", ge=1)
    checkpoint: CheckpointConfig = setting(
        CheckpointConfig(), "Atomic checkpoints for `rlft prm train --resume`, every this many steps."
    )
    max_consecutive_nonfinite: int = setting(3, "Stop after this many steps in a row with a non-finite loss.", ge=1)


def prm_recipe_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> ProcessRewardRecipe:
    recipe = build(ProcessRewardRecipe, with_plugins(with_overrides(data, overrides)))
    if not recipe.train_data:
        raise ConfigError("train_data is empty; name the step labels file (written by `rlft prm label`).")
    if not recipe.step_separator:
        raise ConfigError("step_separator is empty; steps need a separator (a newline: \"\\n\").")
    check_schedule("", recipe.lr_scheduler, recipe.warmup_steps, recipe.warmup_ratio)
    from rlft.models.device import check_device_spec

    check_device_spec(recipe.device, "device")
    return recipe


def load_prm_recipe(path: str | Path, overrides: list[str] | None = None) -> ProcessRewardRecipe:
    return prm_recipe_from_dict(read_recipe_yaml(path), overrides)

"""The recipe of the online loop (``rlft online RECIPE.yaml``): serve a model, collect feedback on
its live answers, train candidates from it, gate them and swap the ones that pass into the server.
The loop itself is :mod:`rlft.online.loop`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlft.errors import ConfigError
from rlft.plugins import with_plugins
from rlft.schema import build, read_recipe_yaml, setting, with_overrides


@dataclass(frozen=True)
class ServeConfig:
    """Where the OpenAI-compatible server listens."""

    host: str = setting("127.0.0.1", "Interface to bind; anything but loopback sends tokens without TLS.")
    port: int = setting(8000, "TCP port; 0 picks a free one.", ge=0, le=65535)
    model_name: str = setting("rlft", "The model id clients pass as `model` and /v1/models lists.")
    max_batch_size: int = setting(16, "Most concurrent requests sampled in one batch.", ge=1)
    max_new_tokens: int = setting(256, "Cap on a request's max_tokens.", ge=1)


@dataclass(frozen=True)
class OnlineConfig:
    """When a round runs, what it trains and what a candidate must pass to be served."""

    every_judgements: int = setting(
        50, "Start a round once this many new judgements were stored since the last round.", ge=1
    )
    interval: float | None = setting(
        None, "Also start a round every this many seconds when at least one new judgement arrived.", gt=0
    )
    method: Literal["kto", "dpo"] = setting(
        "kto",
        "kto: thumbs up/down (and each pair as one up and one down), Ethayarajh et al. 2024; "
        "dpo: pairwise judgements only, Rafailov et al. 2023.",
    )
    steps: int = setting(20, "Optimiser steps per candidate.", ge=1)
    batch_size: int = setting(16, "Judgements per optimiser step.", ge=1)
    learning_rate: float = setting(5e-6, "AdamW learning rate of the candidate.", gt=0)
    beta: float = setting(0.1, "KTO/DPO beta: how far from the served model the candidate may move.", gt=0)
    desirable_weight: float | None = setting(
        None, "KTO lambda_D; empty: balanced from the counts of ups and downs (Ethayarajh et al. eq. 8)."
    )
    undesirable_weight: float = setting(1.0, "KTO lambda_U.", gt=0)
    dropout: bool = setting(
        False, "Keep the model's dropout while a candidate trains. false (the default): every dropout probability is set "
        "to 0, so the candidate's log-probs are comparable with the served model's.",
    )
    heldout_fraction: float = setting(
        0.2, "Share of judgements (chosen by a hash of their id, so stable) kept for the gate.", gt=0, lt=1
    )
    min_heldout_accuracy: float = setting(
        0.5,
        "The candidate must move towards at least this share of held-out judgements relative to the "
        "served model (which scores exactly 0.5 against itself).",
        ge=0,
        le=1,
    )
    probe: str | None = setting(
        None, "JSONL of {prompt, answer}: the served model's answer log-likelihood must not regress."
    )
    max_regression: float = setting(
        0.05, "Largest allowed fall of the probe's mean answer log-prob per token (nats).", ge=0
    )
    max_failures: int = setting(
        3, "Consecutive crashed rounds before the loop stops retrying (the server keeps serving).", ge=1
    )
    poll_seconds: float = setting(1.0, "How often the loop checks for new judgements and rollbacks.", gt=0)
    seed: int = setting(0, "Seed of shuffling and sampling in training.")


@dataclass(frozen=True)
class PersonalizationConfig:
    """Per-user LoRA adapters on top of the shared model."""

    method: Literal["none", "adapter"] = setting("none", "adapter: one LoRA adapter per user with enough feedback.")
    r: int = setting(4, "LoRA rank of each user's adapter.", ge=1)
    min_judgements: int = setting(20, "Judgements a user needs before an adapter is trained.", ge=2)
    steps: int = setting(30, "Optimiser steps per adapter.", ge=1)
    learning_rate: float = setting(1e-3, "AdamW learning rate of the adapter.", gt=0)


@dataclass(frozen=True)
class PoisoningConfig:
    """Flag users whose labels disagree with everyone else's far beyond chance."""

    enabled: bool = setting(True, "Exclude flagged users' judgements from the shared model's data.")
    min_votes: int = setting(20, "Judgements a user needs before they are compared with others.", ge=2)
    alpha: float = setting(1e-3, "Significance of the one-sided binomial test of disagreement.", gt=0, lt=1)


@dataclass(frozen=True)
class OnlineRecipe:
    """What ``rlft online`` reads."""

    plugins: list[str] = setting(
        [], "Your own code to import before the recipe is checked: .py files or module names (--plugin adds more; "
        "docs/extending.md).",
    )
    model: str = setting("", "The model to serve first (version 1): a model folder or a run folder.")
    output_dir: str = setting(
        "runs/online", "Versions, adapters, state.json, rounds.jsonl and the audit log go here."
    )
    feedback_db: str = setting(
        "feedback.db", "The feedback store: a SQLite file or a postgresql:// URL (tokens come from it)."
    )
    consent_text: str | None = setting(None, "What users consent to on the chat page; empty: the default.")
    serve: ServeConfig = setting(ServeConfig(), "The server.")
    online: OnlineConfig = setting(OnlineConfig(), "Rounds, training and the gate.")
    personalization: PersonalizationConfig = setting(PersonalizationConfig(), "Per-user adapters.")
    poisoning: PoisoningConfig = setting(PoisoningConfig(), "Poisoning defence.")
    torch_threads: int = setting(0, "CPU threads for torch; 0 keeps torch's default.", ge=0)
    device: str = setting(
        "auto", "Where the model is served and the rounds train (rlft online --device): auto (the GPU when CUDA is "
        "visible, else cpu), cpu, cuda or cuda:N.",
    )


def online_recipe_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> OnlineRecipe:
    recipe = build(OnlineRecipe, with_plugins(with_overrides(data, overrides)))
    if not recipe.model:
        raise ConfigError("model is empty; give the model folder or run folder to serve first.")
    if recipe.online.probe is not None and not Path(recipe.online.probe).is_file():
        raise ConfigError(f"online.probe: no file {recipe.online.probe}; give a JSONL of {{prompt, answer}}.")
    from rlft.models.device import check_device_spec

    check_device_spec(recipe.device, "device")
    return recipe


def load_online_recipe(path: str | Path, overrides: list[str] | None = None) -> OnlineRecipe:
    return online_recipe_from_dict(read_recipe_yaml(path), overrides)

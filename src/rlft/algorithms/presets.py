"""What an algorithm is: the one table that says what each ``algorithm.name`` means.

An algorithm is data, not code: which trainer runs it (``"rl"``: the online loop; ``"dpo"``: the
offline preference trainer; ``rlft.trainers.registry.TRAINERS`` maps these to classes), the
registry entries and coefficients its ``algorithm:`` section defaults to, and its training
defaults. A recipe may override any of these; the fields it leaves empty (null) take the preset's
value when the recipe is resolved (``rlft.config``). Nothing else in rlft branches on the name.
See docs/algorithms.md for the papers and the benchmark figures.
"""

from __future__ import annotations

from typing import Any, TypedDict

from rlft.algorithms.registry import Registry


class TrainingDefaults(TypedDict):
    """Defaults of the recipe's ``train:`` section that depend on the algorithm."""

    epochs_per_batch: int  # passes over each rollout batch (sample reuse)
    mini_batches: int  # optimiser steps per pass: train.mini_batch_size = batch_size // mini_batches
    learning_rate: float  # AdamW


class AlgorithmPreset(TypedDict):
    trainer: str  # the key of rlft.trainers.registry.TRAINERS that runs this algorithm
    algorithm: dict[str, Any]  # values of the recipe's algorithm: fields left empty
    train: TrainingDefaults


def rl(**fields: Any) -> dict[str, Any]:
    """An online algorithm's fields: ``fields`` over what most of them share (PPO's 0.2 clip range,
    none of DAPO's batch shaping)."""
    shared = dict(clip_low=0.2, clip_high=0.2, dynamic_sampling=False, overlong_buffer=0, overlong_buffer_fraction=0.0,
                  mask_truncated=False)
    return {**shared, **fields}


# One update per batch, on policy.
ONE_UPDATE = TrainingDefaults(epochs_per_batch=1, mini_batches=1, learning_rate=1e-4)

# A plugin adds one with rlft.register_algorithm (docs/extending.md).
ALGORITHM_PRESETS: Registry[AlgorithmPreset, None] = Registry("algorithm", None, {
    # Shao et al. (2024), DeepSeekMath: group-normalised outcome advantages, clipped surrogate,
    # k3 KL in the loss. Token-mean aggregation (as in DAPO / TRL) rather than the paper's
    # sequence mean, so long completions are not down-weighted per token.
    "grpo": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="grpo", policy_loss="ppo_clip", critic="none", scale_rewards=True,
                       kl_placement="loss", kl_estimator="k3", kl_coef=0.04, loss_agg_mode="token_mean",
                       lam=0.95, entropy_coef=0.0),
        train=ONE_UPDATE,
    ),
    # Liu et al. (2025), "Understanding R1-Zero-Like Training": no std scaling, no length
    # normalisation (constant normaliser), no KL.
    "dr_grpo": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="grpo", policy_loss="ppo_clip", critic="none", scale_rewards=False,
                       kl_placement="loss", kl_estimator="k3", kl_coef=0.0, loss_agg_mode="seq_mean_token_sum_norm",
                       lam=0.95, entropy_coef=0.0),
        train=ONE_UPDATE,
    ),
    # Ahmadian et al. (2024), "Back to Basics": leave-one-out baseline, REINFORCE on whole
    # sequences, KL to the reference as a reward penalty.
    "rloo": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="rloo", policy_loss="vanilla_pg", critic="none", scale_rewards=False,
                       kl_placement="reward", kl_estimator="k1", kl_coef=0.05, loss_agg_mode="seq_mean_token_mean",
                       lam=0.95, entropy_coef=0.0),
        train=ONE_UPDATE,
    ),
    # Williams (1992) with a batch-mean baseline.
    "reinforce": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="reinforce", policy_loss="vanilla_pg", critic="none",
                       scale_rewards=False, kl_placement="reward", kl_estimator="k1", kl_coef=0.05,
                       loss_agg_mode="seq_mean_token_mean", lam=0.95, entropy_coef=0.0),
        train=ONE_UPDATE,
    ),
    # Hu (2025), REINFORCE++: global batch normalisation, clipped surrogate, token KL in the reward.
    "reinforce_pp": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="reinforce_pp", policy_loss="ppo_clip", critic="none",
                       scale_rewards=True, kl_placement="reward", kl_estimator="k1", kl_coef=0.01,
                       loss_agg_mode="token_mean", lam=0.95, entropy_coef=0.0),
        train=ONE_UPDATE,
    ),
    # Schulman et al. (2017) as used for RLHF by Ziegler et al. (2019) / Ouyang et al. (2022): a
    # critic on the policy's trunk, GAE, several epochs of minibatches, KL penalty in the reward.
    # Its 4 epochs x 4 mini-batches make 16 optimiser steps per batch, so it takes smaller ones
    # than the single-update algorithms (1e-4 collapsed it on the arithmetic benchmark).
    "ppo": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="gae", policy_loss="ppo_clip", critic="value_head", scale_rewards=True,
                       kl_placement="reward", kl_estimator="k1", kl_coef=0.05, loss_agg_mode="token_mean",
                       lam=0.95, entropy_coef=0.0),
        train=TrainingDefaults(epochs_per_batch=4, mini_batches=4, learning_rate=3e-5),
    ),
    # Mnih et al. (2016), synchronous advantage actor-critic: one on-policy update per batch.
    "a2c": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="gae", policy_loss="vanilla_pg", critic="value_head", scale_rewards=True,
                       kl_placement="reward", kl_estimator="k1", kl_coef=0.05, loss_agg_mode="token_mean",
                       lam=1.0, entropy_coef=0.01),
        train=ONE_UPDATE,
    ),
    # Zheng et al. (2025), "Group Sequence Policy Optimization": GRPO's group advantages with a
    # sequence-level importance ratio (the geometric mean of the token ratios), clipped per
    # sequence at the paper's 3e-4 / 4e-4, averaged over sequences; no KL. Two mini-batches per
    # batch, so the ratio is not always 1 (the paper's batches are split in four).
    "gspo": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="grpo", policy_loss="gspo", clip_low=3e-4, clip_high=4e-4, critic="none",
                       scale_rewards=True, kl_placement="loss", kl_estimator="k3", kl_coef=0.0,
                       loss_agg_mode="seq_mean_token_mean", lam=0.95, entropy_coef=0.0),
        train=TrainingDefaults(epochs_per_batch=1, mini_batches=2, learning_rate=1e-4),
    ),
    # Yu et al. (2025), DAPO: clip-higher (0.2 / 0.28), token-mean loss, no KL, dynamic sampling
    # (groups whose rewards are all equal are replaced by new ones) and overlong reward shaping
    # over the last 20% of rollout.max_new_tokens (the paper's 4096 of 20480);
    # two mini-batches per batch, as GSPO.
    "dapo": AlgorithmPreset(
        trainer="rl",
        algorithm=rl(advantage_estimator="grpo", policy_loss="ppo_clip", clip_low=0.2, clip_high=0.28,
                       critic="none", scale_rewards=True, kl_placement="loss", kl_estimator="k3", kl_coef=0.0,
                       loss_agg_mode="token_mean", lam=0.95, entropy_coef=0.0, dynamic_sampling=True,
                       overlong_buffer_fraction=0.2),
        train=TrainingDefaults(epochs_per_batch=1, mini_batches=2, learning_rate=1e-4),
    ),
    # Rafailov et al. (2023): offline, on the recipe's preference pairs (its preference: section);
    # the RL fields of the algorithm section are not read.
    "dpo": AlgorithmPreset(trainer="dpo", algorithm={}, train=ONE_UPDATE),
})

# The built-in online algorithms (they sample from the policy), and those that train on a fixed
# data set (a plugin's algorithm is online: rlft.register_algorithm builds on an online preset).
ALGORITHMS = tuple(name for name, preset in ALGORITHM_PRESETS.items() if preset["trainer"] == "rl")
OFFLINE_ALGORITHMS = tuple(name for name, preset in ALGORITHM_PRESETS.items() if preset["trainer"] != "rl")
# Each algorithm's algorithm-section defaults alone (what a reader of a run's config.yaml needs).
ALGORITHM_FIELDS: dict[str, dict[str, Any]] = {
    name: preset["algorithm"] for name, preset in ALGORITHM_PRESETS.items() if preset["algorithm"]
}

# What advantage estimators and policy losses need of the rest of a recipe (a critic, groups, one
# update per batch) is their registries' metadata (ADVANTAGE_ESTIMATORS.info, POLICY_LOSSES.info).
# Preference losses that take label smoothing (conservative DPO).
SMOOTHED_PREFERENCE_LOSSES = frozenset({"dpo"})

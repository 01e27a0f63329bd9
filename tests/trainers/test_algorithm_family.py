"""Every RL algorithm runs through the one loop, every preset through a registered trainer;
nonsense combinations are refused at load time."""

import json

import pytest

from rlft.config import ALGORITHM_PRESETS, ALGORITHMS, config_from_dict
from rlft.errors import ConfigError
from rlft.trainers.registry import train


def test_every_rl_algorithm_names_registered_parts():
    from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
    from rlft.algorithms.kl import KL_ESTIMATORS
    from rlft.algorithms.losses import POLICY_LOSSES

    assert {"grpo", "ppo", "rloo", "a2c", "reinforce"} <= set(ALGORITHMS)
    for name in ALGORITHMS:
        algo = config_from_dict({"algorithm": {"name": name}}).algorithm
        assert algo.advantage_estimator in ADVANTAGE_ESTIMATORS
        assert algo.policy_loss in POLICY_LOSSES
        assert algo.kl_estimator in KL_ESTIMATORS
        assert None not in (algo.kl_coef, algo.scale_rewards, algo.loss_agg_mode, algo.lam, algo.entropy_coef)


def test_every_preset_is_run_by_a_registered_trainer():
    from rlft.trainers.dpo import DPOTrainer
    from rlft.trainers.loop import RLTrainer
    from rlft.trainers.registry import TRAINERS

    for name, preset in ALGORITHM_PRESETS.items():
        assert preset["trainer"] in TRAINERS, name
    assert all(TRAINERS[ALGORITHM_PRESETS[name]["trainer"]] is RLTrainer for name in ALGORITHMS)
    assert TRAINERS[ALGORITHM_PRESETS["dpo"]["trainer"]] is DPOTrainer
    assert "dpo" not in ALGORITHMS


@pytest.mark.parametrize(
    "algorithm, message",
    [
        ({"name": "grpo", "advantage_estimator": "gae"}, "needs a critic"),
        ({"name": "ppo", "critic": "none"}, "needs a critic"),
        ({"name": "grpo", "critic": "value_head"}, "never used"),
        ({"name": "rloo", "group_size": 1}, "at least 2"),
    ],
)
def test_nonsense_combinations_are_refused_with_the_reason(algorithm, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"algorithm": algorithm, "train": {"batch_size": 8}})


def test_vanilla_pg_with_sample_reuse_is_refused():
    with pytest.raises(ConfigError, match="importance ratio"):
        config_from_dict({"algorithm": {"name": "a2c"}, "train": {"epochs_per_batch": 2}})


def test_explicit_fields_override_the_preset():
    algo = config_from_dict({"algorithm": {"name": "ppo", "kl_coef": 0.0, "lam": 0.5}}).algorithm
    assert (algo.kl_coef, algo.lam, algo.advantage_estimator) == (0.0, 0.5, "gae")
    train = config_from_dict({"algorithm": {"name": "ppo"}, "train": {"batch_size": 64}}).train
    assert (train.epochs_per_batch, train.mini_batch_size) == (4, 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALGORITHMS)
def test_each_algorithm_trains_a_few_steps(name, tmp_path, tiny_recipe, monkeypatch):
    from rlft.tasks.arithmetic import ArithmeticTask

    # Reward the parity of the characters so that every estimator sees non-zero advantages.
    monkeypatch.setattr(ArithmeticTask, "reward", lambda self, c, p: [float(sum(map(ord, x)) % 2) for x in c])
    recipe = [r for r in tiny_recipe if "micro_batch" not in r and "train.steps" not in r]
    config = config_from_dict({}, [*recipe, "train.steps=2", "warm_start.steps=0",
                                   f"algorithm.name={name}", f"run_dir={tmp_path / 'run'}"])
    train(config, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["train/skipped"] == 0 for m in metrics)
    assert all(m["optim/grad_norm"] > 0 for m in metrics)
    if config.algorithm.critic != "none":
        assert metrics[-1]["loss/value"] > 0
        assert (tmp_path / "run" / "value_head.safetensors").exists()


@pytest.mark.slow
def test_adaptive_kl_controller_moves_beta_and_resumes_with_it(tmp_path, tiny_recipe, monkeypatch):
    from rlft.tasks.arithmetic import ArithmeticTask

    monkeypatch.setattr(ArithmeticTask, "reward", lambda self, c, p: [float(sum(map(ord, x)) % 2) for x in c])
    config = config_from_dict({}, [*tiny_recipe, "train.steps=3", "warm_start.steps=0",
                                   "algorithm.kl_controller=adaptive", "algorithm.kl_target=1e-9",
                                   "algorithm.kl_horizon=10", f"run_dir={tmp_path / 'run'}"])
    train(config, progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    betas = [m["policy/kl_coef"] for m in metrics]
    # Step 1 samples from the reference itself (KL 0 < target): beta shrinks by the capped error
    # 0.2 times n/horizon = 16/10; afterwards the KL is far above the target and beta grows.
    assert betas[0] == pytest.approx(0.04)
    assert betas[1] == pytest.approx(0.04 * (1 - 0.2 * 1.6))
    assert betas[2] == pytest.approx(betas[1] * (1 + 0.2 * 1.6))
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_0000003" / "trainer_state.json").read_text())
    assert state["kl_coef"] == pytest.approx(betas[2] * (1 + 0.2 * 1.6))

"""Fixtures of the trainer tests: a tiny policy that writes short answers, and batches collected
from it by the RL loop's own ``collect``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


def starts_with_one(completions: list[str], problems: list[Any]) -> Any:
    """A reward with spread inside every group: 1 for a completion that starts with '1' (the RL
    loop's RewardFn: (completions, problems) -> RewardOutput)."""
    from rlft.rewards import RewardOutput

    return RewardOutput([float(c.strip().startswith("1")) for c in completions])


@pytest.fixture(scope="session")
def answering_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a short warm start on one-digit sums: it writes one or two digits,
    then EOS, so the completions of a batch have different lengths and padding after EOS."""
    from rlft.models.loading import load_policy
    from rlft.tasks.arithmetic import ArithmeticTask
    from rlft.trainers.sft import warm_start

    policy, tokenizer = load_policy(str(tiny_model_dir))
    task = ArithmeticTask(digits=1, eval_size=8, answer_format="answer")
    warm_start(policy, tokenizer, task.train_problems, 40, 32, 3e-3, seed=0, progress=False)
    out = tmp_path_factory.mktemp("answering_model")
    policy.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


CollectBatch = Callable[..., tuple[Any, Any, Any]]


@pytest.fixture
def collect_batch(answering_model_dir: Path) -> CollectBatch:
    """``collect_batch(*overrides) -> (config, learner, batch)``: one RL step's batch of 16
    completions (4 prompts x 4), collected by ``rlft.trainers.loop.collect`` from a freshly
    loaded copy of the answering model, rewarded by :func:`starts_with_one`."""
    from rlft.config import config_from_dict
    from rlft.models.loading import frozen_reference, load_policy
    from rlft.rollout.engine import LocalSampler
    from rlft.tasks.arithmetic import ArithmeticTask
    from rlft.trainers.loop import build_learner, collect

    def make(*overrides: str) -> tuple[Any, Any, Any]:
        config = config_from_dict({}, [
            f"model.path={answering_model_dir}", "task.digits=1", "task.answer_format=answer",
            "task.eval_size=8", "train.batch_size=16", "algorithm.group_size=4", "rollout.max_new_tokens=4",
            *overrides,
        ])  # fmt: skip
        policy, tokenizer = load_policy(str(answering_model_dir))
        learner = build_learner(config, policy)
        task = ArithmeticTask(digits=1, eval_size=8, answer_format="answer")
        gen = torch.Generator().manual_seed(0)
        batch = collect(config, learner, frozen_reference(policy), tokenizer, task, gen,
                        config.algorithm.kl_coef, starts_with_one, LocalSampler())  # fmt: skip
        return config, learner, batch

    return make

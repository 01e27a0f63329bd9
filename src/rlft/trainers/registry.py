"""Which trainer runs a recipe: the ``TRAINERS`` registry, and :func:`train`, the entry point of
``rlft train``, ``rlft demo`` and :func:`rlft.train`; ``AGENT_TRAINERS`` and :func:`train_agent`,
the entry point of ``rlft agent``.

An algorithm's preset (``rlft.algorithms.presets``) names its trainer; the trainer is built in an
open run folder and handed to the run harness (``trainers/run.py``), which decides what happens in
a run. Nothing here, or anywhere else, branches on an algorithm's name.
"""

from __future__ import annotations

from typing import Any

import torch

from rlft.algorithms.presets import ALGORITHM_PRESETS
from rlft.config import RecipeConfig
from rlft.config.agent import AgentConfig
from rlft.errors import RlftError
from rlft.models.device import resolve_device, set_deterministic
from rlft.trainers.agent import EpisodePolicyGradient, open_agent_run
from rlft.trainers.archer import ArcherTrainer
from rlft.trainers.dpo import DPOTrainer
from rlft.trainers.ilql import ILQLTrainer
from rlft.trainers.loop import RLTrainer
from rlft.trainers.parallel import Ranks, check_parallel_recipe, init_ranks
from rlft.trainers.run import OnStep, run_trainer
from rlft.trainers.setup import join_run, open_run

# Trainers of the main recipe (``rlft train``), by the name an algorithm's preset gives. Each is
# built as ``Trainer(config, session, task, progress, **python_overrides)``.
TRAINERS: dict[str, Any] = {"rl": RLTrainer, "dpo": DPOTrainer}
# Trainers that optimise the recipe's reward on its task, so ``rlft.train`` may replace either.
TAKES_REWARD_AND_TASK = {"rl"}
# Trainers of the multi-turn agent recipe (``rlft agent``), by its ``algorithm``. Each is built as
# ``Trainer(config, session, progress)``; grpo and ppo are the main loop's presets over episodes.
AGENT_TRAINERS: dict[str, Any] = {
    "grpo": EpisodePolicyGradient, "ppo": EpisodePolicyGradient, "ilql": ILQLTrainer, "archer": ArcherTrainer,
}


def train(
    config: RecipeConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: OnStep | None = None,
    reward: Any = None,
    task: Any = None,
) -> dict[str, Any]:
    """Run a whole recipe; returns the summary that is also written to ``summary.json``.

    ``reward`` (a batched reward callable) replaces the recipe's ``reward:``; ``task`` (an object
    following :class:`rlft.tasks.Task`) replaces its ``task:`` section.
    """
    kind = ALGORITHM_PRESETS[config.algorithm.name]["trainer"]
    overrides = {"reward": reward} if reward is not None else {}
    if kind not in TAKES_REWARD_AND_TASK and (reward is not None or task is not None):
        raise RlftError(f"algorithm.name={config.algorithm.name!r} trains on preference pairs; it takes no reward or task.")
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    device = resolve_device(config.train.device)  # before anything is written: a missing GPU is one error
    set_deterministic(device, config.train.deterministic)
    ranks = init_ranks(config.train.parallel, device)  # one process, or this rank of torchrun's
    if ranks.several and kind not in TAKES_REWARD_AND_TASK:
        raise RlftError(f"algorithm.name={config.algorithm.name!r} runs in one process; start it without torchrun.")
    check_parallel_recipe(config, ranks)
    with ranks.main_first():  # rank 0 opens (or reopens) the run folder; the others join it
        session, task = open_run(config, resume, reward, task) if ranks.is_main else \
            join_run(config, resume, ranks, reward, task)
    session.ranks = ranks
    with session:  # rank 0 holds the run folder's lock until here, however the run ends
        try:
            trainer = TRAINERS[kind](config, session, task, progress, **overrides)
        except BaseException:  # a model that does not load, a warm start that fails: the trackers say so now
            session.trackers.close(failed=True)
            raise
        summary = run_trainer(session, trainer, progress, on_step)
    ranks.close()
    return summary


def train_agent(
    config: AgentConfig, resume: bool = False, progress: bool = True, on_step: OnStep | None = None
) -> dict[str, Any]:
    """Run a multi-turn agent recipe; returns the summary that is also written to ``summary.json``."""
    trainer = AGENT_TRAINERS[config.algorithm]
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device, "device")
    with open_agent_run(config, resume, trainer) as session:  # holds the run folder's lock
        session.ranks = Ranks(device=device)
        return run_trainer(session, trainer(config, session, progress), progress, on_step)

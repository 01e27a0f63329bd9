"""Supervised training of a scoring model in epochs, for the run harness: the part the reward-model
trainer (Bradley-Terry on pairs) and the process-reward-model trainer (BCE on step labels) share.

A step is one batch of training rows, taken in a seeded order that changes every epoch; the order
follows from (seed, epoch), so a resumed run needs no state for it but the learning-rate schedule.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from rlft.common.optim import adamw, advance, current_lr, lr_schedule
from rlft.models.device import resolve_device
from rlft.models.dropout import disable_dropout
from rlft.trainers.run import Schedule


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training rows in epoch ``epoch``: one seeded generator shuffles
    ``range(n)`` once per epoch, so a resumed run replays the shuffles to the epoch it is in."""
    rng = random.Random(seed)
    for _ in range(epoch + 1):
        order = list(range(n))
        rng.shuffle(order)
    return order


class EpochTrainer:
    """One optimiser over ``model``, batches of ``rows`` epoch by epoch, a learning-rate schedule.

    A subclass sets ``name``, ``headline``, calls ``setup`` once its model and rows exist, and
    defines ``update(batch) -> (metrics, finite)`` with ``evaluate``, ``save_final`` and ``summary``.
    The recipe needs the fields the reward-model and PRM recipes share (``learning_rate``,
    ``batch_size``, ``epochs``, ``seed``, ``dropout``, ``device``, the schedule's settings)."""

    nonfinite_hint = "Lower learning_rate, or raise max_consecutive_nonfinite."

    def setup(self, recipe: Any, model: Any, tokenizer: Any, rows: list[Any]) -> None:
        self.recipe, self.model, self.tokenizer, self.rows = recipe, model, tokenizer, rows
        if not recipe.dropout:
            disable_dropout(model)
        model.to(resolve_device(recipe.device, "device"))  # once, before the optimiser is built
        self.optimizer = adamw(model.parameters(), recipe.learning_rate, recipe.weight_decay)
        self.per_epoch = -(-len(rows) // recipe.batch_size)
        steps = self.per_epoch * recipe.epochs
        self.schedule = Schedule(steps, recipe.eval_every or steps, recipe.checkpoint.every, recipe.checkpoint.keep,
                                 recipe.max_consecutive_nonfinite)
        self.lr_schedule = lr_schedule(self.optimizer, recipe.lr_scheduler, steps, recipe.warmup_steps,
                                       recipe.warmup_ratio)
        self.order: tuple[int, list[int]] = (-1, [])  # (epoch, its order of the training rows)

    def update(self, batch: list[Any]) -> tuple[dict[str, Any], bool]:
        raise NotImplementedError

    def modules(self) -> torch.nn.Module:
        return self.model

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"lr_schedule": self.lr_schedule.state_dict()}  # a step's batch follows from (seed, step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "lr_schedule" in state:  # checkpoints written before the schedule was saved have none
            self.lr_schedule.load_state_dict(state["lr_schedule"])

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        epoch, index = divmod(step, self.per_epoch)
        if self.order[0] != epoch:
            self.order = (epoch, epoch_order(len(self.rows), self.recipe.seed, epoch))
        size = self.recipe.batch_size
        batch = [self.rows[i] for i in self.order[1][index * size : (index + 1) * size]]
        lr = current_lr(self.optimizer)
        metrics, finite = self.update(batch)
        advance(self.lr_schedule)
        return {"epoch": epoch, **metrics, "train/lr": lr}, finite

    def progress(self, metrics: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{metrics.get('loss', float('nan')):.3f}", "acc": f"{metrics.get('accuracy', float('nan')):.2f}"}

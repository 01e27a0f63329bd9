"""The supervised warm start as a trainer of the run harness.

Before RL (or DPO), the base policy learns the task's format from reference answers
(:func:`rlft.trainers.sft.supervised_step`). It runs in its own folder, ``RUN/warm_start/``, driven
by the same harness as every other trainer: it checkpoints every ``checkpoint.every`` steps, a run
killed mid-warm-start resumes it bit-exactly with ``--resume``, a non-finite loss skips the step
(too many stop the run), and its audit log, metrics (``sft/loss``) and summary sit in that folder.
The held-out loss of the reference answers (``eval/sft_loss``), before, every ``eval.every`` steps
and after, shows what it did.
The result is saved as ``RUN/base_model/``, which RL starts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.common.optim import adamw, advance, current_lr, lr_schedule
from rlft.common.run_folder import RunFolder, write_text_atomic
from rlft.config import RecipeConfig, config_to_dict
from rlft.models.device import enable_gradient_checkpointing, model_device, to_device
from rlft.models.dropout import disable_dropout
from rlft.models.loading import save_model_atomic
from rlft.models.tokens import positions_from_mask
from rlft.tasks import Problem
from rlft.trainers.checkpoint import select_resume_checkpoint
from rlft.trainers.run import Evaluation, RunSession, Schedule, run_trainer
from rlft.trainers.sft import sft_batch, supervised_update

FOLDER = "warm_start"


class WarmStartTrainer:
    """Next-token loss on the answer tokens of the task's (prompt, target) pairs."""

    name = "warm start (SFT)"
    headline = "eval/sft_loss"
    nonfinite_hint = "Lower warm_start.learning_rate."

    def __init__(self, config: RecipeConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 draw_problems: Callable[[int, torch.Generator], list[Problem]], held_out: list[Problem],
                 base_model: Path) -> None:
        ws = config.warm_start
        if not config.train.dropout:
            disable_dropout(policy)
        self.policy, self.tokenizer, self.draw_problems = policy, tokenizer, draw_problems
        self.held_out, self.batch_size, self.base_model = held_out, ws.batch_size, base_model
        # The held-out loss every eval.every steps (cheap: teacher forcing, no sampling), so the bar's
        # held-out loss follows the warm start instead of showing the base model's all along.
        self.schedule = Schedule(ws.steps, config.eval.every, config.checkpoint.every, config.checkpoint.keep,
                                 config.train.max_consecutive_nonfinite)
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.model.gradient_checkpointing:  # the warm start trains the whole model too
            enable_gradient_checkpointing(policy)
        self.optimizer = adamw(policy.parameters(), ws.learning_rate)
        self.lr_schedule = lr_schedule(self.optimizer, ws.lr_scheduler, ws.steps, ws.warmup_steps, ws.warmup_ratio)

    def modules(self) -> torch.nn.Module:
        return self.policy

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        # The position in the stream of batches, and in the learning-rate schedule.
        return {"generator": self.generator.get_state(), "lr_schedule": self.lr_schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "lr_schedule" in state:
            self.lr_schedule.load_state_dict(state["lr_schedule"])

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        self.policy.train()
        batch = sft_batch(self.tokenizer, self.draw_problems(self.batch_size, self.generator))
        lr = current_lr(self.optimizer)
        loss, grad_norm = supervised_update(self.policy, self.optimizer, *batch)
        advance(self.lr_schedule)
        metrics = {"sft/loss": loss, "optim/grad_norm": grad_norm, "train/lr": lr}
        return metrics, math.isfinite(loss) and math.isfinite(grad_norm)

    @torch.no_grad()
    def evaluate(self, step: int) -> Evaluation:
        """The mean next-token loss of the held-out reference answers (teacher forcing)."""
        was_training = self.policy.training
        self.policy.eval()
        total, tokens = 0.0, 0
        for start in range(0, len(self.held_out), 64):
            ids, mask, labels = to_device(sft_batch(self.tokenizer, self.held_out[start : start + 64]),
                                          model_device(self.policy))
            logits = self.policy(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits.float()
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100,
                reduction="sum",
            )
            total, tokens = total + float(losses), tokens + int((labels[:, 1:] != -100).sum())
        self.policy.train(was_training)
        return Evaluation({"eval/sft_loss": total / max(tokens, 1)})

    def progress(self, metrics: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{metrics['sft/loss']:.3f}"}

    def save_final(self, run: RunFolder) -> Path:

        save_model_atomic(self.policy, self.tokenizer, self.base_model)
        return self.base_model

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {"base_model": str(self.base_model)}


def run_warm_start(
    config: RecipeConfig, run: RunFolder, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Any,
    progress: bool,
) -> None:
    """Warm-start ``policy`` in ``RUN/warm_start/`` (continuing it when a killed run left one) and
    save it as ``RUN/base_model``."""
    folder = RunFolder(run.root / FOLDER)
    resume = folder.config.exists()
    if resume:  # a damaged checkpoint is moved aside and the one before it used
        select_resume_checkpoint(folder.root, folder.checkpoints, config.warm_start.steps)
    folder.root.mkdir(parents=True, exist_ok=True)
    section = {"warm_start": config_to_dict(config.warm_start), "seed": config.seed}
    write_text_atomic(folder.config, yaml.safe_dump(section, sort_keys=False))
    session = RunSession.start(folder, section, "", resume)
    trainer = WarmStartTrainer(config, policy, tokenizer, getattr(task, "warm_start_problems", task.train_problems),
                               list(task.eval_problems), run.base_model)
    run_trainer(session, trainer, progress)

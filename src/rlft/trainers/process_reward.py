"""Train a process reward model on step labels (``rlft prm train``).

The PRM (``rlft.rewards.process_model``) is a causal LM with a value head read at the last token of
each step's separator; it is trained with binary cross-entropy between ``sigmoid(logit)`` and each
step's label (soft: the label itself, Math-Shepherd's soft estimate; hard: 1 where the label is
above 0), averaged over the batch's steps, as Math-Shepherd (Wang et al. 2024) trains its PRM. :class:`ProcessRewardTrainer` is a trainer of the run harness
(``trainers/run.py``): a step is one batch of labelled solutions, an evaluation the held-out step
accuracy and AUC; the harness checkpoints, resumes (``rlft prm train --resume``), writes the audit
log and stops on non-finite values.

The output folder is a run folder (docs/run-folder.md) that also holds ``model/`` (what
``reward: {type: process_model, path: ...}`` loads), ``recipe.yaml``, ``base_model/`` (the tiny
model, when ``model_path`` is empty) and ``privacy.json``. ``rlft prm train`` adds
``model_card.md`` (``rlft.report.prm_card``).

Metrics per step (``metrics.jsonl``): ``loss`` (mean BCE over the batch's steps), ``accuracy``
(steps where sigmoid(logit) >= 0.5 agrees with label >= 0.5), ``grad_norm`` (before clipping),
``epoch``. Held-out (``base_eval.json``, ``evals.jsonl``): ``eval/step_accuracy``,
``eval/step_auc`` (the chance that a step with label >= 0.5 scores above one below; null when the
held-out steps are all of one kind) and ``eval/loss``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlft.common.hashing import file_sha256
from rlft.common.optim import check_finite_weights
from rlft.common.run_folder import RunFolder
from rlft.config.process_reward import ProcessRewardRecipe, StepLabelConfig
from rlft.errors import ConfigError
from rlft.responsible.privacy import RunScrubber
from rlft.rewards.process_model import (
    ProcessRewardModel,
    batch_step_logits,
    save_process_model,
    step_scores,
)
from rlft.rewards.step_labels import StepLabels, load_step_labels
from rlft.trainers.epochs import EpochTrainer
from rlft.trainers.run import Evaluation, OnStep, RunSession, run_trainer
from rlft.trainers.session import open_session


def roc_auc(scores: list[float], positive: list[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative,
    a tie counting half (the Mann-Whitney U statistic over n_pos * n_neg). NaN without both kinds.

    >>> roc_auc([0.9, 0.2, 0.6, 0.6], [True, False, True, False])
    0.875
    """
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return math.nan
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def split_labels(recipe: ProcessRewardRecipe, scrubber: RunScrubber) -> tuple[list[StepLabels], list[StepLabels]]:
    """(train, held out), PII-scrubbed: ``eval_data``, else a seeded ``eval_fraction`` of the
    distinct prompts of ``train_data`` (every solution of a held-out prompt is held out)."""
    def scrub(rows: list[StepLabels]) -> list[StepLabels]:
        return [dataclasses.replace(r, prompt=scrubber.text(r.prompt, "prompt"),
                                    steps=[scrubber.text(s, "steps") for s in r.steps]) for r in rows]

    train = scrub(load_step_labels(recipe.train_data))
    if recipe.eval_data:
        return train, scrub(load_step_labels(recipe.eval_data))
    prompts = sorted({r.prompt for r in train})
    random.Random(recipe.seed).shuffle(prompts)
    n_eval = max(round(len(prompts) * recipe.eval_fraction), 1 if recipe.eval_fraction > 0 else 0)
    if n_eval >= len(prompts):
        raise ConfigError(f"train_data has {len(prompts)} distinct prompts: too few to hold out {recipe.eval_fraction:.0%}.")
    held = set(prompts[:n_eval])
    return [r for r in train if r.prompt not in held], [r for r in train if r.prompt in held]


def initial_model(recipe: ProcessRewardRecipe, rows: list[StepLabels], run: RunFolder) -> tuple[ProcessRewardModel, Any]:
    """The body of ``model_path`` (else of the tiny model, built once into ``base_model/`` with a
    tokenizer trained on the labels' text) with a new value head (zero: every step starts at 0.5)."""
    from rlft.models.loading import load_policy

    source = recipe.model_path
    if not source:
        if not run.base_model.exists():  # built aside, then renamed: a killed run leaves no half model
            from rlft.models.tiny import build_tiny_model

            corpus = [r.prompt + recipe.step_separator.join(r.steps) for r in rows]
            tmp = Path(tempfile.mkdtemp(dir=run.root, prefix=".base_model.", suffix=".tmp"))
            build_tiny_model(recipe.tiny, corpus, tmp, seed=recipe.seed).rename(run.base_model)
        source = str(run.base_model)
    torch.manual_seed(recipe.seed)
    trunk, tokenizer = load_policy(source)
    return ProcessRewardModel(trunk), tokenizer


def targets(rows: list[StepLabels], kind: str) -> torch.Tensor:
    """The BCE targets of every step of ``rows``, concatenated: soft labels, or hard (label > 0)."""
    labels = torch.tensor([v for r in rows for v in r.labels], dtype=torch.float32)
    return labels if kind == "soft" else (labels > 0).float()


def evaluate_prm(model: ProcessRewardModel, tokenizer: Any, rows: list[StepLabels], recipe: ProcessRewardRecipe,
                 ) -> dict[str, float]:
    """Held-out step accuracy, AUC and BCE (the binary truth of a step: label >= 0.5)."""
    was_training = model.training
    model.eval()
    scores = step_scores(model, tokenizer, [(r.prompt, r.steps) for r in rows], recipe.step_separator,
                         max_length=recipe.max_length)
    model.train(was_training)
    kept = [(p, v) for r, s in zip(rows, scores, strict=True) for p, v in zip(s, r.labels[len(r.labels) - len(s):],
                                                                               strict=True)]
    probs = torch.tensor([p for p, _ in kept]).clamp(1e-6, 1 - 1e-6)
    labels = torch.tensor([v for _, v in kept])
    truth = labels >= 0.5
    return {
        "eval/step_accuracy": ((probs >= 0.5) == truth).float().mean().item(),
        "eval/step_auc": roc_auc(probs.tolist(), truth.tolist()),
        "eval/loss": torch.nn.functional.binary_cross_entropy(probs, labels).item(),
    }


def bce_step(model: ProcessRewardModel, tokenizer: Any, optimizer: torch.optim.Optimizer, batch: list[StepLabels],
             recipe: ProcessRewardRecipe) -> tuple[dict[str, float], bool]:
    """One optimiser step on ``batch``. Returns (metrics, finite); a non-finite one changes no weight."""
    model.train()
    logits = batch_step_logits(model, tokenizer, [(r.prompt, r.steps) for r in batch], recipe.step_separator,
                               recipe.max_length)
    # Steps cut by max_length have no logit: keep the labels of the steps that were scored.
    kept = [dataclasses.replace(r, labels=r.labels[len(r.labels) - len(t):]) for r, t in zip(batch, logits, strict=True)]
    logit = torch.cat(logits).float()  # (steps,)
    target = targets(kept, recipe.labels).to(logit.device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return {}, False
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
    if not math.isfinite(grad_norm.item()):
        optimizer.zero_grad(set_to_none=True)
        return {}, False
    optimizer.step()
    truth = torch.tensor([v >= 0.5 for r in kept for v in r.labels], device=logit.device)
    return {"loss": loss.item(), "accuracy": ((logit >= 0).eq(truth)).float().mean().item(),
            "grad_norm": grad_norm.item()}, True


class ProcessRewardTrainer(EpochTrainer):
    """PRM training for the run harness: a step is one batch of labelled solutions."""

    name = "process_reward_model"
    headline = "eval/step_auc"

    def __init__(self, recipe: ProcessRewardRecipe, session: RunSession, progress: bool = True) -> None:
        self.train_rows, self.eval_rows = split_labels(recipe, session.privacy)
        if not self.eval_rows:
            raise ConfigError("No held-out step labels: set eval_fraction above 0 or give eval_data.")
        session.audit.append("data", path=str(recipe.train_data), sha256=file_sha256(Path(recipe.train_data)),
                             train_solutions=len(self.train_rows), eval_solutions=len(self.eval_rows))
        self.setup(recipe, *initial_model(recipe, self.train_rows, session.run), self.train_rows)

    def update(self, batch: list[StepLabels]) -> tuple[dict[str, Any], bool]:
        return bce_step(self.model, self.tokenizer, self.optimizer, batch, self.recipe)

    def evaluate(self, step: int) -> Evaluation:
        return Evaluation(evaluate_prm(self.model, self.tokenizer, self.eval_rows, self.recipe))

    def save_final(self, run: RunFolder) -> Path:
        """``model/`` written aside and renamed, so a reader never sees half a PRM."""
        check_finite_weights(self.model, "process reward model")
        final = run.root / "model"
        tmp = Path(tempfile.mkdtemp(dir=run.root, prefix=".model.", suffix=".tmp"))
        save_process_model(self.model, self.tokenizer, self.recipe.step_separator, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        steps = [v for r in self.train_rows for v in r.labels]
        return {
            "model_dir": str(Path(self.recipe.output_dir) / "model"),
            "train_solutions": len(self.train_rows), "train_steps": len(steps),
            "eval_solutions": len(self.eval_rows), "eval_steps": sum(len(r.labels) for r in self.eval_rows),
            "train_positive_fraction": sum(v >= 0.5 for v in steps) / len(steps),
            "step_accuracy_before": base.get("eval/step_accuracy"), "step_accuracy": final.get("eval/step_accuracy"),
            "step_auc_before": base.get("eval/step_auc"), "step_auc": final.get("eval/step_auc"),
        }


# What a resumed run may change: more epochs, another device, and the labelling settings (training
# reads the labels file, whose hash is checked).
RESUMABLE = frozenset({"epochs", "device", *(f"label.{f.name}" for f in dataclasses.fields(StepLabelConfig))})


def train_process_reward_model(recipe: ProcessRewardRecipe, progress: bool = True, resume: bool = False,
                               on_step: OnStep | None = None) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) a PRM; returns the summary (also in ``summary.json``).
    A resumed run may add epochs; anything else in the recipe must be unchanged."""
    if recipe.torch_threads:
        torch.set_num_threads(recipe.torch_threads)
    session = open_session(
        recipe.output_dir, dataclasses.asdict(recipe), resume=resume,
        defaults=dataclasses.asdict(ProcessRewardRecipe()), resumable=RESUMABLE,
        data={"train_data": recipe.train_data, "eval_data": recipe.eval_data}, copies=("recipe.yaml",),
        privacy=RunScrubber(recipe.scrub_pii),
    )
    with session:  # the run folder's lock is held until the run ends
        return run_trainer(session, ProcessRewardTrainer(recipe, session, progress), progress, on_step)

"""Train a reward model on preference pairs with the Bradley-Terry loss (``rlft rm train``).

A reward model is a sequence-classification transformer with one scalar output, read at the last
token of ``prompt + completion``; it is trained with ``-log sigmoid(r(chosen) - r(rejected) -
margin)`` (``rlft.algorithms.preference.bradley_terry_loss``; Ouyang et al. 2022, eq. 1; the
optional margin from Llama 2, eq. 2). :class:`RewardModelTrainer` is a trainer of the run harness
(``trainers/run.py``): a step is one batch of pairs, an evaluation the held-out pairwise accuracy
and margin; the harness checkpoints, resumes (``rlft rm train --resume``), writes the audit log
and stops on non-finite values.

The output folder is a run folder (docs/run-folder.md) that also holds ``model/`` (a
``save_pretrained`` sequence-classification model with its tokenizer, what ``RewardModelReward``
and ``rlft rm eval`` load), ``recipe.yaml`` (the resolved recipe, as ``config.yaml``),
``base_model/`` (the tiny causal LM the reward model starts from, when ``model_path`` is empty)
and ``privacy.json`` (what the PII scrubber removed from the pairs, counts only; ``scrub_pii`` is
on by default).

Metrics per step (``metrics.jsonl``): ``loss`` (mean Bradley-Terry loss), ``accuracy`` (fraction
of the batch's pairs scored chosen > rejected), ``margin`` (mean r_chosen - r_rejected),
``grad_norm`` (before clipping), ``epoch``. Held-out (``base_eval.json``, ``evals.jsonl``):
``eval/pairwise_accuracy`` (a tie counts half) and ``eval/margin``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlft.algorithms.preference import bradley_terry_loss
from rlft.common.hashing import file_sha256, folder_sha256
from rlft.common.optim import check_finite_weights
from rlft.common.run_folder import RunFolder
from rlft.config.reward_model import RewardModelRecipe
from rlft.errors import ConfigError
from rlft.responsible.privacy import RunScrubber
from rlft.rewards.pairs import PreferencePair, load_pairs
from rlft.rewards.reward_model import encode_texts, forward_scores, reward_scores
from rlft.trainers.epochs import EpochTrainer
from rlft.trainers.run import Evaluation, OnStep, RunSession, run_trainer
from rlft.trainers.session import open_session


def evaluate_reward_model(
    model: Any, tokenizer: Any, pairs: list[PreferencePair], batch_size: int = 32, max_length: int = 512
) -> dict[str, Any]:
    """Pairwise accuracy (a tie counts half) and mean score margin of chosen over rejected."""
    was_training = model.training
    model.eval()
    prompts = [p.prompt for p in pairs]
    chosen = reward_scores(model, tokenizer, prompts, [p.chosen for p in pairs], batch_size, max_length)
    rejected = reward_scores(model, tokenizer, prompts, [p.rejected for p in pairs], batch_size, max_length)
    model.train(was_training)
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return {"pairwise_accuracy": wins.mean().item(), "mean_margin": (chosen - rejected).mean().item(), "pairs": len(pairs)}


def load_reward_pairs(
    recipe: RewardModelRecipe, scrubber: RunScrubber
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held out), PII-scrubbed: ``eval_data``, else a seeded ``eval_fraction`` of ``train_data``."""
    train = [scrubber.record(p) for p in load_pairs(recipe.train_data)]
    if recipe.eval_data:
        return train, [scrubber.record(p) for p in load_pairs(recipe.eval_data)]
    order = list(range(len(train)))
    random.Random(recipe.seed).shuffle(order)
    n_eval = round(len(train) * recipe.eval_fraction)
    if recipe.eval_fraction > 0 and n_eval == 0:
        n_eval = 1
    if n_eval >= len(train):
        raise ConfigError(f"train_data has {len(train)} pairs: too few to hold out {recipe.eval_fraction:.0%}.")
    held = set(order[:n_eval])
    return [p for i, p in enumerate(train) if i not in held], [p for i, p in enumerate(train) if i in held]


def initial_model(recipe: RewardModelRecipe, pairs: list[PreferencePair], run: RunFolder) -> tuple[Any, Any]:
    """The body of ``model_path`` (else of the tiny model, built once into ``base_model/`` with a
    tokenizer trained on the pairs' text) with a new scalar head seeded by ``seed``."""
    from transformers import AutoModelForSequenceClassification

    from rlft.models.loading import load_tokenizer

    source = recipe.model_path
    if not source:
        if not run.base_model.exists():  # built aside, then renamed: a killed run leaves no half model
            from rlft.models.tiny import build_tiny_model

            corpus = [p.prompt + c for p in pairs for c in (p.chosen, p.rejected)]
            tmp = Path(tempfile.mkdtemp(dir=run.root, prefix=".base_model.", suffix=".tmp"))
            build_tiny_model(recipe.tiny, corpus, tmp, seed=recipe.seed).rename(run.base_model)
        source = str(run.base_model)
    tokenizer = load_tokenizer(source)
    torch.manual_seed(recipe.seed)  # the new score head's initialisation
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def bradley_terry_step(
    model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, batch: list[PreferencePair],
    recipe: RewardModelRecipe,
) -> tuple[dict[str, float], bool]:
    """One optimiser step on ``batch``. Returns (metrics, finite); a non-finite loss or gradient
    changes no weight."""
    model.train()
    n = len(batch)
    prompts = [p.prompt for p in batch] * 2
    completions = [p.chosen for p in batch] + [p.rejected for p in batch]
    ids, mask = encode_texts(tokenizer, prompts, completions, recipe.max_length)  # (2B, L): chosen, then rejected
    scores = forward_scores(model, ids, mask)  # (2B,)
    chosen, rejected = scores[:n], scores[n:]
    margin = torch.tensor([p.margin for p in batch], device=scores.device) if recipe.margin else None
    loss = bradley_terry_loss(chosen, rejected, margin).mean()
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return {}, False
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
    if not math.isfinite(grad_norm.item()):
        optimizer.zero_grad(set_to_none=True)
        return {}, False
    optimizer.step()
    return {
        "loss": loss.item(),
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "grad_norm": grad_norm.item(),
    }, True


def save_reward_model(model: Any, tokenizer: Any, out: Path) -> Path:
    """Write ``out/model/`` atomically: into a temporary sibling, then rename, so a reader never
    sees half a model. Non-finite weights are refused."""
    check_finite_weights(model, "reward model")
    final = out / "model"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".model.", suffix=".tmp"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tokenizer_config = tmp / "tokenizer_config.json"
    if tokenizer_config.exists():  # keep the tokenizer class the base declared (see models/tiny.py)
        data = json.loads(tokenizer_config.read_text())
        data["padding_side"] = "left"
        tokenizer_config.write_text(json.dumps(data, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


class RewardModelTrainer(EpochTrainer):
    """Bradley-Terry reward-model training for the run harness: a step is one batch of pairs."""

    name = "reward_model"
    headline = "eval/pairwise_accuracy"

    def __init__(self, recipe: RewardModelRecipe, session: RunSession, progress: bool = True) -> None:
        self.train_pairs, self.eval_pairs = load_reward_pairs(recipe, session.privacy)
        data = Path(recipe.train_data)
        session.audit.append("data", path=str(data), sha256=folder_sha256(data) if data.is_dir() else file_sha256(data),
                             train_pairs=len(self.train_pairs), eval_pairs=len(self.eval_pairs))
        self.setup(recipe, *initial_model(recipe, self.train_pairs, session.run), self.train_pairs)

    def update(self, batch: list[PreferencePair]) -> tuple[dict[str, Any], bool]:
        return bradley_terry_step(self.model, self.tokenizer, self.optimizer, batch, self.recipe)

    def evaluate(self, step: int) -> Evaluation:
        result = evaluate_reward_model(self.model, self.tokenizer, self.eval_pairs, max_length=self.recipe.max_length)
        return Evaluation({"eval/pairwise_accuracy": result["pairwise_accuracy"], "eval/margin": result["mean_margin"]})

    def save_final(self, run: RunFolder) -> Path:
        return save_reward_model(self.model, self.tokenizer, run.root)

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        return {
            "model_dir": str(Path(self.recipe.output_dir) / "model"),
            "train_pairs": len(self.train_pairs),
            "eval_pairs": len(self.eval_pairs),
            "eval_accuracy_before": base.get("eval/pairwise_accuracy"),
            "eval_accuracy": final.get("eval/pairwise_accuracy"),
            "eval_margin": final.get("eval/margin"),
        }


def train_reward_model(
    recipe: RewardModelRecipe, progress: bool = True, resume: bool = False, on_step: OnStep | None = None
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) a reward model; returns the summary (also in
    ``summary.json``). A resumed run may add epochs; anything else in the recipe must be unchanged."""
    if recipe.torch_threads:
        torch.set_num_threads(recipe.torch_threads)
    session = open_session(
        recipe.output_dir, dataclasses.asdict(recipe), resume=resume, defaults=dataclasses.asdict(RewardModelRecipe()),
        resumable=frozenset({"epochs", "device"}), data={"train_data": recipe.train_data, "eval_data": recipe.eval_data},
        copies=("recipe.yaml",), privacy=RunScrubber(recipe.scrub_pii),
    )
    with session:  # the run folder's lock is held until the run ends
        return run_trainer(session, RewardModelTrainer(recipe, session, progress), progress, on_step)

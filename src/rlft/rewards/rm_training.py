"""Train a reward model on preference pairs with the Bradley-Terry loss (``rlft rm train``).

The recipe is a small YAML file validated like the RL recipes (unknown keys name the nearest valid
one). The output folder holds ``model/`` (a ``save_pretrained`` sequence-classification model
with its tokenizer, what ``RewardModelReward`` and ``rlft rm eval`` load), ``recipe.yaml`` (the
resolved recipe), ``metrics.jsonl`` (one line per step), ``summary.json`` and ``privacy.json``
(what the PII scrubber removed from the pairs, counts only; ``scrub_pii`` is on by default).

Metrics per step: ``loss`` (mean Bradley-Terry loss), ``accuracy`` (fraction of the batch's pairs
scored chosen > rejected), ``margin`` (mean r_chosen - r_rejected), ``grad_norm`` (before
clipping).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from rlft.algorithms.preference import bradley_terry_loss
from rlft.common.optim import adamw
from rlft.config.reward_model import RewardModelRecipe
from rlft.errors import ConfigError
from rlft.responsible.privacy import RunScrubber
from rlft.rewards.pairs import PreferencePair, load_pairs
from rlft.rewards.reward_model import encode_texts, forward_scores, reward_scores


def evaluate_reward_model(
    model: Any,
    tokenizer: Any,
    pairs: list[PreferencePair],
    batch_size: int = 32,
    max_length: int = 512,
) -> dict[str, Any]:
    """Pairwise accuracy (a tie counts half) and mean score margin of chosen over rejected."""
    was_training = model.training
    model.eval()
    prompts = [p.prompt for p in pairs]
    chosen = reward_scores(
        model, tokenizer, prompts, [p.chosen for p in pairs], batch_size, max_length
    )
    rejected = reward_scores(
        model, tokenizer, prompts, [p.rejected for p in pairs], batch_size, max_length
    )
    model.train(was_training)
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return {
        "pairwise_accuracy": wins.mean().item(),
        "mean_margin": (chosen - rejected).mean().item(),
        "pairs": len(pairs),
    }


def _split(
    recipe: RewardModelRecipe, scrubber: RunScrubber
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    train = [scrubber.record(p) for p in load_pairs(recipe.train_data)]
    if recipe.eval_data:
        return train, [scrubber.record(p) for p in load_pairs(recipe.eval_data)]
    order = list(range(len(train)))
    random.Random(recipe.seed).shuffle(order)
    n_eval = round(len(train) * recipe.eval_fraction)
    if recipe.eval_fraction > 0 and n_eval == 0:
        n_eval = 1
    if n_eval >= len(train):
        raise ConfigError(
            f"train_data has {len(train)} pairs: too few to hold out {recipe.eval_fraction:.0%}."
        )
    held = set(order[:n_eval])
    return [p for i, p in enumerate(train) if i not in held], [
        p for i, p in enumerate(train) if i in held
    ]


def _initial_model(
    recipe: RewardModelRecipe, pairs: list[PreferencePair], out: Path
) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    from rlft.models.loading import load_tokenizer

    source = recipe.model_path
    if not source:
        from rlft.models.tiny import build_tiny_model

        corpus = [p.prompt + c for p in pairs for c in (p.chosen, p.rejected)]
        source = str(build_tiny_model(recipe.tiny, corpus, out / "base_model", seed=recipe.seed))
    tokenizer = load_tokenizer(source)
    torch.manual_seed(recipe.seed)  # the new score head's initialisation
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_reward_model(recipe: RewardModelRecipe, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate before and after, save; returns the summary (also in summary.json)."""
    from tqdm.auto import tqdm

    start = time.time()
    if recipe.torch_threads:
        torch.set_num_threads(recipe.torch_threads)
    device = "cuda" if recipe.device == "auto" and torch.cuda.is_available() else recipe.device
    device = "cpu" if device == "auto" else device
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False))
    scrubber = RunScrubber(recipe.scrub_pii)
    train_pairs, eval_pairs = _split(recipe, scrubber)
    scrubber.write(out)
    model, tokenizer = _initial_model(recipe, train_pairs, out)
    model.to(device)
    before = evaluate_reward_model(model, tokenizer, eval_pairs, max_length=recipe.max_length)
    optimizer = adamw(model.parameters(), recipe.learning_rate, recipe.weight_decay)
    rng = random.Random(recipe.seed)
    steps_per_epoch = -(-len(train_pairs) // recipe.batch_size)
    bar = tqdm(total=steps_per_epoch * recipe.epochs, desc="reward model", disable=not progress)
    step = 0
    with (out / "metrics.jsonl").open("w") as log:
        for epoch in range(recipe.epochs):
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
            for first in range(0, len(order), recipe.batch_size):
                batch = [train_pairs[i] for i in order[first : first + recipe.batch_size]]
                metrics = _train_step(model, tokenizer, optimizer, batch, recipe)
                step += 1
                log.write(json.dumps({"step": step, "epoch": epoch, **metrics}) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.2f}")
    bar.close()
    after = evaluate_reward_model(model, tokenizer, eval_pairs, max_length=recipe.max_length)
    model_dir = _save(model, tokenizer, out)
    summary = {
        "model_dir": str(model_dir),
        "train_pairs": len(train_pairs),
        "eval_pairs": len(eval_pairs),
        "steps": step,
        "eval_accuracy_before": before["pairwise_accuracy"],
        "eval_accuracy": after["pairwise_accuracy"],
        "eval_margin": after["mean_margin"],
        "seconds": time.time() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _train_step(
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    batch: list[PreferencePair],
    recipe: RewardModelRecipe,
) -> dict[str, float]:
    model.train()
    n = len(batch)
    prompts = [p.prompt for p in batch] * 2
    completions = [p.chosen for p in batch] + [p.rejected for p in batch]
    ids, mask = encode_texts(
        tokenizer, prompts, completions, recipe.max_length
    )  # (2B, L): chosen, then rejected
    scores = forward_scores(model, ids, mask)  # (2B,)
    chosen, rejected = scores[:n], scores[n:]
    margin = (
        torch.tensor([p.margin for p in batch], device=scores.device) if recipe.margin else None
    )
    loss = bradley_terry_loss(chosen, rejected, margin).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
    optimizer.step()
    return {
        "loss": loss.item(),
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "grad_norm": grad_norm.item(),
    }


def _save(model: Any, tokenizer: Any, out: Path) -> Path:
    """Write model/ atomically: into model.tmp/, then rename, so a reader never sees half a model."""
    final, tmp = out / "model", out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
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

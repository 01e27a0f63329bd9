"""The model card of a process reward model (``rlft prm train`` writes it into the output folder).

Sources: ``recipe.yaml`` (base model, separator, labels, hyperparameters), ``summary.json`` and
``evals.jsonl`` (held-out step accuracy and AUC), ``data.json`` (the labels' hash) and the audit
log. What is not known is said, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlft.report.document import Document
from rlft.report.report import read_json, read_jsonl

HYPERPARAMETERS = ("labels", "learning_rate", "epochs", "batch_size", "max_length", "lr_scheduler", "seed")


def _figure(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def build_prm_card(run: Path) -> Document:
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    summary = read_json(run / "summary.json") or {}
    data = read_json(run / "data.json") or {}
    label = recipe.get("label") or {}
    doc = Document(f"Model card: process reward model {run.name}")
    base = recipe.get("model_path") or "the tiny model rlft builds offline (base_model/), its tokenizer trained on the labels"
    doc.section("Model details").table(["", ""], [
        ["what it is", "a causal language model with a value head read at the end of each step: sigmoid(logit) "
                       "estimates the chance that a solution continued from that step reaches the right answer"],
        ["base model", base],
        ["trained model", str(run / "model")],
        ["step separator", repr(recipe.get("step_separator"))],
        ["use", f"reward: {{type: process_model, path: {run}}} in an RL recipe (docs/sparse_rewards.md)"],
    ])
    doc.section("Training data").table(["", ""], [
        ["step labels", f"{recipe.get('train_data')} (sha256 {str(data.get('train_data', {}).get('sha256', '?'))[:16]}...)"],
        ["how they were made", f"Math-Shepherd rollouts: {label.get('solutions')} solutions of {label.get('prompts')} "
                               f"prompts by {label.get('policy')}, {label.get('rollouts')} continuations per step "
                               f"(if written by `rlft prm label`; hand-written labels are used as they are)"],
        ["solutions (train / held out)", f"{summary.get('train_solutions')} / {summary.get('eval_solutions')}"],
        ["steps (train / held out)", f"{summary.get('train_steps')} / {summary.get('eval_steps')}"],
        ["training steps labelled >= 0.5", _figure(summary.get("train_positive_fraction"))],
    ])
    doc.section("Training procedure").table(["hyperparameter", "value"],
                                            [[key, recipe.get(key)] for key in HYPERPARAMETERS])
    evaluation = doc.section("Evaluation (held-out steps; a step is good when its label is >= 0.5)")
    evaluation.table(["", "before training", "after training"], [
        ["step accuracy", _figure(summary.get("step_accuracy_before")), _figure(summary.get("step_accuracy"))],
        ["step AUC", _figure(summary.get("step_auc_before")), _figure(summary.get("step_auc"))],
    ])
    evals = read_jsonl(run / "evals.jsonl")
    if evals:
        evaluation.table(["step", "step accuracy", "step AUC"],
                         [[e["step"], _figure(e.get("eval/step_accuracy")), _figure(e.get("eval/step_auc"))] for e in evals])
    doc.section("Limitations").bullets([
        "Labels are Monte Carlo estimates from a few continuations of one policy: noisy, and true for that policy; "
        "a much better or worse policy makes other steps recoverable.",
        "It scores steps of the task it was labelled on; nothing is claimed about other tasks or step formats.",
        "A policy trained against it can learn what it rewards rather than what is right (reward hacking): keep the "
        "outcome reward in the mix and watch the held-out pass rate, not the PRM's score.",
    ])
    return doc


def write_prm_card(run: Path) -> Path:
    """``RUN/model_card.md`` and ``.html``; returns the Markdown file."""
    doc = build_prm_card(run)
    (run / "model_card.html").write_text(doc.html())
    md = run / "model_card.md"
    md.write_text(doc.markdown())
    return md

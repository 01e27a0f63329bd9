"""Opening a run folder and preparing the policy RL starts from."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.config import RecipeConfig, config_to_dict, dump_config
from rlft.errors import RlftError
from rlft.evaluation import evaluate
from rlft.models.loading import load_policy
from rlft.models.tiny import build_tiny_model
from rlft.responsible.audit_log import AuditLog, folder_sha256
from rlft.responsible.privacy import private_task
from rlft.tasks import build_task
from rlft.trainers.run_folder import RunFolder, write_json_atomic, write_text_atomic
from rlft.trainers.sft import warm_start

# Fields a resumed run may change: extending a run is allowed, changing what it learns is not.
RESUMABLE_CHANGES = {"train.steps"}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def recipe_fingerprint(config: RecipeConfig) -> str:
    flat = {k: v for k, v in _flatten(config_to_dict(config)).items() if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(repr(sorted(flat.items())).encode()).hexdigest()[:16]


def open_run(config: RecipeConfig, resume: bool) -> tuple[RunFolder, Any, str]:
    """Create (or, with ``resume``, reopen) the run folder; never overwrites an existing run."""
    run = RunFolder(config.run_dir)
    fingerprint = recipe_fingerprint(config)
    if resume:
        if not run.config.exists():
            raise RlftError(
                f"--resume: {run.root} holds no run (no config.yaml). Start it without --resume."
            )
        old = _flatten(yaml.safe_load(run.config.read_text()))
        new = _flatten(config_to_dict(config))
        changed = [
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
        ]
        if changed:
            raise RlftError(
                f"--resume: the checkpoints in {run.root} come from another recipe; it differs in "
                + "; ".join(changed)
                + ". Resume with the original recipe, or start a new run with another run_dir "
                "(--set run_dir=...)."
            )
    elif run.root.exists() and any(run.root.iterdir()):
        raise RlftError(
            f"Run folder {run.root} already holds a run. Continue it with --resume, or choose "
            "another folder with --set run_dir=PATH (nothing was changed)."
        )
    run.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, dump_config(config))
    # Private by default: task text is scrubbed before anything reads it (privacy.scrub_pii).
    return run, private_task(build_task(config.task), config.privacy.scrub_pii), fingerprint


def save_model_atomic(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path
) -> None:
    """``save_pretrained`` into a temporary sibling, then rename into place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def prepare_base_policy(
    config: RecipeConfig, task: Any, run: RunFolder, progress: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, float]:
    """The policy RL starts from, and its held-out accuracy.

    The first time: build the tiny model (or load ``model.path``), warm-start it and save it as
    ``base_model/``. On resume, ``base_model/`` is loaded as it is.
    """
    if not run.base_model.exists():
        if config.model.path:
            policy, tokenizer = load_policy(config.model.path, config.model.dtype)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                build_tiny_model(config.model.tiny, task.corpus(), tmp, seed=config.seed)
                policy, tokenizer = load_policy(tmp, config.model.dtype)
        warm_start(
            policy,
            tokenizer,
            task.train_problems,
            config.warm_start.steps,
            config.warm_start.batch_size,
            config.warm_start.learning_rate,
            seed=config.seed,
            progress=progress,
        )
        save_model_atomic(policy, tokenizer, run.base_model)
    policy, tokenizer = load_policy(str(run.base_model), config.model.dtype)
    if not run.base_eval.exists():
        result = evaluate(
            policy, tokenizer, task, task.eval_problems, config.rollout.max_new_tokens, config.eval.batch_size,
            config.eval.temperature, config.eval.samples,
        )  # fmt: skip
        write_json_atomic(run.base_eval, {"eval/accuracy": result.accuracy})

    base_accuracy = json.loads(run.base_eval.read_text())["eval/accuracy"]
    return policy, tokenizer, base_accuracy


def close_run(run: RunFolder, task: Any, audit: AuditLog, summary: dict[str, Any]) -> dict[str, Any]:
    """Write the summary and the privacy counts, and close the audit trail with the final model's
    hash and the summary; returns ``summary``. Called last by every trainer, after the final model
    is saved."""
    write_json_atomic(run.summary, summary)
    task.scrubber.write(run.root)
    audit.append("final_model", path="final_model", sha256=folder_sha256(run.final_model))
    audit.append("run_end", summary=summary)
    return summary


"""Opening a run folder and preparing the policy RL starts from."""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from typing import Any

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.common.folder_lock import FolderLock
from rlft.common.run_folder import (
    ResumablePrivacy,
    RunFolder,
    write_json_atomic,
    write_text_atomic,
)
from rlft.config import (
    OFFLINE_ALGORITHMS,
    RecipeConfig,
    absolute_paths,
    config_to_dict,
    dump_config,
)
from rlft.errors import RlftError
from rlft.evaluation import EvalResult, evaluate
from rlft.models.device import move_model
from rlft.models.loading import check_max_new_tokens, load_policy, save_model_atomic
from rlft.models.tiny import build_tiny_model
from rlft.responsible.privacy import private_task
from rlft.tasks import build_task
from rlft.tracking import check_installed, start_trackers
from rlft.trainers.checkpoint import select_resume_checkpoint
from rlft.trainers.parallel import Ranks
from rlft.trainers.run import RunSession
from rlft.trainers.session import fingerprint, flatten
from rlft.trainers.warm_start import run_warm_start

# Fields a resumed run may change: extending a run is allowed, changing what it learns is not.
# Where it runs is not what it learns: a run checkpointed on a GPU resumes on a CPU and back
# (its numbers then differ by the two devices' rounding; docs/distributed.md).
RESUMABLE_CHANGES = frozenset({"train.steps", "train.device", "train.deterministic"})
# Where metrics go changes nothing the run learns either: a resumed run may add or change trackers.
# (Not in RESUMABLE_CHANGES, which the recipe hash also leaves out: existing runs keep their hash.)
RESUMABLE_SECTIONS = ("log.", "reward_limits.")


def recipe_fingerprint(config: RecipeConfig) -> str:
    """The hash of every recipe field a resumed run may not change (checkpoints carry it)."""
    return fingerprint(config_to_dict(config), RESUMABLE_CHANGES)


def open_run(
    config: RecipeConfig, resume: bool, reward: Any = None, task: Any = None
) -> tuple[RunSession, Any]:
    """Create (or, with ``resume``, reopen) the run folder of a recipe; never overwrites an
    existing run. Returns the open session, which holds the run folder's lock (one process per
    run), and the task (PII-scrubbed as the recipe says).

    ``task`` replaces the recipe's task (``rlft.train(..., task=...)``); ``reward`` is a Python
    callable that replaces the recipe's ``reward:`` (the dataset task is built with it)."""
    run = RunFolder(config.run_dir)
    check_installed(config.log)  # a tracker whose library is missing: nothing is written
    check_lora_targets(config, run)  # LoRA layers the model does not have: nothing is written
    # A file, a folder that is not a run, read-only, in use by another process: one clear error.
    lock = run.claim(resume)  # held until the session ends (``with session:``)
    with lock.released_on_error():
        return _open_claimed(config, run, lock, resume, reward, task)


def _open_claimed(
    config: RecipeConfig, run: RunFolder, lock: FolderLock, resume: bool, reward: Any, task: Any
) -> tuple[RunSession, Any]:
    recipe_hash = recipe_fingerprint(config)
    if resume:
        old = flatten(absolute_paths(yaml.safe_load(run.config.read_text())))
        new = flatten(config_to_dict(config))
        # A field added to rlft after the run started is absent from its config.yaml: at its
        # default it changes nothing the run did, so it is no reason to refuse the resume.
        added_defaults = flatten(config_to_dict(RecipeConfig()))
        changed = [
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_SECTIONS)
            and not (k not in old and new.get(k) == added_defaults.get(k))
        ]
        if changed:
            raise RlftError(
                f"--resume: the checkpoints in {run.root} come from another recipe; it differs in "
                + "; ".join(changed)
                + ". Resume with the original recipe, or start a new run with another run_dir "
                "(--set run_dir=...)."
            )
        # Before anything is written: a damaged checkpoint is moved aside and the previous one used.
        planned = None if config.algorithm.name in OFFLINE_ALGORITHMS else config.train.steps
        select_resume_checkpoint(run.root, run.checkpoints, planned)
    # The data is read and checked before the run folder is touched: bad data changes nothing.
    from_python = task is not None
    if task is None:
        task = build_task(config.task, lambda: recipe_reward(config, reward), config.warm_start)
    check_data_unchanged(run, task, resume)
    run.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run.config, dump_config(config))
    write_data_record(run, config, task)
    if from_python:  # config.yaml's task section is not what trained: say so (rlft eval reads it)
        write_json_atomic(run.root / "python_task.json", {"task": f"{type(task).__module__}.{type(task).__qualname__}"})
    # Private by default: task text is scrubbed before anything reads it (privacy.scrub_pii).
    task = private_task(task, config.privacy.scrub_pii)
    task.scrubber = ResumablePrivacy(task.scrubber, run.root, resume)  # a resumed run's counts merge
    # Before any training (the warm start included): a tracker that cannot start stops the run here.
    trackers = start_trackers(config.log, run.root, flatten(config_to_dict(config)))
    session = RunSession.start(run, config_to_dict(config), recipe_hash, resume, privacy=task.scrubber, lock=lock,
                               data_sha256=getattr(task, "data_sha256", None),
                               **({"trackers": trackers.state} if trackers else {}))
    session.trackers, trackers.audit = trackers, session.audit
    return session, task


def check_lora_targets(config: RecipeConfig, run: RunFolder) -> None:
    """Refuse ``lora.target_modules`` that name no linear layer of the model, before anything is
    written: the model is built from its config on the meta device (no weights are read)."""
    if not config.lora.r:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlft.models.lora import ALL_LINEAR, resolve_target_modules
    from rlft.models.tiny import tiny_model_config

    if list(config.lora.target_modules) == [ALL_LINEAR]:
        return  # fits every model
    source = str(run.base_model) if run.base_model.exists() else config.model.path
    if source:
        try:
            model_config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError):
            return  # no such model here: loading it says so, in one clear error
    else:  # the tiny model: its layers' names do not depend on the vocabulary it will have
        model_config = tiny_model_config(config.model.tiny, _TinyVocabulary())
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config)
    resolve_target_modules(skeleton, config.lora.target_modules)


class _TinyVocabulary:
    """What :func:`tiny_model_config` reads of a tokenizer, before the tokenizer is trained."""

    eos_token_id, pad_token_id = 0, 1

    def __len__(self) -> int:
        return 2


def join_run(config: RecipeConfig, resume: bool, ranks: Ranks, reward: Any = None, task: Any = None
             ) -> tuple[RunSession, Any]:
    """A rank other than 0 joins the run folder rank 0 has opened (``open_run``): the same task,
    built from the same recipe and data, PII-scrubbed alike; nothing is written."""
    if task is None:
        task = build_task(config.task, lambda: recipe_reward(config, reward), config.warm_start)
    task = private_task(task, config.privacy.scrub_pii)
    return RunSession.join(RunFolder(config.run_dir), recipe_fingerprint(config), resume, ranks), task


def recipe_reward(config: RecipeConfig, reward: Any = None) -> Any:
    """The reward a run optimises: a Python callable given to ``rlft.train``, else the recipe's
    ``reward:`` spec built once, else None (the task's own reward)."""
    spec = reward if reward is not None else config.reward
    if spec is None:
        return None
    spec = on_learner_device(spec, config.train.device)
    from rlft.rewards import build_reward
    from rlft.rewards.limits import limit_reward

    limits = config.reward_limits
    warn_scaled_process_reward(config, spec)
    return limit_reward(build_reward(spec), limits.max_abs, limits.timeout, limits.workers)


def warn_scaled_process_reward(config: RecipeConfig, spec: Any) -> None:
    """A process reward model's scores differ little between completions; GRPO's division by the
    group's std turns those small differences into full-size advantages wherever a group's
    outcomes are equal (measured on the multistep task: 13.5% held-out with it, 46.0% without,
    docs/sparse_rewards.md), so the combination gets a warning."""
    algo = config.algorithm
    if isinstance(spec, dict) and spec.get("type") == "process_model" and algo.advantage_estimator == "grpo" \
            and algo.scale_rewards:
        warnings.warn(
            "reward type process_model with algorithm.advantage_estimator: grpo and scale_rewards: true: each "
            "group's rewards are divided by their std, so the PRM's small score differences become full-size "
            "advantages where a group's outcomes are equal (on the multistep benchmark this took the held-out "
            "pass rate from 42.5% to 13.5%). Set algorithm.scale_rewards: false (or algorithm.name: dr_grpo), "
            "or use a token-level estimator (ppo); docs/sparse_rewards.md.", stacklevel=2)


def on_learner_device(spec: Any, device: str) -> Any:
    """A reward spec whose reward models run on the learner's device (``train.device``) unless
    their own ``device`` names one: a reward model scores on the GPU that trains, not the CPU."""
    if isinstance(spec, list):
        return [on_learner_device(item, device) for item in spec]
    if not isinstance(spec, dict):
        return spec  # a Python callable
    out = {key: on_learner_device(value, device) if key in ("components", "reward") else value
           for key, value in spec.items()}
    if out.get("type") in ("reward_model", "process_model") and out.get("device", "auto") == "auto":
        out["device"] = device
    return out


def write_data_record(run: RunFolder, config: RecipeConfig, task: Any) -> None:
    """``RUN/data.json``: each data source's path and content hash (the dataset task), so a
    resumed run can refuse changed data and `rlft eval RUN` can warn about it."""
    hashes = getattr(task, "data_sha256", None)
    if not hashes:
        return
    paths = {"task.data": config.task.data, "task.eval_data": config.task.eval_data, "warm_start.data": config.warm_start.data}
    record: dict[str, Any] = {name: {"path": paths[name], "sha256": digest} for name, digest in hashes.items()}
    dropped = getattr(task, "dropped_overlap", 0)
    record["training_rows_dropped_as_held_out"] = dropped
    if dropped:
        print(f"rlft: {dropped} training rows repeat a held-out prompt; they are left out of training.", file=sys.stderr)
    write_json_atomic(run.root / "data.json", record)


def changed_data(run: RunFolder, task: Any) -> list[str]:
    """The data sources (task.data, ...) whose content hash differs from ``RUN/data.json``'s."""
    path = run.root / "data.json"
    hashes = getattr(task, "data_sha256", None)
    if not (hashes and path.exists()):
        return []
    recorded = json.loads(path.read_text())
    return [name for name, digest in hashes.items() if recorded.get(name, {}).get("sha256") != digest]


def check_data_unchanged(run: RunFolder, task: Any, resume: bool) -> None:
    """On resume, refuse data whose content hash differs from the one the run started with."""
    changed = changed_data(run, task) if resume else []
    if changed:
        raise RlftError(
            f"--resume: the content of {', '.join(changed)} changed since the run started "
            f"(hashes in {run.root / 'data.json'}); a resumed run must train on the same data. Restore "
            "the data, or start a new run with another run_dir."
        )


def prepare_task(config: RecipeConfig, task: Any, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Render the task's prompts for ``tokenizer`` and check they fit the model's context window
    (minus ``rollout.max_new_tokens``) or ``rollout.max_prompt_tokens``."""
    check_max_new_tokens(policy, tokenizer, [p.prompt for p in task.eval_problems], config.rollout.max_new_tokens)
    window = getattr(policy.config, "max_position_embeddings", None)
    limits = [config.rollout.max_prompt_tokens, window - config.rollout.max_new_tokens if window else None]
    task.prepare(tokenizer, min((x for x in limits if x is not None), default=None))


def preflight_rewards(task: Any, reward_fn: Any = None) -> None:
    """Score a few held-out problems' reference answers with the task's reward (and ``reward_fn``)
    before the warm start: a reward that cannot run (a wrong signature, no answers to compare
    with) fails here, before anything is trained or written into the run folder."""
    if not task.eval_problems:
        raise RlftError(
            "The task has no held-out problems, so nothing can be evaluated. Give held-out data "
            "(task.eval_data or task.eval_fraction > 0), or a task whose eval_problems is not empty."
        )
    probe = list(task.eval_problems[:4])
    completions = [p.target or p.answer for p in probe]
    task.reward(completions, probe)
    if reward_fn is not None:
        reward_fn(completions, probe)


def prepare_base_policy(
    config: RecipeConfig, task: Any, run: RunFolder, progress: bool, reward_fn: Any = None,
    device: torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy training starts from, on ``device`` (the run's; the CPU when None).

    The first time: build the tiny model (or load ``model.path``), check the task's prompts and
    rewards (``reward_fn``, ``(completions, problems) -> scores``, is the recipe's reward when it
    is not the task's own), warm-start it on the device and save it as ``base_model/``. On resume,
    ``base_model/`` is loaded as it is. (The harness evaluates it: ``base_eval.json``.)
    """
    device = device or torch.device("cpu")
    if not run.base_model.exists():
        if config.model.path:
            policy, tokenizer = load_policy(config.model.path, config.model.dtype)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                chat = bool(getattr(task, "conversational", False))
                build_tiny_model(config.model.tiny, task.corpus(), tmp, seed=config.seed, chat=chat)
                policy, tokenizer = load_policy(tmp, config.model.dtype)
        prepare_task(config, task, policy, tokenizer)
        preflight_rewards(task, reward_fn)
        if config.warm_start.steps:
            run_warm_start(config, run, move_model(policy, device), tokenizer, task, progress)  # saves base_model/
        else:
            save_model_atomic(policy, tokenizer, run.base_model)
    policy, tokenizer = load_policy(str(run.base_model), config.model.dtype)
    move_model(policy, device)  # once, before any copy of it (reference, critic, rollout engine) is made
    prepare_task(config, task, policy, tokenizer)
    return policy, tokenizer


def evaluate_policy(
    config: RecipeConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Any, reward_fn: Any = None
) -> EvalResult:
    """The held-out evaluation of a recipe: its decoding settings, its reward and pass threshold."""
    return evaluate(
        policy, tokenizer, task, task.eval_problems, config.rollout.max_new_tokens, config.eval.batch_size,
        config.eval.temperature, config.eval.samples, reward_fn=reward_fn, pass_threshold=config.eval.pass_threshold,
    )  # fmt: skip

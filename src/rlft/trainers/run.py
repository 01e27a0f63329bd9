"""The run harness: what happens in a run, written once.

Every trainer — the RL loop, DPO, the multi-turn agent trainers, the reward model — is a
:class:`Trainer`: it builds its models in its constructor and supplies ``step()`` and
``evaluate()``. :func:`run_trainer` owns everything else, in this order:

1. evaluate the starting model once (``base_eval.json``) and record it in the audit log;
2. on ``--resume``, load the newest intact checkpoint (weights, optimisers, RNG, the trainer's own
   state) and cut the logs back to it, so the resumed run is bit-identical to an uninterrupted one;
3. run the steps: a non-finite step leaves the weights untouched and is counted; too many in a row
   stop the run with the last good checkpoint named; evaluations every ``eval_every`` steps go to
   ``evals.jsonl`` and ``samples.jsonl``; every step's metrics to ``metrics.jsonl`` and to the
   recipe's trackers (``rlft.tracking``: TensorBoard, W&B, MLflow, Trackio; rank 0 only);
4. checkpoint atomically every ``checkpoint_every`` steps, with the checkpoint's hash in the audit
   log and the privacy counts so far;
5. save the final model, write ``summary.json`` and close the audit trail.

Under torchrun (``trainers/parallel.py``) every rank runs this same loop; rank 0 alone writes the
run folder's files, and the decisions (evaluate the base? which checkpoint?) are rank 0's,
broadcast, so that no rank takes a different path.

Opening the run folder (a new run, or a resumed one whose recipe and data must not have changed)
is :class:`RunSession`'s job; the process that writes the folder holds its lock (``.lock``,
``rlft.common.folder_lock``) from before its first write until the session ends, so a second
process (a fresh start or a ``--resume``) is refused with the holder's pid and host; each kind of recipe opens its own (``trainers/setup.py`` for RL and
DPO recipes, the agent and reward-model recipes in their trainers).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from rlft.common.folder_lock import FolderLock
from rlft.common.hashing import folder_sha256
from rlft.common.run_folder import RunFolder, write_json_atomic
from rlft.errors import NonFiniteError
from rlft.responsible.audit_log import AuditLog, run_provenance
from rlft.tracking import Trackers
from rlft.trainers.checkpoint import (
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rlft.trainers.parallel import Ranks

OnStep = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Schedule:
    """How long a trainer runs and how often the harness evaluates and checkpoints."""

    steps: int
    eval_every: int
    checkpoint_every: int
    checkpoint_keep: int
    max_consecutive_nonfinite: int

    def due(self, step: int, every: int) -> bool:
        """Every ``every`` steps, and always after the last one."""
        return step % every == 0 or step == self.steps


@dataclass
class Evaluation:
    """A held-out evaluation: its metrics (``eval/...``) and a few sample completions."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


class Trainer(Protocol):
    """What the harness drives. A trainer builds its models and optimisers when constructed."""

    name: str
    """The algorithm's name (``summary.json``'s ``algorithm``)."""
    schedule: Schedule
    headline: str
    """The held-out metric the run is judged by (``eval/accuracy``, ``eval/pass_rate``, ...)."""
    nonfinite_hint: str
    """What to change when steps keep failing (named in the error that stops the run)."""

    def modules(self) -> torch.nn.Module:
        """Everything trainable, under stable names: what a checkpoint's weights hold."""
        ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def step(self, step: int) -> tuple[dict[str, Any], bool]:
        """Step ``step`` (0-based): (metrics, finite). A non-finite step changes no weight."""
        ...

    def evaluate(self, step: int) -> Evaluation: ...

    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state besides weights and optimisers (a KL coefficient, a generator)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def progress(self, metrics: dict[str, Any]) -> dict[str, str]:
        """What the progress bar shows after a step."""
        ...

    def save_final(self, run: RunFolder) -> Path:
        """Save the trained model (atomically); returns its folder."""
        ...

    def summary(self, base: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        """The trainer's own summary fields, given the base and the final held-out metrics."""
        ...


@dataclass
class RunSession:
    """An open run folder, its audit log and its privacy counter (anything with ``write(root)``)."""

    run: RunFolder
    audit: AuditLog
    resume: bool
    fingerprint: str
    privacy: Any = None
    started: float = field(default_factory=time.time)
    ranks: Ranks = field(default_factory=Ranks)
    trackers: Trackers = field(default_factory=Trackers)
    """TensorBoard, W&B, MLflow, Trackio (``log.report_to``): rank 0 of a main recipe's run only."""
    lock: FolderLock | None = None
    """The run folder's lock (``RunFolder.claim``), held by the process that writes the folder
    (rank 0) until the session ends: ``with session:`` releases it however the run ends."""

    @classmethod
    def start(cls, run: RunFolder, config: dict[str, Any], fingerprint: str, resume: bool,
              privacy: Any = None, lock: FolderLock | None = None, **fields: Any) -> RunSession:
        """Open the audit log of a run folder that is ready to be written, with its start record."""
        audit = AuditLog(run.root)  # hash-chained record of the run (rlft audit verify RUN)
        audit.append("run_resume" if resume else "run_start", config=config, recipe_fingerprint=fingerprint,
                     provenance=run_provenance(), **fields)
        return cls(run, audit, resume, fingerprint, privacy, lock=lock)

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lock is not None:
            self.lock.release()

    @classmethod
    def join(cls, run: RunFolder, fingerprint: str, resume: bool, ranks: Ranks) -> RunSession:
        """The session of a rank other than 0: the same run folder, which rank 0 alone writes."""
        return cls(run, _SilentAudit(), resume, fingerprint, ranks=ranks)  # type: ignore[arg-type]

    def write_privacy(self) -> None:
        if self.privacy is not None and self.ranks.is_main:
            self.privacy.write(self.run.root)


class _SilentAudit:
    """The audit log as ranks other than 0 see it: rank 0 records the run."""

    def append(self, event: str, **fields: Any) -> None:
        pass


def closes_trackers_on_error(run: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A run that stops with an error (a crash, Ctrl-C, too many non-finite steps) ends its
    tracker runs as failed; a resumed run continues them."""

    @functools.wraps(run)
    def wrapped(session: RunSession, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return run(session, *args, **kwargs)
        except BaseException:
            session.trackers.close(failed=True)
            raise

    return wrapped


@closes_trackers_on_error
def run_trainer(
    session: RunSession, trainer: Trainer, progress: bool = True, on_step: OnStep | None = None
) -> dict[str, Any]:
    """Run ``trainer`` in ``session`` to the end; returns the summary (also ``summary.json``)."""
    run, schedule, main = session.run, trainer.schedule, session.ranks.is_main
    progress = progress and main
    if main:  # `rlft runs` tells a running run from a crashed one by this pid
        write_json_atomic(run.running, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                        "headline": trainer.headline, "planned_steps": schedule.steps})
    base = base_evaluation(session, trainer)
    session.trackers.log(base, 0)  # the curves of held-out metrics start at the base model
    state, last_good = restore(session, trainer)
    if progress:
        tqdm.write(f"held-out {trainer.headline.removeprefix('eval/')} before training: "
                   f"{base.get(trainer.headline, float('nan')):.3f}")
    bar = tqdm(total=schedule.steps, initial=state.step, desc=trainer.name, disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    clock = RunClock(base.get(trainer.headline))
    try:
        last_good = run_steps(session, trainer, state, last_good, clock, bar, on_step)
    finally:
        close = getattr(trainer, "close", None)  # a trainer's threads (rollout.async's producer) end with the steps
        if close is not None:
            close()
    bar.close()
    return finish(session, trainer, state, base)


def run_steps(session: RunSession, trainer: Trainer, state: TrainerState, last_good: Path | None, clock: RunClock,
              bar: Any, on_step: OnStep | None) -> Path | None:
    """The steps of :func:`run_trainer`, from ``state.step`` to the schedule's end; returns the
    last good checkpoint."""
    run, schedule, main = session.run, trainer.schedule, session.ranks.is_main
    for step in range(state.step, schedule.steps):
        started = time.perf_counter()
        metrics, finite = step_or_stop(trainer, step, last_good)
        state.step = step + 1
        count_nonfinite(state, finite, trainer, last_good)
        metrics = {"step": state.step, **metrics, "train/skipped": 0 if finite else 1}
        clock.steps.append(time.perf_counter() - started)
        if schedule.due(state.step, schedule.eval_every):
            started = time.perf_counter()
            metrics.update(evaluate(run, trainer, state.step, log=main, trackers=session.trackers))
            clock.evals.append(time.perf_counter() - started)
            clock.held_out = metrics.get(trainer.headline, clock.held_out)
        if main:
            run.append_jsonl(run.metrics, metrics)
            session.trackers.log(metrics, state.step)  # skips steps a resumed run's trackers have
        if on_step and main:
            on_step(metrics)
        bar.set_postfix({**trainer.progress(metrics), **clock.shown(trainer.headline, state.step, schedule)})
        bar.update(1)
        if schedule.due(state.step, schedule.checkpoint_every):
            last_good = checkpoint(session, trainer, state)
    return last_good


@dataclass
class RunClock:
    """What the progress bar adds for every trainer: the last held-out headline metric and the
    time left, evaluations included (tqdm's own ETA sees only steps, and evaluations can cost
    more than several steps)."""

    held_out: float | None
    steps: list[float] = field(default_factory=list)  # seconds of each step of this session
    evals: list[float] = field(default_factory=list)  # seconds of each evaluation

    def shown(self, headline: str, done: int, schedule: Schedule) -> dict[str, str]:
        evals_left = sum(schedule.due(s, schedule.eval_every) for s in range(done + 1, schedule.steps + 1))
        left = remaining_seconds(self.steps, self.evals, schedule.steps - done, evals_left)
        shown = {"eta": format_seconds(left)}
        if self.held_out is not None:
            shown = {f"held-out {headline.removeprefix('eval/')}": f"{self.held_out:.3f}", **shown}
        return shown


def remaining_seconds(step_seconds: list[float], eval_seconds: list[float], steps_left: int, evals_left: int) -> float:
    """Time left: the mean step so far times the steps left, plus the mean evaluation times the
    evaluations left (an evaluation not yet timed is counted as one step)."""
    if not step_seconds:
        return float("nan")
    step = sum(step_seconds) / len(step_seconds)
    evaluation = sum(eval_seconds) / len(eval_seconds) if eval_seconds else step
    return steps_left * step + evals_left * evaluation


def format_seconds(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing timed yet
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def base_evaluation(session: RunSession, trainer: Trainer) -> dict[str, Any]:
    """The starting model's held-out metrics: evaluated once (``base_eval.json``) and recorded in
    the audit log with the base model's hash when the run starts."""
    run, ranks = session.run, session.ranks
    if ranks.broadcast(not run.base_eval.exists()):
        base = evaluate(run, trainer, 0, log=False)
        if ranks.is_main:
            sha = folder_sha256(run.base_model) if run.base_model.exists() else None
            session.audit.append("base_model", path="base_model", sha256=sha,
                                 base_accuracy=base.get("eval/accuracy"), base_metrics=base)
            write_json_atomic(run.base_eval, base)
    session.write_privacy()
    return ranks.broadcast(json.loads(run.base_eval.read_text()) if ranks.is_main else None)


def restore(session: RunSession, trainer: Trainer) -> tuple[TrainerState, Path | None]:
    """(state, last good checkpoint): the newest checkpoint on resume, else step 0. The logs are
    cut back to the restored step, so no step is logged twice."""
    run, state, ranks = session.run, TrainerState(recipe_fingerprint=session.fingerprint), session.ranks
    checkpoints = ranks.broadcast(list_checkpoints(run.checkpoints) if session.resume else [])
    if checkpoints:  # select_resume_checkpoint has already moved damaged ones aside
        state, own = load_checkpoint(checkpoints[-1], trainer.modules(), trainer.optimizers(), ranks)
        trainer.load_state_dict(own)
    if session.resume and ranks.is_main:  # a run stopped before its first checkpoint restarts at step 0
        for path in (run.metrics, run.evals, run.samples):
            run.truncate_jsonl(path, state.step)
    return state, checkpoints[-1] if checkpoints else None


def count_nonfinite(state: TrainerState, finite: bool, trainer: Trainer, last_good: Path | None) -> None:
    """Count a skipped step; stop the run when ``max_consecutive_nonfinite`` come in a row."""
    state.consecutive_nonfinite = 0 if finite else state.consecutive_nonfinite + 1
    state.skipped_steps += 0 if finite else 1
    if state.consecutive_nonfinite >= trainer.schedule.max_consecutive_nonfinite:
        raise NonFiniteError(
            f"Stopped at {trainer.name} step {state.step}: {state.consecutive_nonfinite} steps in a row had "
            f"a non-finite loss, gradient or reward. {kept(last_good)} {trainer.nonfinite_hint}"
        )


def step_or_stop(trainer: Trainer, step: int, last_good: Path | None) -> tuple[dict[str, Any], bool]:
    """``trainer.step(step)``; weights that overflow in it (the optimiser's ``NonFiniteError``: a
    learning rate far too large) stop the run with the last good checkpoint named."""
    try:
        return trainer.step(step)
    except NonFiniteError as exc:
        raise NonFiniteError(f"Stopped at {trainer.name} step {step + 1}: {exc} {kept(last_good)}") from None


def kept(last_good: Path | None) -> str:
    return f"The last good checkpoint, {last_good}, is intact." if last_good else "No checkpoint was written."


def evaluate(run: RunFolder, trainer: Trainer, step: int, log: bool = True,
             trackers: Trackers | None = None) -> dict[str, float]:
    """Evaluate on the held-out data; with ``log``, append to evals.jsonl and samples.jsonl (and
    send the samples to the ``trackers``)."""
    result = trainer.evaluate(step)
    if log:
        run.append_jsonl(run.evals, {"step": step, **result.metrics})
        for sample in result.samples:
            run.append_jsonl(run.samples, {"step": step, **sample})
        if trackers:
            trackers.log_samples(result.samples, step)
    return result.metrics


def checkpoint(session: RunSession, trainer: Trainer, state: TrainerState) -> Path:
    """An atomic checkpoint, its hash in the audit log, and the privacy counts so far (a resumed
    run merges them)."""
    run = session.run
    saved = save_checkpoint(run.checkpoints, trainer.modules(), trainer.optimizers(), state,
                            trainer.schedule.checkpoint_keep, trainer.state_dict(), session.ranks)
    if session.ranks.is_main:
        session.audit.append("checkpoint", step=state.step, path=str(saved.relative_to(run.root)),
                             sha256=folder_sha256(saved))
    session.write_privacy()
    return saved


def finish(session: RunSession, trainer: Trainer, state: TrainerState, base: dict[str, Any]) -> dict[str, Any]:
    """Save the final model, write the summary and close the audit trail; returns the summary."""
    run, ranks = session.run, session.ranks
    evals = run.read_jsonl(run.evals) if ranks.is_main else []
    final = evals[-1] if evals else base
    model_dir = trainer.save_final(run)
    if not ranks.is_main:
        return ranks.broadcast(None)
    summary = {
        "run_dir": str(run.root),
        "algorithm": trainer.name,
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        **held_out_summary(base, final, trainer.headline),
        **trainer.summary(base, final),
        "seconds": round(time.time() - session.started, 1),
    }
    write_json_atomic(run.summary, summary)
    session.write_privacy()
    session.audit.append("final_model", path=Path(os.path.relpath(model_dir, run.root)).as_posix(),
                         sha256=folder_sha256(model_dir))
    session.audit.append("run_end", summary=summary)
    session.trackers.close()
    run.running.unlink(missing_ok=True)
    return ranks.broadcast(summary)


def held_out_summary(base: dict[str, Any], final: dict[str, Any], headline: str) -> dict[str, Any]:
    """base_X and final_X of every held-out metric ``eval/X`` (accuracy as base_accuracy /
    final_accuracy), and which one is the headline."""
    out: dict[str, Any] = {"headline_metric": headline.removeprefix("eval/")}
    for key in final:
        if key.startswith("eval/") and key in base:
            name = key.removeprefix("eval/")
            out[f"base_{name}"], out[f"final_{name}"] = base[key], final[key]
    return out

"""``rlft runs [DIR]``: what each run folder under DIR is doing, read from its files and its lock
(nothing is written).

A run's status comes from which files it holds (docs/run-folder.md):

    running      a process holds the run folder's lock (``.lock``, rlft.common.folder_lock: the OS
                 says so, from the moment the run opens its folder to its end); for a run of an
                 older rlft without a lock file, running.json names a process alive on this host
                 (the harness writes it when training starts, the warm start's in ``warm_start/``,
                 and removes it at the end)
    finished     summary.json, and no running.json left behind
    resumable    the process died (the lock is free but running.json is left, or the run stopped
                 without finishing) and a checkpoint is kept: ``--resume`` continues from it
    crashed      it died before its first checkpoint: ``--resume`` restarts it at step 0
    not started  only what a run writes before its model is loaded (config.yaml, the audit log)
    unreadable   a file of the run is damaged (an edited config.yaml, a bad line in metrics.jsonl):
                 listed with the reason, so that it does not hide the other runs

Only the standard library and YAML are imported, so the listing is instant even for many runs.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rlft.common.folder_lock import LOCK_NAME, describe, lock_holder
from rlft.common.run_folder import BEFORE_START, RunFolder
from rlft.errors import RlftError
from rlft.report.perf import describe_perf, perf_figures

# When summary.json does not name the headline yet: the first of these that the run evaluates.
HEADLINE_ORDER = ("eval/accuracy", "eval/pass_rate", "eval/success", "eval/pairwise_accuracy")


@dataclass(frozen=True)
class RunInfo:
    """One run folder as ``rlft runs`` shows it."""

    name: str
    path: str
    kind: str  # "train" (rlft train/demo), "agent" (rlft agent) or "reward_model" (rlft rm train)
    algorithm: str
    status: str  # running | finished | resumable | crashed | not started (| unreadable: see detail)
    detail: str  # what the status rests on: the live pid, the checkpoint to resume from
    steps: int  # metrics.jsonl lines
    planned_steps: int | None  # None: known only once the run has read its data (dpo, ilql, rm)
    headline_metric: str | None  # "accuracy", "pass_rate", ...
    held_out: float | None  # the last held-out value of the headline (base_eval.json before any evals)
    held_out_step: int | None
    held_out_written: str | None  # ISO time the held-out value was written (the file's mtime)
    resume: str | None  # the command that continues the run (resumable and crashed runs)
    perf: dict[str, float] = field(default_factory=dict)  # speed and memory (rlft.report.perf)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def is_run_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def recipe_kind(root: Path) -> str:
    """Which command wrote the run: each recipe kind keeps its own copy of config.yaml."""
    if (root / "config.json").is_file():
        return "agent"
    if (root / "recipe.yaml").is_file():
        return "reward_model"
    return "train"


def read_recipe(root: Path) -> dict[str, Any]:
    import yaml

    try:
        recipe = yaml.safe_load((root / "config.yaml").read_text())
    except yaml.YAMLError as exc:
        raise RlftError(f"{root / 'config.yaml'} is not valid YAML ({exc}); was it edited?") from None
    return recipe if isinstance(recipe, dict) else {}


def algorithm_name(kind: str, recipe: dict[str, Any]) -> str:
    if kind == "reward_model":
        return "reward_model"
    if kind == "agent":
        return str(recipe.get("algorithm", "?"))
    return str((recipe.get("algorithm") or {}).get("name", "?"))


def planned_steps(kind: str, recipe: dict[str, Any]) -> int | None:
    """The steps the recipe asks for, as its trainer counts them, or None when they depend on the
    data (dpo's and the reward model's pairs, ilql's logged episodes). Mirrors the trainers'
    ``planned_steps`` (tests/report/test_runs.py checks that they agree) without importing torch."""
    from rlft.algorithms.presets import ALGORITHM_PRESETS

    if kind == "reward_model":
        return None
    if kind == "agent":
        if recipe.get("algorithm") == "ilql":  # passes over logged episodes: counted once they are read
            return None
        return max(1, int(recipe.get("episodes", 0)) // max(1, int(recipe.get("episodes_per_iteration", 1))))
    preset = ALGORITHM_PRESETS.get((recipe.get("algorithm") or {}).get("name", "grpo"))
    online = preset is None or preset["trainer"] == "rl"
    return int((recipe.get("train") or {}).get("steps", 0)) if online else None


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the "(comm)" that may hold spaces
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is the process that wrote running.json at ``started``. A pid reused by a
    process that began after that time is not it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    began = process_start_time(pid)
    return began is None or started is None or began <= started + 2.0  # /proc's clock is coarse


def read_running(root: Path) -> dict[str, Any] | None:
    """running.json's record, or None when there is none (a torn one counts as a record: a process
    was killed while writing it)."""
    try:
        record = json.loads(RunFolder(root).running.read_text())
    except FileNotFoundError:  # also when the run ends while we look
        return None
    except (json.JSONDecodeError, OSError):
        return {}
    return record if isinstance(record, dict) else {}


def liveness(record: dict[str, Any]) -> tuple[bool | None, str]:
    """(alive, a phrase naming the process) for a running.json record; alive is None when the
    process runs on another host, where its pid cannot be checked."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int):
        return False, "running.json is damaged"
    since = record.get("started")
    when = f" since {datetime.fromtimestamp(since).strftime('%Y-%m-%d %H:%M')}" if isinstance(since, (int, float)) else ""
    if host and host != socket.gethostname():
        return None, f"pid {pid} on host {host}{when} (cannot check it from here)"
    return pid_alive(pid, since if isinstance(since, (int, float)) else None), f"pid {pid}{when}"


def newest_checkpoint_step(root: Path) -> int | None:
    """The step of the newest complete checkpoint (one with trainer_state.json, as the harness's
    ``list_checkpoints`` counts them), or None."""
    folder = root / "checkpoints"
    steps = [int(p.name.split("_")[1]) for p in folder.glob("step_*")
             if p.name.split("_")[1].isdigit() and (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(steps, default=None)


def started(root: Path) -> bool:
    return any(not p.name.startswith(".") and p.name not in BEFORE_START for p in root.iterdir())


def run_status(root: Path) -> tuple[str, str]:
    """(status, detail) of the run in ``root`` (see the module docstring)."""
    warm = root / "warm_start"
    phases = [(root, ""), *([(warm, "warm start ")] if is_run_folder(warm) else [])]
    holder = lock_holder(root)
    if holder is not None:  # the OS says a process holds the run: it is running, whatever its files say
        return "running", held_detail(root, phases, holder)
    locked = (root / LOCK_NAME).exists()  # a run of an rlft that locks: the lock alone tells liveness
    died = ""
    for folder, phase in phases:
        record = read_running(folder)
        if record is None:
            continue
        alive, who = (False, liveness(record)[1]) if locked else liveness(record)
        if alive is not False:
            done, planned = len(RunFolder(folder).read_jsonl(RunFolder(folder).metrics)), ""
            if phase:
                planned = f"{phase}step {done}/{(read_recipe(root).get('warm_start') or {}).get('steps', '?')}, "
            return "running", f"{planned}{who}"
        died = f"{phase}process {who} is gone"
    if not died and (root / "summary.json").is_file():
        return "finished", ""
    for folder, phase in phases:
        if (step := newest_checkpoint_step(folder)) is not None and not (phase and (root / "base_model").exists()):
            return "resumable", ", ".join(filter(None, [died, f"{phase}checkpoint at step {step}"]))
    if died or started(root):
        return "crashed", ", ".join(filter(None, [died or "stopped", "no checkpoint: --resume restarts at step 0"]))
    return "not started", "only its recipe and audit log"


def held_detail(root: Path, phases: list[tuple[Path, str]], holder: dict[str, Any]) -> str:
    """'warm start step 3/10, pid 123 on host box since ...' for a run whose lock is held."""
    who = describe(holder)
    for folder, phase in reversed(phases):  # the warm start's running.json, while it trains
        if phase and read_running(folder) is not None and not (root / "base_model").exists():
            done = len(RunFolder(folder).read_jsonl(RunFolder(folder).metrics))
            return f"{phase}step {done}/{(read_recipe(root).get('warm_start') or {}).get('steps', '?')}, {who}"
    return who


def resume_command(kind: str, root: Path, recipe: dict[str, Any]) -> str | None:
    """The command that continues the run, or None when the folder was moved: the recipe must be
    the one the run was started with, run folder included, so the command uses the run's own
    recipe from the folder it was started in."""
    recipe_file, folder_key, command = {
        "train": ("config.yaml", "run_dir", "rlft train"),
        "agent": ("config.json", "run_dir", "rlft agent"),
        "reward_model": ("recipe.yaml", "output_dir", "rlft rm train"),
    }[kind]
    recorded = Path(str(recipe.get(folder_key) or root))
    line = f"{command} {recorded / recipe_file} --resume"
    if recorded.resolve() == root.resolve():
        return line
    # A relative run_dir names the run from the folder it was started in: go there first.
    parts, here = recorded.parts, root.resolve().parts
    if not recorded.is_absolute() and len(here) > len(parts) and here[-len(parts):] == parts:
        return f"cd {Path(*here[:-len(parts)])} && {line}"
    return None


def headline_key(summary: dict[str, Any], evaluated: dict[str, Any], running: dict[str, Any] | None) -> str | None:
    """The held-out metric the run is judged by: summary.json's, else running.json's, else the first
    of HEADLINE_ORDER (then any ``eval/`` metric) that the run has evaluated."""
    for named in (summary.get("headline_metric"), (running or {}).get("headline")):
        if isinstance(named, str) and named:
            return named if named.startswith("eval/") else f"eval/{named}"
    keys = [k for k in evaluated if k.startswith("eval/")]
    return next((k for k in HEADLINE_ORDER if k in keys), min(keys, default=None))


def last_held_out(root: Path, key: str | None) -> tuple[float | None, int | None, str | None]:
    """(value, step, when written) of the newest held-out evaluation of ``key``: the last line of
    evals.jsonl holding it, else base_eval.json (step 0)."""
    run = RunFolder(root)
    if key is None:
        return None, None, None
    for record, path in [*((e, run.evals) for e in reversed(run.read_jsonl(run.evals))),
                         (read_json(run.base_eval), run.base_eval)]:
        if isinstance(record.get(key), (int, float)):
            written = datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")
            return float(record[key]), int(record.get("step", 0)), written
    return None, None, None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def inspect_run(root: Path, name: str | None = None) -> RunInfo:
    """Everything ``rlft runs`` shows about the run folder ``root``."""
    if not is_run_folder(root):
        raise RlftError(f"{root} is not a run folder (no config.yaml). Give a folder that a training run wrote.")
    run, kind, recipe = RunFolder(root), recipe_kind(root), read_recipe(root)
    status, detail = run_status(root)
    summary, evals, running = read_json(run.summary), run.read_jsonl(run.evals), read_running(root) or {}
    key = headline_key(summary, {**read_json(run.base_eval), **(evals[-1] if evals else {})}, running)
    value, step, written = last_held_out(root, key)
    planned = running.get("planned_steps") if isinstance(running.get("planned_steps"), int) else None
    if planned is None:
        planned = summary.get("steps") if status == "finished" else planned_steps(kind, recipe)
    resume = resume_command(kind, root, recipe) if status in ("resumable", "crashed") else None
    if status in ("resumable", "crashed") and resume is None:
        recorded = recipe.get("output_dir" if kind == "reward_model" else "run_dir")
        detail += f"; moved from {recorded}: --resume continues it only there (run_dir is part of its recipe)"
    metrics = run.read_jsonl(run.metrics)
    return RunInfo(
        name=name or root.name, path=str(root), kind=kind, algorithm=algorithm_name(kind, recipe),
        status=status, detail=detail, steps=len(metrics), planned_steps=planned,
        headline_metric=key.removeprefix("eval/") if key else None, held_out=value, held_out_step=step,
        held_out_written=written,
        resume=resume, perf=perf_figures(metrics),
    )


def list_runs(folder: Path) -> list[RunInfo]:
    """The run folders directly under ``folder``, or ``folder`` alone when it is a run (its
    ``warm_start/`` is a part of it, shown in its status, not a run of its own)."""
    if not folder.exists():
        raise RlftError(f"{folder} does not exist. Give the folder that holds your runs (default: runs).")
    if not folder.is_dir():
        raise RlftError(f"{folder} is a file, not a folder of runs.")
    if is_run_folder(folder):
        return [inspect_run(folder)]
    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [inspect_or_unreadable(p) for p in children if is_run_folder(p)]


def inspect_or_unreadable(root: Path) -> RunInfo:
    """:func:`inspect_run`, or a line saying why the run cannot be read (an edited config.yaml, a
    damaged metrics.jsonl), so that one damaged run does not hide the others."""
    try:
        return inspect_run(root)
    except (RlftError, OSError) as exc:
        return RunInfo(name=root.name, path=str(root), kind="?", algorithm="?", status="unreadable",
                       detail=str(exc), steps=0, planned_steps=None, headline_metric=None, held_out=None,
                       held_out_step=None, held_out_written=None, resume=None)


def age(iso: str | None, now: float | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago' for an ISO time."""
    if iso is None:
        return ""
    seconds = max(0.0, (now or time.time()) - datetime.fromisoformat(iso).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def format_table(runs: list[RunInfo], now: float | None = None) -> str:
    """A plain-text table, one line per run, then how to continue each stopped run."""
    if not runs:
        return "No run folders here."
    header = ["NAME", "ALGORITHM", "STATUS", "STEPS", "HELD-OUT", "WRITTEN", "SPEED", "DETAIL"]
    rows = [header]
    for r in runs:
        held = f"{r.headline_metric} {r.held_out:.3f} @ step {r.held_out_step}" if r.held_out is not None else "-"
        steps = f"{r.steps}/{r.planned_steps if r.planned_steps is not None else '?'}"
        rows.append([r.name, r.algorithm, r.status, steps, held, age(r.held_out_written, now) or "-",
                     describe_perf(r.perf), r.detail])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"continue {r.name}: {r.resume}" for r in runs if r.resume]
    return "\n".join(lines)

"""`rlft runs` on real runs: one that finished, one SIGKILLed after a checkpoint (resumable, and
the command it prints does resume it), one SIGKILLed before any (crashed), and running.json files
naming this test's own process (running), a process that began after the run did (a reused pid:
not running), another host, and a warm start in progress."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlft.cli.main import main
from rlft.config import config_from_dict
from rlft.report.runs import (
    RunInfo,
    format_table,
    inspect_run,
    list_runs,
    planned_steps,
    resume_command,
)
from rlft.trainers.registry import train

TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
    "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.steps=6",
    "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4",
    "rollout.max_new_tokens=4", "eval.every=3", "train.torch_threads=1",
]
# Train in a child process that SIGKILLs itself right after step 3 is logged (and evaluated).
KILLED_AT_STEP_3 = """
import os, signal, sys
from rlft.config import config_from_dict
from rlft.trainers.registry import train

def stop(metrics):
    if metrics["step"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)

train(config_from_dict({}, sys.argv[1:]), progress=False, on_step=stop)
"""


def killed_run(folder: Path, checkpoint_every: int) -> int:
    """A run killed at step 3; returns the dead process's pid (from its running.json)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_3, *TINY, f"run_dir={folder}",
                           f"checkpoint.every={checkpoint_every}"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return json.loads((folder / "running.json").read_text())["pid"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    train(config_from_dict({}, [*TINY, f"run_dir={root / 'done'}", "checkpoint.every=2"]), progress=False)
    killed_run(root / "killed", checkpoint_every=2)
    killed_run(root / "early", checkpoint_every=10)  # its first checkpoint would have been at step 6
    return root


def by_name(folder: Path) -> dict[str, RunInfo]:
    return {r.name: r for r in list_runs(folder)}


def with_running(tmp_path: Path, source: Path, record: dict, where: str = "") -> Path:
    """A copy of run ``source`` whose running.json (in ``where``) is ``record``, without a lock
    file: a run of an rlft that did not lock its folder, whose liveness running.json alone tells."""
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    (copy / ".lock").unlink()
    (copy / where / "running.json").write_text(json.dumps(record))
    return copy


def test_finished_resumable_and_crashed(runs: Path):
    found = by_name(runs)
    assert sorted(found) == ["done", "early", "killed"]
    done, killed, early = found["done"], found["killed"], found["early"]
    assert (done.status, done.steps, done.planned_steps, done.algorithm) == ("finished", 6, 6, "grpo")
    assert (done.headline_metric, done.held_out_step) == ("accuracy", 6)
    final = json.loads((runs / "done" / "summary.json").read_text())["final_accuracy"]
    assert done.held_out == final and done.resume is None

    assert (killed.status, killed.steps, killed.planned_steps) == ("resumable", 3, 6)
    assert "is gone" in killed.detail and "checkpoint at step 2" in killed.detail
    assert (killed.held_out_step, killed.headline_metric) == (3, "accuracy")  # evaluated at step 3, then killed
    assert killed.resume == f"rlft train {runs / 'killed' / 'config.yaml'} --resume"

    assert (early.status, early.steps) == ("crashed", 3)
    assert "no checkpoint" in early.detail and early.resume == f"rlft train {runs / 'early' / 'config.yaml'} --resume"


def test_the_printed_command_resumes_the_run(runs: Path, tmp_path: Path):
    copy = tmp_path / "killed"
    shutil.copytree(runs / "killed", copy)
    recipe = (copy / "config.yaml").read_text().replace(str(runs / "killed"), str(copy))
    (copy / "config.yaml").write_text(recipe)  # the copy's own run_dir, as if it had been trained here
    info = inspect_run(copy)
    assert info.status == "resumable" and info.resume is not None
    command = shlex.split(info.resume)
    assert command[:2] == ["rlft", "train"]
    assert main([*command[1:], "--no-progress"]) == 0
    after = inspect_run(copy)
    assert (after.status, after.steps, after.detail) == ("finished", 6, "")
    assert not (copy / "running.json").exists()


def test_running_means_the_pid_is_alive_and_is_the_process_that_started(runs: Path, tmp_path: Path):
    here = socket.gethostname()
    alive = with_running(tmp_path, runs / "early", {"pid": os.getpid(), "host": here, "started": time.time()})
    info = inspect_run(alive)
    assert info.status == "running" and f"pid {os.getpid()} since" in info.detail and info.resume is None
    # The same pid, but this process began long after the run started: a reused pid, not the run.
    (alive / "running.json").write_text(json.dumps({"pid": os.getpid(), "host": here, "started": 1.0}))
    assert inspect_run(alive).status == "crashed"
    (alive / "running.json").write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "started": 1.0}))
    other = inspect_run(alive)
    assert other.status == "running" and "on host elsewhere" in other.detail and "cannot check" in other.detail


def test_a_run_in_its_warm_start_is_running(runs: Path, tmp_path: Path):
    copy = tmp_path / "warm"
    (copy / "warm_start").mkdir(parents=True)
    shutil.copy(runs / "done" / "config.yaml", copy / "config.yaml")
    shutil.copy(runs / "done" / "warm_start" / "config.yaml", copy / "warm_start" / "config.yaml")
    (copy / "warm_start" / "running.json").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    info = inspect_run(copy)
    assert info.status == "running" and info.detail.startswith("warm start step 0/10, pid ")
    assert (info.steps, info.held_out) == (0, None)
    (copy / "warm_start" / "running.json").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 1.0}))
    assert inspect_run(copy).status == "crashed"  # died in its warm start, before any checkpoint


def test_not_started_and_the_folder_itself(runs: Path, tmp_path: Path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("config.yaml", "audit.jsonl", "audit.head"):
        shutil.copy(runs / "done" / name, fresh / name)
    (tmp_path / "not_a_run").mkdir()
    damaged = tmp_path / "damaged"
    shutil.copytree(runs / "done", damaged)
    lines = (damaged / "metrics.jsonl").read_text().splitlines()
    (damaged / "metrics.jsonl").write_text("\n".join([lines[0], "{torn", *lines[1:]]) + "\n")
    found = list_runs(tmp_path)
    assert [(r.name, r.status) for r in found] == [("damaged", "unreadable"), ("fresh", "not started")]
    assert "metrics.jsonl: line 2 is not valid JSON" in found[0].detail
    assert [r.status for r in list_runs(runs / "done")] == ["finished"]  # DIR is itself a run


def test_cli_table_and_json(runs: Path, capsys):
    assert main(["runs", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ALGORITHM", "STATUS", "STEPS", "HELD-OUT", "WRITTEN", "SPEED", "DETAIL"]
    assert [line.split()[:4] for line in lines[1:4]] == [
        ["done", "grpo", "finished", "6/6"], ["early", "grpo", "crashed", "3/6"], ["killed", "grpo", "resumable", "3/6"]]
    assert lines[4:] == [f"continue early: rlft train {runs / 'early' / 'config.yaml'} --resume",
                         f"continue killed: rlft train {runs / 'killed' / 'config.yaml'} --resume"]
    assert main(["runs", str(runs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["status"], r["steps"]) for r in listed] == [
        ("done", "finished", 6), ("early", "crashed", 3), ("killed", "resumable", 3)]


def test_missing_folder_is_a_clear_error(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2  # the default, ./runs, does not exist here
    assert "runs does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["runs", "file"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_planned_steps_agree_with_the_trainers():
    from rlft.config.agent import agent_config_from_dict, agent_config_to_dict
    from rlft.trainers.registry import AGENT_TRAINERS

    for name, trainer in AGENT_TRAINERS.items():
        config = agent_config_from_dict({"algorithm": name, "episodes": 100, "episodes_per_iteration": 8})
        assert planned_steps("agent", agent_config_to_dict(config)) == trainer.planned_steps(config), name
    assert planned_steps("train", {"algorithm": {"name": "rloo"}, "train": {"steps": 7}}) == 7
    assert planned_steps("train", {"algorithm": {"name": "dpo"}, "train": {"steps": 7}}) is None  # pairs decide
    assert planned_steps("reward_model", {"epochs": 2}) is None


def test_table_layout():
    info = RunInfo(name="r", path="r", kind="train", algorithm="grpo", status="resumable", detail="d",
                   steps=3, planned_steps=None, headline_metric="pass_rate", held_out=0.25, held_out_step=3,
                   held_out_written="2026-01-01T00:00:00+00:00", resume="rlft train r/config.yaml --resume",
                   perf={"tokens_per_s": 412.4, "step_s": 0.314, "cuda_peak_mib": 3276.8})
    table = format_table([info], now=1767225600 + 300)  # five minutes later
    assert table.splitlines()[1].split() == ["r", "grpo", "resumable", "3/?", "pass_rate", "0.250", "@", "step",
                                             "3", "5", "min", "ago", "412", "tok/s,", "0.31", "s/step,", "GPU",
                                             "peak", "3.2", "GiB", "d"]
    assert table.splitlines()[2] == "continue r: rlft train r/config.yaml --resume"
    assert format_table([]) == "No run folders here."


def test_resume_command_from_where_the_run_was_started(tmp_path: Path, monkeypatch):
    """A relative run_dir resumes only from the folder the run was started in; a moved run cannot
    be resumed in place (run_dir is part of its recipe), and no command is offered."""
    run = tmp_path / "project" / "runs" / "a"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resume_command("train", run, {"run_dir": "runs/a"}) == \
        f"cd {tmp_path / 'project'} && rlft train runs/a/config.yaml --resume"
    monkeypatch.chdir(tmp_path / "project")
    assert resume_command("agent", run, {"run_dir": "runs/a"}) == "rlft agent runs/a/config.json --resume"
    assert resume_command("reward_model", run, {"output_dir": str(run)}) == \
        f"rlft rm train {run / 'recipe.yaml'} --resume"
    assert resume_command("train", run, {"run_dir": "/elsewhere/a"}) is None
    assert resume_command("train", run, {"run_dir": "other/b"}) is None


def test_perf_figures_are_medians_of_rates_and_maxima_of_memory():
    from rlft.report.perf import describe_perf, perf_figures

    metrics = [{"perf/tokens_per_s": 10.0, "perf/step_seconds": 9.0, "perf/cuda_peak_mib": 100.0},
               {"perf/tokens_per_s": 400.0, "perf/step_seconds": 0.5, "perf/cuda_peak_mib": 300.0},
               {"perf/tokens_per_s": 420.0, "perf/step_seconds": 0.4, "perf/cuda_peak_mib": 200.0}]
    figures = perf_figures(metrics)
    assert figures == {"tokens_per_s": 400.0, "step_s": 0.5, "cuda_peak_mib": 300.0}  # the first step's 9 s skews no median
    assert "cuda_reserved_mib" not in perf_figures(metrics[:1])  # a CPU run logs no GPU memory
    assert describe_perf(figures) == "400 tok/s, 0.50 s/step, GPU peak 0.3 GiB"
    assert describe_perf({}) == "-"

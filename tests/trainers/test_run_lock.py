"""One process per run folder (issue 23, item 5): while a process holds a run's lock, a second
`rlft train` (with or without --resume) is one clear error naming the holder's pid and host and
changes nothing; `rlft runs` shows the run as running; once the holder dies (SIGKILL included)
the resume works. The lock is held explicitly by a child process, so nothing races a sleep."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlft.cli.main import main
from rlft.common.folder_lock import LOCK_NAME, FolderInUseError, FolderLock, lock_holder
from rlft.common.run_folder import RunFolder
from rlft.config import config_from_dict
from rlft.errors import RlftError
from rlft.report.runs import inspect_run
from rlft.trainers.parallel import Ranks
from rlft.trainers.setup import join_run

# A child that opens the run folder as a training process does (RunFolder.claim), says so, and
# holds it until its stdin closes or it is killed.
HOLDER = """
import sys
from rlft.common.run_folder import RunFolder
lock = RunFolder(sys.argv[1]).claim(resume=True)
print("held", flush=True)
sys.stdin.read()
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's tiny finished run whose recipe names the copy as its run_dir."""
    copy = tmp_path / "runs" / "run"
    shutil.copytree(tiny_run, copy)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace(str(tiny_run), str(copy)))
    return copy


def held_by_child(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=ENV)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def rlft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=ENV)


def test_a_second_process_is_refused_while_the_run_is_held_and_resumes_after_the_holder_is_killed(run, capsys):
    holder = held_by_child(run)
    try:
        before = contents(run)
        resumed = rlft("train", str(run / "config.yaml"), "--resume", "--no-progress")
        assert resumed.returncode == 2, resumed.stderr[-2000:]
        said = resumed.stderr
        assert f"Run folder {run} is in use by another process: pid {holder.pid} on host {socket.gethostname()}" in said
        assert f"kill {holder.pid}" in said and "Traceback" not in said
        fresh = rlft("demo", "--no-progress", "--run-dir", str(run))  # a new run in the same folder: the same
        assert fresh.returncode == 2 and f"pid {holder.pid}" in fresh.stderr and "--resume" not in fresh.stderr
        assert contents(run) == before  # nothing written, nothing moved

        shown = inspect_run(run)
        assert shown.status == "running" and shown.resume is None
        assert f"pid {holder.pid} on host {socket.gethostname()}" in shown.detail
        assert main(["runs", str(run.parent)]) == 0
        assert "running" in capsys.readouterr().out
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the OS frees the lock
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert (run / LOCK_NAME).exists() and lock_holder(run) is None  # the file stays, the lock is gone
    assert inspect_run(run).status == "finished"

    assert main(["train", str(run / "config.yaml"), "--resume", "--no-progress"]) == 0
    assert lock_holder(run) is None  # released when the run ended, in this same process
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def test_the_lock_is_released_when_opening_the_run_fails(run):
    """A refused resume (a changed recipe) releases the lock it took: the next attempt in the same
    Python session is refused for the recipe again, not told that the folder is in use."""
    import yaml

    from rlft.trainers.registry import train

    recipe = yaml.safe_load((run / "config.yaml").read_text())
    recipe["train"]["learning_rate"] = 0.5
    for _ in range(2):
        with pytest.raises(RlftError, match="come from another recipe"):
            train(config_from_dict(recipe), resume=True, progress=False)
        assert lock_holder(run) is None


def test_the_helper_refuses_a_second_holder_names_it_and_ignores_a_dead_ones_text(tmp_path):
    folder = tmp_path / "f"
    assert lock_holder(folder) is None  # no folder, no lock file: nothing is created by looking
    assert not folder.exists()
    (folder).mkdir()
    (folder / LOCK_NAME).write_text("not json: left by a process that died long ago")
    lock = FolderLock.acquire(folder, "busy {folder}: {holder}")
    try:
        record = lock_holder(folder)
        assert record is not None and record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(FolderInUseError, match=f"busy {folder}: pid {os.getpid()} on host "):
            FolderLock.acquire(folder, "busy {folder}: {holder}")  # even from the same process
    finally:
        lock.release()
    assert lock_holder(folder) is None
    FolderLock.acquire(folder, "busy").release()


def test_a_forked_child_does_not_keep_the_lock_after_the_holder_lets_go(tmp_path):
    lock = FolderLock.acquire(tmp_path, "busy")
    (ready_r, ready_w), (go_r, go_w) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: says it is up (fork hooks done), then waits for the parent
        os.write(ready_w, b"x")
        os.read(go_r, 1)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        lock.release()
        assert lock_holder(tmp_path) is None  # the child is alive, and the lock is free
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)


def test_ranks_other_than_0_join_without_locking(run):
    """Under torchrun only rank 0 opens (and locks) the folder; the other ranks join it."""
    import yaml

    lock = RunFolder(run).claim(resume=True)
    try:
        config = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
        session, _task = join_run(config, resume=True, ranks=Ranks(rank=1, world=2, mode="ddp"))
        assert session.lock is None
    finally:
        lock.release()


def test_the_reward_model_and_agent_recipes_are_refused_alike(tmp_path):
    """`rlft rm train` and `rlft agent` open their folders through trainers/session.py."""
    from rlft.trainers.session import open_session

    folder = tmp_path / "rm"
    lock = FolderLock.acquire(folder, "busy")
    try:
        with pytest.raises(FolderInUseError, match=f"pid {os.getpid()}"):
            open_session(folder, {"epochs": 1}, resume=False, defaults={})
        assert [p.name for p in folder.iterdir()] == [LOCK_NAME]  # nothing else written
    finally:
        lock.release()
    with open_session(folder, {"epochs": 1}, resume=False, defaults={}) as session:
        assert lock_holder(folder)["pid"] == os.getpid() and session.lock is not None
    assert lock_holder(folder) is None

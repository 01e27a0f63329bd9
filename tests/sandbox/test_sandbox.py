"""The sandbox against hostile programs, with the real isolation (bubblewrap and the rlimits
fallback): each one ends in a status, the limits hold, and nothing is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rlft.sandbox import Program, Sandbox, SandboxConfig, SandboxError, SandboxWarning, totals
from rlft.sandbox.isolation import isolation_for

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"workers": 4, "timeout": 4.0, "cpu_seconds": 2, "memory_mb": 512, "max_output_bytes": 4096, "disk_mb": 8}


def _bubblewrap_works() -> str:
    try:
        isolation_for("bubblewrap", None)
    except SandboxError as exc:
        return str(exc)
    return ""


NO_BWRAP = _bubblewrap_works()
needs_bwrap = pytest.mark.skipif(bool(NO_BWRAP), reason=f"bubblewrap does not run here: {NO_BWRAP}")


@pytest.fixture(params=["bubblewrap", "rlimits"])
def sandbox(request: pytest.FixtureRequest):
    if request.param == "bubblewrap" and NO_BWRAP:
        pytest.skip(f"bubblewrap does not run here: {NO_BWRAP}")
    box = Sandbox(isolation=request.param, **LIMITS)
    before = _temp_dirs()
    yield box
    box.close()
    assert _sandbox_processes() == [], "a sandboxed process outlived its run"
    assert _temp_dirs() <= before, "a sandbox directory was left in the temp folder"


def _temp_dirs() -> set[str]:
    """The fallback's working directories of this process (others may run sandboxes meanwhile)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"rlft-sandbox-{os.getpid()}-*")}


def _sandbox_processes(owner: int | None = None, tries: int = 20) -> list[int]:
    """Processes the sandboxes of process ``owner`` (this one) started that still run, given a
    moment to go: their environment carries RLFT_SANDBOX_RUN=rlft-sandbox-<owner>-...; a zombie,
    dead and waiting to be collected, runs nothing."""
    mark = f"RLFT_SANDBOX_RUN=rlft-sandbox-{owner or os.getpid()}-".encode()
    for _ in range(tries):
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            except OSError:
                continue
            if any(item.startswith(mark) for item in environ):
                found.append(int(pid))
        if not found or tries == 1:
            return found
        time.sleep(0.1)
    return found


def run(box: Sandbox, code: str, **kw) -> object:
    return box.run(Program(code=textwrap.dedent(code), **kw))


def test_a_program_runs_and_its_output_comes_back(sandbox: Sandbox) -> None:
    r = run(sandbox, "import sys; print(sys.stdin.read().upper()); print('err', file=sys.stderr)", stdin="hello")
    assert (r.status, r.exit_code, r.stdout, r.stderr) == ("passed", 0, "HELLO\n", "err\n")
    r = run(sandbox, "raise SystemExit(3)")
    assert (r.status, r.exit_code) == ("failed", 3)


def test_results_keep_their_order_and_the_pool_is_bounded(sandbox: Sandbox) -> None:
    programs = [Program(code=f"import time; time.sleep(0.3); print({i})") for i in range(8)]
    started, before = time.monotonic(), totals()["runs"]
    results = sandbox.run_many(programs)
    assert totals()["runs"] - before == 8 and totals()["runs_per_s"] > 0  # what a benchmark reports
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    assert time.monotonic() - started >= 0.6  # 8 programs of 0.3 s on 4 workers: two rounds at least
    assert sandbox.stats()["runs"] == 8 and sandbox.stats()["status/passed"] == 8


def test_infinite_loop_is_a_timeout(sandbox: Sandbox) -> None:
    r = run(sandbox, "while True: pass")
    assert r.status == "timeout" and r.exit_code is None
    r = run(sandbox, "import time; time.sleep(60)")  # no CPU used: the wall clock stops it
    assert r.status == "timeout" and r.seconds < 10


def test_fork_bomb_is_stopped_and_leaves_no_process(sandbox: Sandbox) -> None:
    r = run(sandbox, """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(60)
    """)
    assert r.status == "timeout"
    r = run(sandbox, "import os\nwhile True: os.fork()")
    # fork fails at max_processes; every child's traceback may also fill stderr: the run ends either way
    assert r.status in ("failed", "timeout", "output_truncated")


def test_ten_gigabytes_is_a_memory_failure(sandbox: Sandbox) -> None:
    r = run(sandbox, "x = bytearray(10 * 1024**3)")
    assert r.status == "memory" and "MemoryError" in r.stderr


def test_a_gigabyte_to_stdout_is_cut(sandbox: Sandbox) -> None:
    r = run(sandbox, "import sys\nfor _ in range(1024): sys.stdout.write('x' * 1024 * 1024)")
    assert r.status == "output_truncated" and len(r.stdout) == LIMITS["max_output_bytes"]
    r = run(sandbox, "import sys\nfor _ in range(1024): sys.stderr.write('y' * 1024 * 1024)")
    assert r.status == "output_truncated" and len(r.stderr) == LIMITS["max_output_bytes"]


def test_a_gigabyte_to_a_file_stops_at_the_disk_limit(sandbox: Sandbox) -> None:
    r = run(sandbox, """
        import os
        with open("big", "wb") as f:
            for _ in range(1024):
                f.write(b"x" * 1024 * 1024)
    """)
    # the file size limit (EFBIG), or bubblewrap's tmpfs of disk_mb filling up first (ENOSPC)
    assert r.status == "failed" and ("File too large" in r.stderr or "No space left" in r.stderr)


def test_writing_outside_the_temp_dir_fails(sandbox: Sandbox) -> None:
    target = ROOT / "sandbox_escape.txt"
    r = run(sandbox, f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "failed" and not target.exists()
    r = run(sandbox, "open('/usr/escape.txt', 'w').write('x')")
    assert r.status == "failed" and not Path("/usr/escape.txt").exists()
    r = run(sandbox, "import os; open(os.path.join(os.getcwd(), 'mine.txt'), 'w').write('x'); print(open('mine.txt').read())")
    assert r.stdout == "x\n"  # its own temp dir is writable


@pytest.mark.skipif(os.geteuid() != 0, reason="/etc/shadow is unreadable to any non-root user anyway")
def test_etc_shadow_is_unreadable(sandbox: Sandbox) -> None:
    r = run(sandbox, "print(open('/etc/shadow').read())")
    assert r.status == "failed" and r.stdout == ""


@needs_bwrap
def test_home_and_project_are_invisible_under_bubblewrap() -> None:
    ssh = Path.home() / ".ssh"
    with Sandbox(isolation="bubblewrap", **LIMITS) as box:
        for path in (ssh, ROOT, ROOT / "README.md", Path.home()):
            r = run(box, f"import os; print(os.listdir({str(path)!r}) if os.path.isdir({str(path)!r}) else open({str(path)!r}).read())")
            assert r.status == "failed" and "No such file" in r.stderr, (path, r)


def test_no_network(sandbox: Sandbox) -> None:
    if not sandbox.isolation.network_isolated:
        pytest.skip("the fallback gets no network namespace on this machine")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        r = run(sandbox, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')")
        assert r.status == "failed" and "connected" not in r.stdout
        with pytest.raises(socket.timeout):
            server.accept()  # nothing reached the host's loopback
    finally:
        server.close()
    r = run(sandbox, "import socket; socket.create_connection(('1.1.1.1', 80), timeout=2); print('connected')")
    assert r.status == "failed" and "connected" not in r.stdout


def test_killing_the_parent_fails(sandbox: Sandbox) -> None:
    if os.geteuid() != 0 and sandbox.isolation.kind == "rlimits":
        pytest.skip("the fallback runs programs as rlft's own user, who may signal rlft")
    r = run(sandbox, f"import os, signal; os.kill({os.getpid()}, signal.SIGKILL); os.kill(os.getppid(), signal.SIGKILL); print('sent')")
    assert r.status in ("failed", "passed")  # under bubblewrap os.getppid() is its own init, which ignores it
    assert "sent" not in r.stdout or sandbox.isolation.kind == "bubblewrap"  # and we are still here


def test_a_background_process_does_not_survive(sandbox: Sandbox) -> None:
    r = run(sandbox, "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('left')")
    assert r.stdout == "left\n"  # the fixture checks that the sleep is gone


def test_a_crash_is_crashed(sandbox: Sandbox) -> None:
    r = run(sandbox, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert (r.status, r.signal) == ("crashed", signal.SIGSEGV)


def test_shell_command_with_files(sandbox: Sandbox) -> None:
    program = Program(command="python3 -B -m unittest -q test_add 2>&1 | tail -1", files={
        "add.py": "def add(a, b):\n    return a + b\n",
        "test_add.py": "import unittest\nfrom add import add\nclass T(unittest.TestCase):\n    def test(self):\n        self.assertEqual(add(2, 2), 4)\n",
    })
    r = sandbox.run(program)
    assert (r.status, r.stdout) == ("passed", "OK\n")


def test_closing_the_pool_mid_run_kills_everything(sandbox: Sandbox) -> None:
    results = []
    worker = threading.Thread(target=lambda: results.extend(sandbox.run_many(
        [Program(code="import time; time.sleep(60)") for _ in range(6)])))
    worker.start()
    time.sleep(1.5)
    started = time.monotonic()
    sandbox.close()
    worker.join(15)
    assert not worker.is_alive() and time.monotonic() - started < 10
    assert [r.status for r in results] == ["crashed"] * 6
    with pytest.raises(SandboxError, match="closed"):
        sandbox.run(Program(code="print(1)"))


def test_a_sandbox_process_killed_from_outside_is_crashed_and_the_pool_goes_on(sandbox: Sandbox) -> None:
    results = []
    worker = threading.Thread(target=lambda: results.append(run(sandbox, "import time; time.sleep(60)")))
    worker.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _children():
        time.sleep(0.05)
    time.sleep(1.0)  # running, past its start
    for pid in _children():  # bwrap, or the fallback's program: what an OOM killer or a user would kill
        os.kill(pid, signal.SIGKILL)
    worker.join(20)
    assert [r.status for r in results] == ["crashed"]
    assert run(sandbox, "print('still here')").stdout == "still here\n"


def _children() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(pid))
    return found


@needs_bwrap
def test_nothing_survives_a_killed_parent() -> None:
    script = textwrap.dedent("""
        from rlft.sandbox import Program, Sandbox
        box = Sandbox(isolation="bubblewrap", timeout=60, cpu_seconds=60)
        box.run(Program(code="import os, time\\nos.fork()\\nprint('up', flush=True)\\ntime.sleep(60)"))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_sandbox_processes(parent.pid, tries=1)) < 2:
        time.sleep(0.1)
    assert len(_sandbox_processes(parent.pid, tries=1)) >= 2, "the sandboxed program did not start"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _sandbox_processes(parent.pid) == []


def test_fallback_warns_once_and_refusal_when_bubblewrap_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    isolation_for.cache_clear()
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None if name == "bwrap" else "/usr/bin/" + name)
    try:
        with pytest.warns(SandboxWarning, match="without bubblewrap: bubblewrap is not installed"):
            assert isolation_for("auto", None).kind == "rlimits"
        with pytest.raises(SandboxError, match="sandbox.isolation is 'bubblewrap' but bubblewrap is not installed"):
            isolation_for("bubblewrap", None)
    finally:
        isolation_for.cache_clear()


def test_bad_settings_are_named() -> None:
    from rlft.errors import ConfigError

    with pytest.raises(ConfigError, match="sandbox.workers"):
        Sandbox(workers=0)
    with pytest.raises(ConfigError, match="sandbox.timout"):
        Sandbox(timout=3)
    with pytest.raises(ValueError, match="either code"):
        Program()
    assert SandboxConfig().workers == 4


def test_the_docs_list_every_setting_with_its_default() -> None:
    import dataclasses

    doc = (ROOT / "docs" / "sandbox.md").read_text()
    for f in dataclasses.fields(SandboxConfig):
        default = "empty" if f.default is None else f"`{f.default}`" if isinstance(f.default, str) else f"{f.default:g}"
        assert f"| `{f.name}` | {default} |" in doc, f.name


def test_a_program_that_cannot_start_is_crashed(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_more_processes(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    assert sandbox.isolation  # probed (with the real Popen) before processes run out
    monkeypatch.setattr("subprocess.Popen", no_more_processes)
    r = run(sandbox, "print(1)")
    assert r.status == "crashed" and "could not start the program: BlockingIOError" in r.stderr
    monkeypatch.undo()
    assert run(sandbox, "print(1)").stdout == "1\n"

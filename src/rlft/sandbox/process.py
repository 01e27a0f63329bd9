"""One sandboxed program: start it, feed its stdin, keep a bounded part of its output, stop it at
its deadline, leave nothing behind, and say how it ended.

A result's ``status`` is one of

  passed            exited with status 0
  failed            exited with another status (an exception, a failed assert, a wrong answer)
  timeout           ran past ``timeout`` (wall clock) or ``cpu_seconds`` (SIGXCPU)
  memory            an allocation failed (MemoryError, bad_alloc: the ``memory_mb`` limit)
  crashed           killed by a signal, or the sandbox itself failed or was closed
  output_truncated  wrote more than ``max_output_bytes`` to stdout or stderr and was stopped
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlft.sandbox.config import SandboxConfig
from rlft.sandbox.isolation import (
    SEARCH_PATH,
    WORKDIR,
    Isolation,
    bubblewrap_args,
    launcher_command,
)

Status = Literal["passed", "failed", "timeout", "memory", "crashed", "output_truncated"]
STATUSES: tuple[Status, ...] = ("passed", "failed", "timeout", "memory", "crashed", "output_truncated")
MAIN = "main.py"  # the file a Python program is written to
TEMP_PREFIX = "rlft-sandbox-"  # fallback working directories: rlft-sandbox-<pid of rlft>-<random>
_MEMORY = re.compile(r"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory", re.IGNORECASE)
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Program:
    """A program to run: Python ``code`` (written to ``main.py`` and run), or a shell ``command``
    line (``/bin/sh -c``, e.g. a test runner), with extra ``files`` in its working directory and
    text on its ``stdin``."""

    code: str | None = None
    command: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    stdin: str = ""

    def __post_init__(self) -> None:
        if (self.code is None) == (self.command is None):
            raise ValueError("A Program has either code (Python) or a command (a shell command line), not both.")
        for name in self.files:
            if not _FILE_NAME.fullmatch(name) or name == MAIN and self.code is not None:
                raise ValueError(f"Program file name {name!r}: use a plain name (letters, digits, _ . -), not main.py.")


@dataclass(frozen=True)
class SandboxResult:
    """How one program ended (see the module docstring for ``status``)."""

    status: Status
    exit_code: int | None  # None when a signal ended it (ours included)
    signal: int | None
    stdout: str  # at most max_output_bytes of it
    stderr: str
    seconds: float  # wall clock

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(
    program: Program, config: SandboxConfig, isolation: Isolation,
    track: Callable[[subprocess.Popen[bytes] | None], None] = lambda p: None,
) -> SandboxResult:
    """Run ``program`` to its end or its limits; ``track(proc)`` is called once it started and
    ``track(None)`` when it is gone (the pool uses it to stop running programs when closed)."""
    files = {**program.files, **({MAIN: program.code} if program.code is not None else {})}
    if program.code is not None:
        command = ["--python", MAIN]  # run by the launcher's interpreter (rlft/sandbox/launcher.py)
    else:
        command = ["/bin/sh", "-c", program.command or ""]
    # bubblewrap itself runs as the sandbox's user (it needs no privilege); the fallback's launcher
    # drops to that user itself, after making its network namespace (which needs root).
    uid = isolation.uid if isolation.kind == "bubblewrap" else None
    started = time.monotonic()
    try:
        with _prepared(isolation, config, files, command) as launch:
            proc = subprocess.Popen(
                launch.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=launch.pass_fds, cwd=launch.cwd, env=launch.env, start_new_session=True,
                user=uid, group=uid, extra_groups=[] if uid is not None else None,
            )
            launch.started()
            track(proc)
            try:
                out, err, timed_out, truncated = _communicate(
                    proc, program.stdin.encode(), started + config.timeout, config.max_output_bytes
                )
            finally:
                _stop(proc, launch)
                track(None)
    except OSError as exc:  # no process or descriptor left (another program's fork bomb?), a full disk
        message = f"The sandbox could not start the program: {type(exc).__name__}: {exc}"
        return SandboxResult("crashed", None, None, "", message, time.monotonic() - started)
    seconds = time.monotonic() - started
    return _result(proc.returncode, isolation, out, err, seconds, timed_out, truncated)


@dataclass
class _Launch:
    """How one run starts: bwrap's or the launcher's argv, the descriptors it inherits, its
    directory and environment; ``info`` reads bwrap's ``--info-fd`` (the pid of the sandbox's
    init), ``run_token`` marks the fallback's processes in their environment (bubblewrap's carry
    a mark too, ``RLFT_SANDBOX_RUN=rlft-sandbox-<rlft's pid>-...``, which nothing needs but
    which tells an operator whose they are)."""

    args: list[str]
    pass_fds: list[int]
    cwd: str
    env: dict[str, str]
    info: int | None = None
    info_write: int | None = None
    run_token: str | None = None

    def started(self) -> None:
        if self.info_write is not None:  # bwrap holds its own copy; ours would keep the pipe open
            os.close(self.info_write)
            self.info_write = None

    def close(self) -> None:
        self.started()
        if self.info is not None:
            os.close(self.info)
            self.info = None


def _limits(config: SandboxConfig) -> dict[str, int]:
    return {
        "cpu": config.cpu_seconds, "mem": config.memory_mb << 20, "nproc": config.max_processes,
        "nofile": config.max_open_files, "fsize": config.disk_mb << 20,
    }


@contextlib.contextmanager
def _prepared(isolation: Isolation, config: SandboxConfig, files: dict[str, str], command: list[str]) -> Iterator[_Launch]:
    """The launch of one run; whatever it made is gone when the block ends.

    bubblewrap: each file reaches the sandbox's tmpfs through an unnamed temporary file (``--file
    FD``), so nothing with a name is written to the host's disk. Fallback: a fresh directory,
    owned by the sandbox's user, removed afterwards."""
    if isolation.kind == "bubblewrap":
        assert isolation.bwrap is not None
        with contextlib.ExitStack() as stack:
            file_args, fds = [], []
            for name, text in files.items():
                handle = stack.enter_context(tempfile.TemporaryFile())
                handle.write(text.encode())
                handle.flush()
                handle.seek(0)
                fds.append(handle.fileno())
                file_args += ["--file", str(handle.fileno()), f"{WORKDIR}/{name}"]
            info, info_write = os.pipe()
            mark = ["--setenv", "RLFT_SANDBOX_RUN", f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"]
            launch = _Launch(
                [*bubblewrap_args(isolation.bwrap, isolation.python, config.disk_mb << 20), *mark, "--info-fd",
                 str(info_write), *file_args, *launcher_command(isolation.python, _limits(config), command)],
                [*fds, info_write], "/", {"PATH": SEARCH_PATH}, info, info_write,
            )
            stack.callback(launch.close)
            yield launch
        return
    workdir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    try:
        for name, text in files.items():
            Path(workdir, name).write_text(text)
        options = {**_limits(config), "unshare": 1, "parent": os.getpid()}
        if isolation.uid is not None:
            options["uid"] = isolation.uid
            for path in [workdir, *(os.path.join(workdir, n) for n in files)]:
                os.chown(path, isolation.uid, isolation.uid)
        token = os.path.basename(workdir)
        env = {"PATH": SEARCH_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "RLFT_SANDBOX_RUN": token}
        yield _Launch(launcher_command(isolation.python, options, command), [], workdir, env, run_token=token)
    finally:
        remove_tree(workdir)


def _communicate(
    proc: subprocess.Popen[bytes], stdin: bytes, deadline: float, max_bytes: int
) -> tuple[bytes, bytes, bool, bool]:
    """(stdout, stderr, timed out, truncated): feed ``stdin`` and read both outputs until the
    program closes them, passes ``deadline`` or writes more than ``max_bytes`` to either."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    selector = selectors.DefaultSelector()
    for fd in out:
        selector.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin)
    stdin_fd = proc.stdin.fileno()
    if pending:
        os.set_blocking(stdin_fd, False)
        selector.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    open_outputs = 2
    try:
        while open_outputs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(out[proc.stdout.fileno()]), bytes(out[proc.stderr.fileno()]), True, False
            for key, _ in selector.select(remaining):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]):]
                    except (BrokenPipeError, BlockingIOError) as exc:
                        pending = pending if isinstance(exc, BlockingIOError) else pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    open_outputs -= 1
                    continue
                out[fd] += chunk
                if len(out[fd]) > max_bytes:
                    return (bytes(out[proc.stdout.fileno()][:max_bytes]), bytes(out[proc.stderr.fileno()][:max_bytes]),
                            False, True)
        try:
            proc.wait(max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            return bytes(out[proc.stdout.fileno()]), bytes(out[proc.stderr.fileno()]), True, False
        return bytes(out[proc.stdout.fileno()]), bytes(out[proc.stderr.fileno()]), False, False
    finally:
        selector.close()


def _stop(proc: subprocess.Popen[bytes], launch: _Launch) -> None:
    """Kill the program and everything it started, and reap it, so that nothing of it runs once
    this returns. Under bubblewrap the sandbox's init (bwrap's child, PID 1 of the program's
    namespace) is what counts: when it dies the kernel kills every process of the namespace
    before it is gone, so this kills it if the program is still running and waits for it either
    way. The fallback kills the process group, then any process that still carries this run's
    mark in its environment (one that left the group)."""
    init = _sandbox_init(launch.info) if launch.info is not None else None
    try:
        if init is not None:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(init, signal.SIGKILL)
            with selectors.DefaultSelector() as waiting:
                waiting.register(init, selectors.EVENT_READ)
                waiting.select(5.0)  # readable once the init (and so the whole namespace) is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        proc.wait()
    finally:
        if init is not None:
            if os.getpid() == 1:  # rlft is a container's init: the orphaned sandbox init is ours to reap
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitid(os.P_PIDFD, init, os.WEXITED | os.WNOHANG)
            os.close(init)
    if launch.run_token:
        kill_marked(f"RLFT_SANDBOX_RUN={launch.run_token}".encode())


def _sandbox_init(info_fd: int) -> int | None:
    """A pidfd of bwrap's child (the init of the sandbox's PID namespace), from ``--info-fd``;
    None if bwrap did not get that far or it is gone already."""
    os.set_blocking(info_fd, False)
    try:
        found = re.search(rb'"child-pid"\s*:\s*(\d+)', os.read(info_fd, 4096))
    except OSError:
        return None
    if not found:
        return None
    pid = int(found.group(1))
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # gone already (or a kernel before 5.3)
        return None
    try:  # the pid is bwrap's still (checked after opening: the pidfd cannot move to another process)
        same = Path(f"/proc/{pid}/stat").read_text().startswith(f"{pid} (bwrap)")
    except OSError:
        same = False
    if not same:
        os.close(pidfd)
        return None
    return pidfd


def kill_marked(mark: bytes) -> int:
    """SIGKILL every process whose environment holds ``mark``; how many there were."""
    killed = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if mark in environ.split(b"\0"):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
    return killed


def remove_stale_workdirs() -> list[str]:
    """Remove the fallback's working directories left by rlft processes that no longer exist (a
    SIGKILLed run cannot remove its own); the directories removed."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        owner = path.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            remove_tree(str(path))
            removed.append(str(path))
    return removed


def remove_tree(path: str) -> None:
    """Remove ``path`` even where a program took its own permissions away (chmod 000)."""

    def retry(function: Callable[..., object], name: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700)
            function(name)

    shutil.rmtree(path, onerror=retry)  # noqa: B028 (onexc is 3.12+)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def _result(
    returncode: int, isolation: Isolation, out: bytes, err: bytes, seconds: float, timed_out: bool, truncated: bool
) -> SandboxResult:
    # bwrap reports a program killed by signal N as exit status 128 + N.
    sig = -returncode if returncode < 0 else None
    if isolation.kind == "bubblewrap" and returncode > 128:
        sig = returncode - 128
    stderr = err.decode(errors="replace")
    status: Status
    if truncated:
        status = "output_truncated"
    elif timed_out or sig == signal.SIGXCPU:
        status = "timeout"
    elif returncode != 0 and _MEMORY.search(stderr[-2000:]):
        status = "memory"
    elif sig is not None:
        status = "crashed"
    else:
        status = "passed" if returncode == 0 else "failed"
    exit_code = None if (sig is not None or timed_out or truncated) else returncode
    return SandboxResult(status, exit_code, sig, out.decode(errors="replace"), stderr, seconds)

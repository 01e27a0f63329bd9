"""How programs are isolated on this machine: bubblewrap where it works, else rlimits.

Decided once per process and configuration (:func:`isolation_for`) by running a tiny program the
way every program will run. bubblewrap (``bwrap``) gives each program new user, network, PID, IPC
and UTS namespaces, a read-only view of the system directories only (no home folders, no project
folder, no /etc/shadow), a private size-limited tmpfs as its one writable directory, and kills
everything it started when it ends. Without it (not installed, or user namespaces refused by the
kernel, a container's seccomp profile or AppArmor) programs run in a plain subprocess with the
same rlimits, which bounds what they use but not what they can read, write or reach; a
:class:`SandboxWarning` says so once.

When rlft runs as root, programs never do: they run as ``nobody`` (uid 65534).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rlft.errors import RlftError

SANDBOX_UID = 65534  # nobody: the user programs run as when rlft runs as root
# System directories a program sees, read-only (a symlink is recreated as the same symlink).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few files of /etc that programs and the dynamic linker read; nothing else of /etc is visible.
ETC_FILES = (
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/localtime", "/etc/ld.so.cache",
    "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
)
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"
WORKDIR = "/tmp"  # inside bubblewrap: the private tmpfs, the working directory and $HOME
LAUNCHER = (Path(__file__).parent / "launcher.py").read_text()


class SandboxError(RlftError):
    """The sandbox cannot run as configured (no bubblewrap where it is required, no interpreter)."""


class SandboxWarning(UserWarning):
    """Programs run with weaker isolation than bubblewrap gives."""


@dataclass(frozen=True)
class Isolation:
    """What the sandbox does on this machine."""

    kind: Literal["bubblewrap", "rlimits"]
    python: str  # the interpreter programs run with
    bwrap: str | None  # the bubblewrap binary, when kind is bubblewrap
    uid: int | None  # the user programs run as, when rlft runs as root
    network_isolated: bool
    reason: str = ""  # why bubblewrap is not used


def launcher_command(python: str, options: dict[str, int], command: list[str]) -> list[str]:
    """``command`` started by the launcher (``rlft/sandbox/launcher.py``) with ``options``."""
    return [python, "-I", "-S", "-c", LAUNCHER, ",".join(f"{k}={v}" for k, v in options.items()), *command]


def sandbox_uid() -> int | None:
    """The user programs run as: ``nobody`` when rlft is root, else rlft's own user (None)."""
    return SANDBOX_UID if os.geteuid() == 0 else None


def reachable(path: str, uid: int | None) -> bool:
    """Whether ``uid`` (None: this process's user) can execute ``path``: every directory above it
    searchable and the file executable by others (for another user) or by us."""
    if uid is None:
        return os.access(path, os.X_OK)
    p = Path(path)
    try:
        dirs_ok = all(p_.stat().st_mode & stat.S_IXOTH for p_ in p.parents)
        return dirs_ok and bool(p.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return False


def choose_python(configured: str | None, uid: int | None) -> str:
    """The interpreter inside the sandbox (see ``SandboxConfig.python``)."""
    if configured:
        found = shutil.which(configured)
        if not found or not reachable(os.path.realpath(found), uid):
            who = "the sandbox's user (nobody)" if uid is not None else "this user"
            raise SandboxError(f"sandbox.python={configured!r} is not an interpreter {who} can run; give another path.")
        return os.path.realpath(found)
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    for candidate in (base, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and reachable(os.path.realpath(candidate), uid):
            return os.path.realpath(candidate)
    raise SandboxError(
        f"No Python interpreter the sandbox's user can run: {base} is not reachable by "
        f"{'nobody' if uid is not None else 'this user'} and there is no /usr/bin/python3. Set sandbox.python."
    )


def bubblewrap_args(bwrap: str, python: str, disk_bytes: int) -> list[str]:
    """bwrap's options, up to the program (``--file`` options and the command follow)."""
    args = [
        bwrap, "--unshare-user", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv",
        "--setenv", "PATH", SEARCH_PATH, "--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", WORKDIR,
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += [x for path in ETC_FILES if os.path.exists(path) for x in ("--ro-bind", path, path)]
    prefix = str(Path(python).parent.parent)
    if not any(prefix == d or prefix.startswith(d + "/") for d in SYSTEM_DIRS):
        args += ["--ro-bind", prefix, prefix]  # an interpreter outside /usr (pyenv, conda)
    return args + ["--proc", "/proc", "--dev", "/dev", "--size", str(disk_bytes), "--tmpfs", WORKDIR,
                   "--chdir", WORKDIR]


def _probe(args: list[str], uid: int | None) -> str:
    """'' if ``args`` runs and prints ok, else what went wrong."""
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=30, user=uid, group=uid,
            extra_groups=[] if uid is not None else None, env={"PATH": SEARCH_PATH}, cwd="/",
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0 or done.stdout.strip() != "ok":
        return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return ""


def _fallback_isolates_network(python: str) -> bool:
    """Whether the fallback's launcher gets a network namespace of its own here."""
    mine = os.readlink("/proc/self/ns/net")
    code = "import os; print(os.readlink('/proc/self/ns/net'))"
    args = launcher_command(python, {"unshare": 1, **({"uid": SANDBOX_UID} if os.geteuid() == 0 else {})},
                            [python, "-I", "-S", "-c", code])
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() not in ("", mine)


@functools.lru_cache(maxsize=8)
def isolation_for(mode: str, configured_python: str | None) -> Isolation:
    """How programs run here for ``sandbox.isolation`` = ``mode`` (probed once, then cached)."""
    uid = sandbox_uid()
    python = choose_python(configured_python, uid)
    reason = "isolation is 'rlimits'"
    if mode != "rlimits":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            reason = "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
        else:
            reason = _probe([*bubblewrap_args(bwrap, python, 1 << 20), python, "-I", "-S", "-c", "print('ok')"], uid)
            if not reason:
                return Isolation("bubblewrap", python, bwrap, uid, network_isolated=True)
            reason = f"bubblewrap does not run here ({reason}); user namespaces are probably not allowed"
        if mode == "bubblewrap":
            raise SandboxError(
                f"sandbox.isolation is 'bubblewrap' but {reason}. See docs/sandbox.md for the kernels and "
                "containers where it works, or set sandbox.isolation: auto to fall back to rlimits."
            )
    isolation = Isolation("rlimits", python, None, uid, _fallback_isolates_network(python), reason)
    if mode == "auto":
        warnings.warn(fallback_warning(isolation), SandboxWarning, stacklevel=3)
    return isolation


def fallback_warning(isolation: Isolation) -> str:
    network = ("gets a network namespace of its own (no network)" if isolation.network_isolated
               else "CAN reach the network")
    return (
        f"The sandbox runs programs without bubblewrap: {isolation.reason}. Each program still has its time, CPU, "
        f"memory, process, file and output limits, but it can read every file its user can read, write where its "
        f"user may write, and {network}; a program that starts a new session can outlive its run "
        "(docs/sandbox.md). Install bubblewrap, or set sandbox.isolation: rlimits to silence this warning."
    )

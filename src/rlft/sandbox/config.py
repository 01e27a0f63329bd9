"""The settings of a sandbox: how many programs run at once, and what each one may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlft.schema import setting


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed program, and the pool that runs many (docs/sandbox.md)."""

    workers: int = setting(4, "Programs run at once (a bounded pool); more wait their turn.", ge=1, le=256)
    timeout: float = setting(10.0, "Wall-clock seconds a program may run; then it is killed (status timeout).", gt=0)
    cpu_seconds: int = setting(10, "CPU seconds a program may use (RLIMIT_CPU; status timeout).", ge=1)
    memory_mb: int = setting(
        1024, "Address space of each process, in MiB (RLIMIT_AS); an allocation beyond fails (status memory).", ge=64
    )
    max_processes: int = setting(
        32, "Processes and threads a program may have at once (RLIMIT_NPROC): a fork bomb stops there.", ge=1
    )
    max_open_files: int = setting(64, "Open file descriptors per process (RLIMIT_NOFILE).", ge=16)
    max_output_bytes: int = setting(
        65536, "Bytes kept of stdout and of stderr each; a program that writes more is stopped "
        "(status output_truncated).", ge=1024,
    )
    disk_mb: int = setting(
        64, "Size of the private writable temp directory, and the largest file a program may write (RLIMIT_FSIZE), "
        "in MiB.", ge=1,
    )
    isolation: Literal["auto", "bubblewrap", "rlimits"] = setting(
        "auto",
        "auto: bubblewrap (no network, read-only system, own PID/IPC/user namespaces) where it works, else "
        "rlimits in a subprocess with a warning that isolation is weaker; bubblewrap: refuse to run without it; "
        "rlimits: never use bubblewrap.",
    )
    python: str | None = setting(
        None, "The Python interpreter inside the sandbox. Empty: the one rlft runs on (its base, without the "
        "virtual environment's packages), or /usr/bin/python3 where the sandbox's user cannot reach it.",
    )

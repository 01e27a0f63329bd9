"""The first code of every sandboxed program: set its limits, then ``exec`` the program.

This file is run as a script, not imported (its source is given to ``python -I -S -c``), so it
uses the standard library only and starts in a few milliseconds. Arguments::

    python -I -S -c SOURCE KEY=VALUE,KEY=VALUE,... PROGRAM ARGS...
    python -I -S -c SOURCE KEY=VALUE,KEY=VALUE,... --python FILE.py ARGS...

Keys (all integers): ``cpu`` seconds, ``mem`` bytes of address space, ``nproc`` processes,
``nofile`` descriptors, ``fsize`` bytes per file, and, for the fallback without bubblewrap,
``unshare`` (1: try a private network namespace), ``uid`` (drop to this user when root) and
``parent`` (the pid whose death kills the program). Inside bubblewrap only the limits are given:
the namespaces are bubblewrap's. The limits are set here, after any new user namespace exists,
because since Linux 5.14 RLIMIT_NPROC counts the processes of a user *in its namespace*: set
inside, it counts this program's processes only, not every process of the same user.

``--python FILE.py`` runs the file in the launcher's own interpreter once the limits are set,
as ``python FILE.py`` would (``__main__``, its folder first on ``sys.path``, no bytecode
written; no ``site``: the standard library only), saving an interpreter start-up per program.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare_network() -> None:
    """A network namespace of our own (only a loopback, down): as root directly, otherwise
    inside a new user namespace where the kernel allows one. Failure leaves the network as it is."""
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    _libc().unshare(flags)


def _drop_privileges(uid: int) -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _tasks_of(uid: int) -> int:
    """Processes and threads of ``uid`` now (RLIMIT_NPROC counts them all where no user
    namespace of our own separates this program from the user's other processes)."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


def main(argv: list[str]) -> None:
    """``argv``: [-c, KEY=VALUE,..., PROGRAM, ARGS...]."""
    opts = {k: int(v) for k, v in (item.split("=", 1) for item in argv[1].split(",") if item)}
    command = argv[2:]
    own_namespace = False
    if opts.get("unshare"):
        before = os.stat("/proc/self/ns/user").st_ino
        _unshare_network()
        own_namespace = os.geteuid() == 0 or os.stat("/proc/self/ns/user").st_ino != before
    if "uid" in opts:
        _drop_privileges(opts["uid"])
    if "parent" in opts:
        _libc().prctl(PR_SET_PDEATHSIG, 9)
        if os.getppid() != opts["parent"]:  # the parent died before the line above
            os._exit(137)
    nproc = opts.get("nproc")
    if nproc is not None and "unshare" in opts and not own_namespace:
        nproc += _tasks_of(os.getuid())
    for key, limit in (("cpu", resource.RLIMIT_CPU), ("mem", resource.RLIMIT_AS),
                       ("nofile", resource.RLIMIT_NOFILE), ("fsize", resource.RLIMIT_FSIZE)):
        if key in opts:
            # CPU: SIGXCPU at the soft limit, SIGKILL a second later for a program that ignores it.
            hard = opts[key] + 1 if key == "cpu" else opts[key]
            resource.setrlimit(limit, (opts[key], hard))
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.umask(0o077)
    if command[0] == "--python":  # a Python file: run it in this interpreter (one start-up, not two)
        import runpy

        sys.argv, sys.path[0], sys.dont_write_bytecode = command[1:], os.getcwd(), True
        runpy.run_path(command[1], run_name="__main__")
        return
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)

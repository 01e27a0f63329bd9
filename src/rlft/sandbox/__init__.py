"""A local sandbox for untrusted programs: model-written code, and the tests that score it.

:class:`Sandbox` runs Python programs and shell command lines, ``workers`` at a time, each with no
network, a read-only view of the system, a private writable temp directory and limits on wall
time, CPU time, memory, processes, open files and output (:class:`SandboxConfig`). bubblewrap
isolates them where it works; elsewhere rlimits in a subprocess do, with a warning that
isolation is weaker (``rlft.sandbox.isolation``). Each run ends in a :class:`SandboxResult`
(passed / failed / timeout / memory / crashed / output_truncated) and leaves no process and no
file behind. See docs/sandbox.md for what it protects against and what it does not.
"""

from rlft.sandbox.config import SandboxConfig
from rlft.sandbox.isolation import Isolation, SandboxError, SandboxWarning
from rlft.sandbox.pool import Sandbox, totals
from rlft.sandbox.process import STATUSES, Program, SandboxResult, Status

__all__ = [
    "STATUSES", "Isolation", "Program", "Sandbox", "SandboxConfig", "SandboxError", "SandboxResult",
    "SandboxWarning", "Status", "totals",
]

"""User-facing errors.

An :class:`RlftError` is a mistake the user can fix (a recipe typo, a missing folder, a malformed
data file). The CLI prints its message, without a traceback, and exits with status 2. Anything else
is a bug in rlft and keeps its traceback.
"""

from __future__ import annotations


class RlftError(Exception):
    """A problem with the user's input, with a message that names it and the fix."""


class ConfigError(RlftError):
    """A recipe that does not validate."""


class NonFiniteError(RlftError):
    """Training stopped because too many consecutive steps had a non-finite loss, gradient or reward."""

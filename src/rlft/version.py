"""The version of rlft (one place: ``rlft.__version__``, ``rlft --version``, the audit log)."""

__version__ = "0.1.0"

"""rlft: fine-tune language models with reinforcement learning.

``import rlft`` stays light: torch, transformers and the heavy backends load only in the modules
that use them. The ``register_*`` calls that extend rlft from a file of your own (a policy loss,
an advantage estimator, an environment, a reward, ...) are ``rlft.extend``'s (docs/extending.md).
"""

from typing import Any

from rlft.version import __version__

EXTEND = (
    "register_advantage_estimator", "register_algorithm", "register_env", "register_kl_estimator",
    "register_policy_loss", "register_reward", "register_task",
)  # fmt: skip

__all__ = ["__version__", "dataset_task", "train", *EXTEND]


def __getattr__(name: str) -> Any:
    """``rlft.register_policy_loss`` and the other ``rlft.extend`` calls, imported when first used."""
    if name in EXTEND:
        from rlft import extend

        return getattr(extend, name)
    raise AttributeError(f"module 'rlft' has no attribute {name!r}")


def train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see rlft.api.train
    """Train with a recipe, a Python reward and/or task; see :func:`rlft.api.train`."""
    from rlft.api import train as _train

    return _train(*args, **kwargs)


def dataset_task(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see rlft.api.dataset_task
    """A dataset task from rows in memory; see :func:`rlft.api.dataset_task`."""
    from rlft.api import dataset_task as _dataset_task

    return _dataset_task(*args, **kwargs)

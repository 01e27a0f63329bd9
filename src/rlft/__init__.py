"""rlft: fine-tune language models with reinforcement learning.

``import rlft`` stays light: torch, transformers and the heavy backends load only in the modules
that use them.
"""

from rlft.version import __version__

__all__ = ["__version__", "dataset_task", "train"]


def train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see rlft.api.train
    """Train with a recipe, a Python reward and/or task; see :func:`rlft.api.train`."""
    from rlft.api import train as _train

    return _train(*args, **kwargs)


def dataset_task(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see rlft.api.dataset_task
    """A dataset task from rows in memory; see :func:`rlft.api.dataset_task`."""
    from rlft.api import dataset_task as _dataset_task

    return _dataset_task(*args, **kwargs)

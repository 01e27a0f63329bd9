"""A second device on a CPU-only machine, for the placement tests.

:class:`OneDeviceMode` is a ``TorchFunctionMode`` that follows which tensors are "on the run's
device": the parameters and buffers it is given, anything made with an explicit ``device=`` or
moved with ``.to(device)``, and whatever an operation computes from such tensors. A tensor made
without saying where (``torch.zeros(n)``, ``torch.tensor(rewards)``) is "on the CPU", as it would
be in a GPU run. An operation that mixes the two is recorded, as CUDA would refuse it; the declared
exceptions are those CUDA accepts: 0-dim CPU tensors, and CPU index tensors in indexing.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

TAG = "_rlft_on_device"
INDEXING = {"__getitem__", "__setitem__"}


def tag(tensors: Any) -> None:
    for t in tree_flatten(tensors)[0]:
        if isinstance(t, torch.Tensor):
            setattr(t, TAG, True)


def tag_modules(*modules: torch.nn.Module | None) -> None:
    """Tag the parameters and buffers of ``modules``, and each gradient accumulated into them
    (autograd makes gradients in C++, out of the mode's sight; they live where their parameter does)."""
    for module in modules:
        if module is None:
            continue
        tag(list(module.parameters()) + list(module.buffers()))
        for p in module.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda p: tag(p.grad))


def on_device(t: torch.Tensor) -> bool:
    return bool(getattr(t, TAG, False))


class OneDeviceMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.violations: list[str] = []
        self.ops = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        name = getattr(func, "__name__", str(func))
        if name in ("cpu", "tolist", "item", "numpy", "__get__"):
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        here = [t for t in inputs if on_device(t)]
        elsewhere = [t for t in inputs if not on_device(t) and t.dim() > 0]
        if here and elsewhere and not self._index_only(name, args, elsewhere):
            where = "".join(traceback.format_stack(limit=8)[:-1])
            shapes = [tuple(t.shape) for t in elsewhere]
            self.violations.append(f"{name}: CPU tensors {shapes} with device tensors\n{where}")
        moved = name == "to" and any(isinstance(a, (torch.device, str, torch.Tensor)) for a in (*args[1:], *kwargs.values()))
        if here or kwargs.get("device") is not None or moved:
            tag(out)
        return out

    @staticmethod
    def _index_only(name: str, args: tuple, elsewhere: list[torch.Tensor]) -> bool:
        """CUDA indexes a device tensor with CPU indices: allowed when every CPU tensor is in the
        index, not the indexed tensor or the value written."""
        if name not in INDEXING or len(args) < 2:
            return False
        index = [t for t in tree_flatten(args[1])[0] if isinstance(t, torch.Tensor)]
        return all(any(t is i for i in index) for t in elsewhere)

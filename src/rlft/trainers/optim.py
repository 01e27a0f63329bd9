"""The optimiser every trainer uses."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW, with PyTorch's fused kernel when every parameter is a float tensor on one CPU or
    CUDA device.

    The fused kernel does the whole update in one pass over each tensor instead of about ten;
    at 100M parameters on a 2-core CPU that is 0.05 s per step instead of 0.25 s (TRL's default
    optimiser is the fused one too). The arithmetic is AdamW's, so results match the unfused
    optimiser to rounding.
    """
    params = list(params)
    devices = {p.device for p in params}
    fused = (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.is_floating_point() for p in params)
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)

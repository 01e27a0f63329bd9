"""Where a run's tensors live: one device for the whole run, resolved in one place.

``train.device`` (and ``--device`` of ``rlft serve`` / ``rlft online``) is ``auto``, ``cpu``,
``cuda`` or ``cuda:N``. :func:`resolve_device` turns it into a :class:`torch.device`; every
trainer calls it once and moves its model there before the reference, the critic, low-precision
copies, the rollout engine and the optimiser are built, so nothing is ever copied across devices
mid-run. Batches are built on the CPU (padding rows is many small writes) and moved once.

CPU index tensors are the one declared exception: a mini-batch order drawn from the step's CPU
generator indexes device tensors directly (PyTorch copies the indices; no result is on the CPU).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from rlft.errors import ConfigError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device_spec(spec: str, field: str = "train.device") -> None:
    """Refuse a device name rlft does not place runs on, naming the valid ones."""
    if not DEVICE_PATTERN.match(str(spec)):
        raise ConfigError(
            f"{field}={spec!r} is not a device rlft trains on. Choose {DEVICE_CHOICES} "
            "(auto: the GPU of this process when CUDA is visible, else the CPU)."
        )


def local_rank() -> int:
    """This process's GPU index under torchrun (``LOCAL_RANK``); 0 in one process."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(spec: str = "auto", field: str = "train.device") -> torch.device:
    """The device of ``spec``: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is visible, else the
    CPU; ``cuda`` is ``cuda:LOCAL_RANK``; ``cuda:N`` must exist. (``meta``, which no recipe
    accepts, builds models without memory: the placement tests use it.)"""
    if spec == "meta":
        return torch.device("meta")
    check_device_spec(spec, field)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{field}={spec!r}, but this process sees no CUDA device (torch {torch.__version__}, "
            f"torch.cuda.is_available() is False: a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES empty). "
            f"Use {field}: cpu (or auto), or install a CUDA build of torch (Makefile: TORCH_SPEC)."
        )
    index = local_rank() if spec in ("auto", "cuda") else int(spec.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"{field}={spec!r} asks for GPU {index}, but this process sees {count} "
            f"(cuda:0..cuda:{count - 1}). Use a device that exists, or run one process per GPU with torchrun."
        )
    return torch.device("cuda", index)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def move_model(model: Any, device: torch.device) -> Any:
    """``model`` on ``device`` (in place for an ``nn.Module``; returned for chaining)."""
    if model_device(model) != device:
        model.to(device)
    return model


def sampling_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """The generator sampling noise on ``device`` is drawn from.

    On the CPU the step's own generator (runs stay what they were). Elsewhere a generator on the
    device, seeded from one draw of the step's generator: a run is reproducible on the same device,
    and the step generator's state still moves on, so the rest of the step draws as before. A CPU
    run and a GPU run of the same seed sample different noise (docs/distributed.md)."""
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def set_deterministic(device: torch.device, enabled: bool) -> None:
    """``train.deterministic``: deterministic CUDA kernels (cuBLAS workspace, no benchmark
    autotuning); an operation without one is an error that names it. The CPU kernels rlft uses
    are deterministic already, so nothing changes there."""
    if not enabled or device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def cuda_memory_metrics(device: torch.device) -> dict[str, float]:
    """``perf/cuda_peak_mib`` (peak allocated since the last call) and ``perf/cuda_reserved_mib``
    on a CUDA device; nothing elsewhere. The peak counter is reset, so each step reports its own."""
    if device.type != "cuda":
        return {}
    mib = 2**20
    out = {
        "perf/cuda_peak_mib": torch.cuda.max_memory_allocated(device) / mib,
        "perf/cuda_reserved_mib": torch.cuda.memory_reserved(device) / mib,
    }
    torch.cuda.reset_peak_memory_stats(device)
    return out


def enable_gradient_checkpointing(model: Any) -> None:
    """``model.gradient_checkpointing``: recompute each layer's activations in the backward pass.
    Non-reentrant checkpointing, which works with inputs that need no gradient (a frozen LoRA base),
    with autocast and on any device."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def to_device(tensors: Any, device: torch.device) -> Any:
    """Tensors (alone, or in a tuple/list/dict) moved to ``device``; other values unchanged."""
    if isinstance(tensors, torch.Tensor):
        return tensors.to(device)
    if isinstance(tensors, dict):
        return {k: to_device(v, device) for k, v in tensors.items()}
    if isinstance(tensors, (list, tuple)):
        return type(tensors)(to_device(v, device) for v in tensors)
    return tensors

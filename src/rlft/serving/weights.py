"""The served model's weights under a ``peft`` LoRA wrapper: plain names in, wrapped names inside.

A host with per-user adapters wraps its base model once with :func:`rlft.models.lora.apply_lora`.
peft then replaces each targeted ``Linear`` by a LoRA layer that keeps the original weight at
``*.base_layer.weight`` and adds ``*.lora_A.default.weight`` / ``*.lora_B.default.weight``. The
online loop trains and hands over *plain* transformers state dicts (``model.state_dict()`` of an
unwrapped model), so every name is translated here, in one place.
"""

from __future__ import annotations

import torch

from rlft.errors import RlftError

_BASE_LAYER = ".base_layer"
_LORA_MARKERS = (".lora_", ".lora_magnitude_vector")


def plain_name(wrapped: str) -> str | None:
    """The transformers name of a wrapped model's tensor, or None for a LoRA tensor.

    ``model.layers.0.self_attn.q_proj.base_layer.weight`` -> ``model.layers.0.self_attn.q_proj.weight``.
    """
    if any(marker in wrapped for marker in _LORA_MARKERS):
        return None
    return wrapped.replace(_BASE_LAYER + ".", ".")


def served_tensors(base: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Plain name -> the live tensor (parameter or persistent buffer) of ``base``, the transformers
    model itself (inside a peft wrapper: ``wrapper.get_base_model()``). Tied weights appear under
    each of their names, as in ``model.state_dict()``."""
    out = {}
    for name, tensor in base.state_dict(keep_vars=True).items():
        plain = plain_name(name)
        if plain is not None:
            out[plain] = tensor
    return out


def check_state_dict(
    served: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], what: str
) -> None:
    """Raise an :class:`RlftError` naming the first problems when ``state_dict`` does not have
    exactly the served model's names and shapes, or holds a non-finite value."""
    missing = sorted(set(served) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(served))
    if missing or unexpected:
        raise RlftError(
            f"{what} does not fit the served model: missing {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}. Give model.state_dict() of "
            "the same architecture, unwrapped (merge a LoRA adapter first: rlft.models.lora.merged_model)."
        )
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != served[name].shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise RlftError(
                f"{what}: {name} has shape {got}, the served model's has {tuple(served[name].shape)}."
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RlftError(f"{what}: {name} holds NaN or inf; refusing to serve it.")


def copy_into(served: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor]) -> None:
    """Copy ``state_dict`` into the live tensors (cast to their dtype and device)."""
    with torch.no_grad():
        for name, tensor in state_dict.items():
            served[name].copy_(tensor)


def check_lora_state(
    expected: dict[str, torch.Size], lora_state: dict[str, torch.Tensor], user: str
) -> None:
    """Raise an :class:`RlftError` unless ``lora_state`` has exactly the LoRA names and shapes of
    the host's adapter slot (``get_peft_model_state_dict`` of a model wrapped with the same r)."""
    missing = sorted(set(expected) - set(lora_state))
    unexpected = sorted(set(lora_state) - set(expected))
    wrong = [n for n in expected if n in lora_state and lora_state[n].shape != expected[n]]
    if missing or unexpected or wrong:
        raise RlftError(
            f"The adapter for {user!r} does not fit the host's LoRA slot (missing {missing[:2]}, "
            f"unexpected {unexpected[:2]}, wrong shape {wrong[:2]}). Train it on the same base with "
            "rlft.models.lora.apply_lora(model, r=adapter_r) and pass get_peft_model_state_dict(model)."
        )
    for name, tensor in lora_state.items():
        if not bool(torch.isfinite(tensor).all()):
            raise RlftError(f"The adapter for {user!r}: {name} holds NaN or inf; refusing to serve it.")

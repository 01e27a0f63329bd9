"""The learner's weights as vLLM loads them: one tensor at a time, under the names of the plain
Hugging Face model, LoRA merged in, heads of the critic left out.

vLLM builds its own copy of the architecture from the model folder, and its ``load_weights``
takes ``(name, tensor)`` pairs named as in that folder's checkpoint (``model.layers.0.self_attn.
q_proj.weight``; vLLM fuses q/k/v and gate/up itself). :func:`named_weights_for_vllm` yields
exactly that from the live policy, lazily, so at most one pushed tensor (cast to vLLM's dtype) is
alive beside the learner's weights: no state dict is copied, pickled or gathered. ``load_weights``
copies each tensor into vLLM's parameter, so nothing is kept after the push.

A peft LoRA policy is pushed merged: for each adapted layer ``W + sum_a scale_a * B_a A_a``
(Hu et al., 2021, eq. 3; peft's ``get_delta_weight``, the very term ``merge_and_unload`` adds),
computed beside the layer, one layer at a time. The live model is never merged and unmerged (as
TRL does): ``(W + dW) - dW`` is not ``W`` in floating point, so that would nudge the frozen base
weights a little at every push, and it would need the learner's weights to be writable mid-step.
Merging a deep copy would be exact too, but doubles the model in memory. What cannot be merged
exactly (a quantized base, DoRA and other LoRA variants, LoRA biases, other peft methods) is
refused, with the reason, before vLLM is built (:func:`lora_merge_refusal`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from rlft.errors import RlftError
from rlft.models.lora import is_lora

PEFT_PREFIX = "base_model.model."
# Wrappers that add a component to parameter names but not to the checkpoint's: torch.compile,
# activation checkpointing, peft's modules_to_save copy.
WRAPPER_PARTS = ("_orig_mod.", "_checkpoint_wrapped_module.", "modules_to_save.default.")
# Heads of a critic or a scorer that may sit on a policy's module tree; vLLM's model has none.
NOT_PUSHED = frozenset({"v_head", "value_head", "score"})


@dataclass(frozen=True)
class PushStats:
    """One push: how many tensors, how many bytes (in the pushed dtype), how long it took."""

    tensors: int
    bytes: int
    seconds: float

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def vllm_name(name: str) -> str | None:
    """The checkpoint name of the policy parameter ``name``, or None when vLLM has no such
    weight (a LoRA factor, peft's copy of an original module, a value head).

    ``base_model.model.model.layers.0.mlp.up_proj.base_layer.weight`` ->
    ``model.layers.0.mlp.up_proj.weight``; ``...up_proj.lora_A.default.weight`` -> None.
    """
    name = name.removeprefix(PEFT_PREFIX)
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    parts = name.split(".")
    if any(p.startswith("lora_") or p == "original_module" or p in NOT_PUSHED for p in parts):
        return None
    return name.replace(".base_layer.", ".")


def _lora_layers(policy: torch.nn.Module) -> dict[str, Any]:
    """Module name -> peft LoRA layer, for the layers of ``policy`` that carry an adapter."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in policy.named_modules() if isinstance(m, LoraLayer)}


def _active_adapters(layer: Any) -> list[str]:
    """The adapters of ``layer`` that its forward adds and that are not merged into it yet."""
    own = set(layer.lora_A) | set(getattr(layer, "lora_embedding_A", {}))
    merged = set(getattr(layer, "merged_adapters", []))
    return [a for a in layer.active_adapters if a in own and a not in merged]


def lora_merge_refusal(policy: torch.nn.Module) -> str | None:
    """Why ``policy``'s LoRA adapter cannot be merged exactly into its base for vLLM, or None when
    it can (or when ``policy`` has no adapter)."""
    if not is_lora(policy):
        return None
    kinds = {str(getattr(c, "peft_type", "")).rsplit(".", 1)[-1] for c in policy.peft_config.values()}  # type: ignore[union-attr]
    if kinds - {"LORA"}:
        return f"the adapter is {', '.join(sorted(kinds))}, not LoRA, and only LoRA is merged before a push"
    base = policy.get_base_model()  # type: ignore[operator]
    if getattr(base, "is_quantized", False) or getattr(base, "quantization_config", None) is not None:
        return "the base model is quantized: a merged weight would be the dequantized base plus the update"
    for name, layer in _lora_layers(policy).items():
        weight = layer.get_base_layer().weight
        if not weight.is_floating_point():
            return f"{name}'s base weight is {weight.dtype} (quantized), so W + BA has no exact {weight.dtype} form"
        for adapter in _active_adapters(layer):
            if adapter in getattr(layer, "lora_variant", {}) or getattr(layer, "use_dora", {}).get(adapter):
                return f"{name} uses a LoRA variant (e.g. DoRA), whose merge is not W + scale * B A"
            if getattr(layer, "lora_bias", {}).get(adapter):
                return f"{name} has a LoRA bias (lora_bias=True); rlft merges weights, not biases"
    return None


def named_weights_for_vllm(
    policy: torch.nn.Module, dtype: torch.dtype, device: torch.device | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, tensor)`` for every weight vLLM loads, once each, lazily (a generator):
    the tensor is the parameter (LoRA merged in) cast to ``dtype`` on ``device`` (default: where
    the parameter lives), detached. Parameters shared by two names (tied input and output
    embeddings) come once, under the first name, as ``named_parameters`` lists them.

    Naive equivalent for a LoRA policy: ``copy.deepcopy(policy).merge_and_unload().state_dict()``
    without the tied duplicates and buffers, each tensor cast to ``dtype``.
    """
    reason = lora_merge_refusal(policy)
    if reason:
        raise RlftError(f"rollout.backend=vllm cannot take this LoRA policy's weights: {reason}. Use rollout.backend: hf.")
    layers = _lora_layers(policy) if is_lora(policy) else {}
    for name, param in policy.named_parameters():
        target = vllm_name(name)
        if target is None:
            continue
        owner, _, leaf = name.rpartition(".base_layer.")
        with torch.no_grad():
            tensor = param.detach()
            if owner in layers and leaf == "weight":  # W + sum_a scale_a * B_a A_a, this layer only
                layer = layers[owner]
                for adapter in _active_adapters(layer):
                    tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
            yield target, tensor.to(device=device or tensor.device, dtype=dtype)


def push_weights(
    load_weights: Callable[[Iterable[tuple[str, torch.Tensor]]], Any],
    policy: torch.nn.Module,
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> PushStats:
    """Stream ``policy``'s weights into ``load_weights`` (vLLM's ``model.load_weights``, which
    consumes an iterable of ``(name, tensor)``) in one call, tensor by tensor; count and time it."""
    started = time.perf_counter()
    count = {"tensors": 0, "bytes": 0}
    devices: set[torch.device] = set()

    def counted() -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in named_weights_for_vllm(policy, dtype, device):
            count["tensors"] += 1
            count["bytes"] += tensor.numel() * tensor.element_size()
            devices.add(tensor.device)
            yield name, tensor

    load_weights(counted())
    for where in devices:
        if where.type == "cuda":  # copies are asynchronous: time them to the end
            torch.cuda.synchronize(where)
    return PushStats(count["tensors"], count["bytes"], time.perf_counter() - started)


def check_all_loaded(expected: set[str], loaded: Any) -> None:
    """vLLM's model reports the parameters it loaded: each must have been (what vLLM itself
    checks when it loads a checkpoint), or vLLM would sample from stale or dropped weights."""
    if not isinstance(loaded, set):
        return  # an architecture whose load_weights reports nothing
    missing = sorted(expected - loaded)
    if missing:
        raise RlftError(
            f"The weight push left {len(missing)} of vLLM's parameters unloaded ({', '.join(missing[:3])}...): "
            "vLLM would sample from stale weights. This architecture's names do not map onto vLLM's; use "
            "rollout.backend: hf for it."
        )


def check_sampler_logprob_gap(gap: float, bound: float | None, step: int, top_p: float = 1.0) -> None:
    """Stop the run when vLLM's log-probs of the step's tokens are too far from the learner's.

    ``gap`` is ``rollout/sampler_logprob_gap`` (mean |vLLM - learner| log-prob per token, nats);
    ``bound`` is ``rollout.vllm.max_logprob_gap`` (None: no check). With ``top_p < 1`` vLLM's
    log-probs are renormalised over the nucleus while the learner's are not, which moves each by
    at most ``-ln(top_p)``: that much is added to the bound.
    """
    if bound is None or not math.isfinite(gap):
        return
    allowed = bound - math.log(top_p)
    if gap <= allowed:
        return
    raise RlftError(
        f"Step {step}: vLLM's log-probs of the sampled tokens differ from the learner's by {gap:.3f} nats per token "
        f"on average (rollout/sampler_logprob_gap), above rollout.vllm.max_logprob_gap={bound}"
        f"{f' + {-math.log(top_p):.3f} for top_p={top_p}' if top_p < 1 else ''}. vLLM is most likely sampling "
        "from other weights than the learner's: a weight push that did not land. TRL issue 5312 is this failure: "
        "with sleep mode on, the engine reloaded the base checkpoint from disk after every push, so each rollout "
        "came from the untrained model while training went on (gap 0.2-0.8 nats against 0.01-0.02 when healthy). "
        "Try rollout.vllm.sleep: false (or sleep_level: 1) to see whether sleep mode is the cause, and check that "
        "vLLM loads this architecture's weight names; if the gap is genuine precision noise (a large model in "
        "bfloat16, rollout.vllm.dtype: float16), raise max_logprob_gap, or set it to null to turn the check off."
    )

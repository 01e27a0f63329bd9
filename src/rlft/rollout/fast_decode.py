"""A fast decoder for Llama-family models: one-token steps over a preallocated KV cache.

:func:`rlft.rollout.sampling.sample` uses it only where it computes exactly what the model's own
forward computes (:func:`attends_to_every_position` and the module check in
:meth:`StaticKVDecoder.supports`); everywhere else the model's own forward decodes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

# Architectures whose decoder blocks :class:`StaticKVDecoder` runs directly (same module names,
# pre-norm blocks, rotary embeddings, grouped-query attention).
_FAST_DECODE_ARCHITECTURES = ("Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM")
# The modules the decoder calls, and nothing else: a model with any other (q/k norms, attention
# sinks, extra norms) computes something the decoder would skip.
_FAST_DECODE_MODULES = {
    "model": {"embed_tokens", "layers", "norm", "rotary_emb"},
    "layer": {"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"},
    "attention": {"q_proj", "k_proj", "v_proj", "o_proj"},
}


def attends_to_every_position(config: Any, length: int) -> bool:
    """Whether every attention layer of a model with ``config`` sees every earlier position of a
    sequence of ``length`` tokens, as plain ``softmax(q k^T * scaling) v`` with no capping.

    False for a sliding window (``sliding_window``, ``use_sliding_window``, or ``layer_types``
    with local layers) not longer than ``length``, for layer kinds other than full or sliding
    attention, and for logit soft-capping (Gemma 2). Mistral turns its window on by
    ``sliding_window`` alone; Qwen2 by ``use_sliding_window``; Gemma 2/3 by ``layer_types``.
    """
    layer_types = list(getattr(config, "layer_types", None) or [])
    if any(kind not in ("full_attention", "sliding_attention") for kind in layer_types):
        return False  # chunked, linear or other attention: not what the decoder computes
    window = getattr(config, "sliding_window", None)
    windowed = (
        "sliding_attention" in layer_types
        or bool(getattr(config, "use_sliding_window", False))
        or (window is not None and not layer_types and not hasattr(config, "use_sliding_window"))
    )
    # transformers' window lets a query see the `window` most recent keys, itself included.
    if windowed and (not isinstance(window, int) or window <= length):
        return False
    capped = any(getattr(config, f, None) for f in ("attn_logit_softcapping", "final_logit_softcapping"))
    return not capped


class StaticKVDecoder:
    """One-token decoding steps with a preallocated KV cache, for Llama-family models.

    The profile of the generic path (``model(...)`` with a ``DynamicCache``) showed that for small
    models most of a decoding step is not matrix multiplication: the cache grows by ``torch.cat``
    every step, a 4-D attention mask is rebuilt, and each call walks transformers' output
    machinery. Here the keys and values of the whole rollout are allocated once, each step writes
    one position, and attention reads a view of the filled part. The blocks' own modules (norms,
    projections, MLP, rotary embedding) do the maths, so the numbers are those of ``model``.
    """

    def __init__(self, model: PreTrainedModel, cache: Any, max_new_tokens: int) -> None:
        import sys

        self.model = model
        self.inner = model.model
        self.rotate = sys.modules[
            type(self.inner.layers[0].self_attn).__module__
        ].apply_rotary_pos_emb
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for layer in cache.layers:
            batch, heads, length, dim = layer.keys.shape  # (B, kv heads, P, head dim)
            k = layer.keys.new_zeros(batch, heads, length + max_new_tokens, dim)
            v = layer.values.new_zeros(batch, heads, length + max_new_tokens, dim)
            k[:, :, :length], v[:, :, :length] = layer.keys, layer.values
            self.keys.append(k)
            self.values.append(v)
        self.length = length

    @staticmethod
    def supports(model: torch.nn.Module, cache: Any, length: int) -> bool:
        """Whether the decoder computes exactly what ``model`` does for sequences of up to
        ``length`` tokens (prompt + completion): a listed architecture whose attention sees every
        position (:func:`attends_to_every_position`) and whose blocks hold only the modules the
        decoder calls. Anything else decodes through the model's own forward."""
        if type(model).__name__ not in _FAST_DECODE_ARCHITECTURES or model.training:
            return False
        inner = model.model

        def children(module: torch.nn.Module) -> set[str]:
            return {name for name, _ in module.named_children()}

        plain_blocks = children(inner) <= _FAST_DECODE_MODULES["model"] and all(
            children(layer) == _FAST_DECODE_MODULES["layer"]
            and children(layer.self_attn) == _FAST_DECODE_MODULES["attention"]
            and not list(layer.self_attn.named_parameters(recurse=False))  # e.g. attention sinks
            for layer in inner.layers
        )
        return (
            plain_blocks
            and attends_to_every_position(model.config, length)
            and hasattr(cache, "layers")
            and all(getattr(layer, "keys", None) is not None for layer in cache.layers)
            and len(cache.layers) == len(inner.layers)
        )

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (b',) of the batch."""
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]

    def step(
        self, token: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """Logits (b, V) after feeding ``token`` (b,) at ``position`` (b,); ``attention_mask``
        (b, >= length + 1) covers the prompt and every token fed so far, this one included."""
        batch, at = token.shape[0], self.length
        x = self.inner.embed_tokens(token[:, None])  # (b, 1, H)
        cos, sin = self.inner.rotary_emb(x, position[:, None])
        mask = attention_mask[:, None, None, : at + 1].bool()  # (b, 1, 1, L)
        for i, layer in enumerate(self.inner.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(batch, 1, -1, attn.head_dim).transpose(1, 2)  # (b, heads, 1, d)
            k = (
                attn.k_proj(h).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
            )  # (b, kv heads, 1, d)
            v = attn.v_proj(h).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
            q, k = self.rotate(q, k, cos, sin)
            self.keys[i][:, :, at] = k[:, :, 0]
            self.values[i][:, :, at] = v[:, :, 0]
            o = torch.nn.functional.scaled_dot_product_attention(
                q,
                self.keys[i][:, :, : at + 1],
                self.values[i][:, :, : at + 1],
                attn_mask=mask,
                scale=attn.scaling,
                enable_gqa=True,
            )  # (b, heads, 1, d)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(batch, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.length += 1
        return self.model.lm_head(self.inner.norm(x)[:, -1]).float()  # (b, V)

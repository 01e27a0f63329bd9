"""The shape of the tiny offline model, as a recipe section (kept apart from ``tiny.py`` so that
reading a recipe does not import torch and transformers)."""

from __future__ import annotations

from dataclasses import dataclass

from rlft.schema import setting


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the small Qwen2-architecture model rlft builds offline when ``model.path`` is empty."""

    hidden_size: int = setting(256, "Width of the residual stream.", ge=8)
    num_layers: int = setting(4, "Number of transformer blocks.", ge=1)
    num_heads: int = setting(4, "Attention heads.", ge=1)
    num_kv_heads: int = setting(2, "Key/value heads (grouped-query attention); must divide num_heads.", ge=1)
    intermediate_size: int = setting(768, "Hidden width of the MLP.", ge=8)
    vocab_size: int = setting(
        320, "Target vocabulary size of the byte-level BPE tokenizer trained on task text.", ge=260
    )
    context_length: int = setting(
        512, "Longest sequence (prompt + completion), in tokens: max_position_embeddings.", ge=16
    )

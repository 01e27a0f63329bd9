"""Serving a model over HTTP (OpenAI-compatible) with batched generation, hot weight swaps and
per-user LoRA adapters; feedback on its answers goes to the feedback store (docs/serving.md).

``rlft.serving.host`` and ``rlft.serving.chat`` need torch and transformers only;
``rlft.serving.app`` imports FastAPI.
"""

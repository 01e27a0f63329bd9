"""Batched sampling with a KV cache, and log-probabilities of sampled sequences.

Prompts are left-padded once; position ids are derived from the attention mask, so padding never
shifts a prompt's positions. Sampling is deterministic for a given ``torch.Generator``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.algorithms.logprobs import entropy_from_logits, selective_log_softmax
from rlft.types import Rollout


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token. (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every token outside the smallest set whose probability mass reaches ``top_p``.

    logits: (B, V). The most likely token is always kept.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask, (B, P) each."""
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    return enc.input_ids, enc.attention_mask


def _cache_forward(
    model: PreTrainedModel, cache: Any, **inputs: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """Forward with a KV cache; returns (last-position logits (B, V), updated cache).

    transformers 5.2x renamed ``past_key_values`` to ``cache``; both spellings are supported.
    """
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(**inputs, use_cache=True, **({name: cache} if cache is not None else {}))
    new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return out.logits[:, -1, :].float(), new_cache


@torch.no_grad()  # not inference_mode: the rollout's tensors are used later in autograd
def sample(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> Rollout:
    """Sample one completion per prompt row, stopping each row at EOS.

    prompt_ids, prompt_mask: (B, P), left-padded. Returns a :class:`Rollout` whose completions are
    at most ``max_new_tokens`` long; the loop ends as soon as every row has emitted EOS.
    """
    batch = prompt_ids.shape[0]
    attention_mask = prompt_mask.clone()
    positions = positions_from_mask(attention_mask)
    next_logits, cache = _cache_forward(
        model, None, input_ids=prompt_ids, attention_mask=attention_mask, position_ids=positions
    )  # (B, V)
    next_position = positions[:, -1] + 1  # (B,)
    finished = torch.zeros(batch, dtype=torch.bool)
    tokens, logps, masks = [], [], []
    for step in range(max_new_tokens):
        if greedy:
            token = next_logits.argmax(-1)
            logp = torch.log_softmax(next_logits, -1).gather(-1, token[:, None]).squeeze(-1)
        else:
            scaled = top_p_filter(next_logits / temperature, top_p)
            token = torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)
            logp = selective_log_softmax(scaled, token)
        alive = ~finished
        tokens.append(torch.where(alive, token, pad_token_id))
        logps.append(torch.where(alive, logp, 0.0))
        masks.append(alive.float())
        finished = finished | (token == eos_token_id)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, torch.ones(batch, 1, dtype=attention_mask.dtype)], 1)
        next_logits, cache = _cache_forward(
            model,
            cache,
            input_ids=tokens[-1][:, None],
            attention_mask=attention_mask,
            position_ids=next_position[:, None],
        )
        next_position = next_position + 1
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=torch.stack(tokens, 1),
        completion_mask=torch.stack(masks, 1),
        logprobs=torch.stack(logps, 1),
    )


def sequence_logprobs(
    model: PreTrainedModel,
    rollout: Rollout,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (B, T) of the rollout's completion tokens under ``model``, and the
    per-token entropy (B, T) when asked. See :func:`score_completions`."""
    logprobs, entropy, _ = score_completions(model, rollout, temperature, with_entropy)
    return logprobs, entropy


def score_completions(
    model: PreTrainedModel,
    rollout: Rollout,
    temperature: float = 1.0,
    with_entropy: bool = False,
    value_head: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(logprobs, entropy, values), each (B, T), from one forward pass over prompt + completion.

    Logits are divided by ``temperature`` so that they describe the distribution the tokens were
    sampled from. ``values`` are ``value_head`` applied to the last hidden state at the position
    that predicts each completion token, i.e. V(s_t) of the state before token t. Gradients flow
    unless the caller is in ``torch.no_grad``/``inference_mode``; entropy never carries gradients.
    """
    attention_mask = rollout.attention_mask
    prompt_len = rollout.prompt_ids.shape[1]
    out = model(
        input_ids=rollout.input_ids,
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask),
        use_cache=False,
        output_hidden_states=value_head is not None,
    )
    # The logit at position i predicts token i + 1.
    logits = out.logits[:, prompt_len - 1 : -1, :].float() / temperature  # (B, T, V)
    mask = rollout.completion_mask
    logprobs = selective_log_softmax(logits, rollout.completion_ids) * mask
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits) * mask
    values = None
    if value_head is not None:
        values = value_head(out.hidden_states[-1][:, prompt_len - 1 : -1, :]) * mask  # (B, T)
    return logprobs, entropy, values

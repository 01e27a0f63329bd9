"""Batched sampling with a KV cache, and log-probabilities of sampled sequences.

Prompts are left-padded once (:func:`rlft.models.tokens.encode_prompts`); position ids are derived
from the attention mask, so padding never shifts a prompt's positions. Sampling is deterministic for a given ``torch.Generator``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from rlft.algorithms.logprobs import entropy_from_logits, selective_log_softmax
from rlft.models.device import model_device, sampling_generator
from rlft.models.tokens import forward_accepts, positions_from_mask
from rlft.rollout.fast_decode import StaticKVDecoder as _StaticKVDecoder
from rlft.types import Rollout


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


def _cached_call(model: PreTrainedModel, cache: Any, **inputs: Any) -> tuple[Any, Any]:
    """``model(**inputs)`` reading and extending the KV cache ``cache`` (None: a new one);
    returns (the model's output, the updated cache).

    transformers 5.2x renamed ``past_key_values`` to ``cache``; both spellings are supported.
    """
    name = "cache" if forward_accepts(model, "cache") else "past_key_values"
    out = model(**inputs, use_cache=True, **({name: cache} if cache is not None else {}))
    return out, getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _cache_forward(
    model: PreTrainedModel, cache: Any, **inputs: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """Forward with a KV cache; returns (last-position logits (B, V), updated cache)."""
    out, new_cache = _cached_call(model, cache, **inputs)
    return out.logits[:, -1, :].float(), new_cache


def _sample_token(
    logits: torch.Tensor,
    noise: torch.Tensor | None,
    temperature: float,
    top_p: float,
    greedy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token (B,), logp (B,)) from next-token logits (B, V).

    Sampling uses the exponential-race form of the Gumbel-max trick: ``argmax(p_v / E_v)`` with
    ``E_v ~ Exp(1)`` is distributed as ``Categorical(p)``; it is how ``torch.multinomial(p, 1)``
    samples, so with the same generator the tokens are the same as ``multinomial``'s.
    The noise is drawn for every row of the *original* batch at every step, so a row's sample
    never depends on which other rows are still running (rows are dropped when they finish).
    """
    if greedy:
        token = logits.argmax(-1)
        return token, selective_log_softmax(logits, token)
    scaled = top_p_filter(logits / temperature, top_p)
    assert noise is not None
    token = (scaled.softmax(-1) / noise).argmax(-1)  # what torch.multinomial(probs, 1) computes
    return token, selective_log_softmax(scaled, token)


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
    compact_below: float = 0.75,
    noise_rows: tuple[int, int] | None = None,
    fast_decode: bool = True,
) -> Rollout:
    """Sample one completion per prompt row, stopping each row at EOS.

    prompt_ids, prompt_mask: (B, P), left-padded. Returns a :class:`Rollout` whose completions are
    at most ``max_new_tokens`` long; the loop ends as soon as every row has emitted EOS.

    Finished rows stop costing compute: once fewer than ``compact_below`` of the rows still in the
    batch are running, the finished ones are dropped from the batch and from the KV cache
    (``compact_below=0`` never drops). The samples do not depend on this: see :func:`_sample_token`.

    ``noise_rows=(offset, total)`` says that these rows are rows ``offset..offset+B`` of a batch of
    ``total`` rows sampled with the same generator: the sampling noise of the whole batch is drawn
    and these rows take theirs, so shards sampled apart (Ray rollout workers) give exactly the
    tokens the whole batch would have given.

    ``fast_decode`` runs the decoding steps of Llama-family models (Qwen2, Llama, Mistral) through
    :class:`_StaticKVDecoder` (a preallocated KV cache) when their attention sees every position
    of prompt + completion (no sliding window that short, see :func:`rlft.rollout.fast_decode.attends_to_every_position`);
    other models, and those, use their own forward.
    The loop runs under ``torch.inference_mode``; the returned tensors are ordinary tensors, so the
    update may use them in autograd.

    Sampling runs on the model's device: the prompts are moved there, and off the CPU the noise
    comes from a generator on that device seeded from ``generator`` (:func:`rlft.models.device.sampling_generator`).
    """
    device = model_device(model)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    generator = sampling_generator(generator, device)
    with torch.inference_mode():
        ids, logps, masks = _sample_loop(
            model,
            prompt_ids,
            prompt_mask,
            eos_token_id,
            pad_token_id,
            max_new_tokens,
            temperature,
            top_p,
            generator,
            greedy,
            compact_below,
            noise_rows,
            fast_decode,
        )
    # Cloning outside inference mode turns inference tensors into ordinary ones.
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=ids.clone(),
        completion_mask=masks.clone(),
        logprobs=logps.clone(),
    )


def _prefill(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    fast_decode: bool,
) -> tuple[torch.Tensor, Any, _StaticKVDecoder | None, torch.Tensor]:
    """The prompt's forward pass: (next-token logits (B, V), KV cache, the static-cache decoder
    when ``fast_decode`` and the model supports it (else None), next position of each row (B,))."""
    positions = positions_from_mask(prompt_mask)
    logits, cache = _cache_forward(
        model, None, input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions
    )
    # A peft LoRA model decodes through its wrapped transformers model (adapter layers included).
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    decoder = (
        _StaticKVDecoder(inner, cache, max_new_tokens)
        if fast_decode and _StaticKVDecoder.supports(inner, cache, prompt_ids.shape[1] + max_new_tokens)
        else None
    )
    return logits, cache, decoder, positions[:, -1] + 1


def _decode_step(
    model: PreTrainedModel,
    decoder: _StaticKVDecoder | None,
    cache: Any,
    token: torch.Tensor,
    attention_mask: torch.Tensor,
    position: torch.Tensor,
) -> tuple[torch.Tensor, Any]:
    """(next-token logits (b, V), cache) after feeding ``token`` (b,) at ``position`` (b,);
    ``attention_mask`` (b, L) covers the prompt and every token fed so far, this one included."""
    if decoder is not None:
        return decoder.step(token, attention_mask, position), cache
    return _cache_forward(
        model, cache, input_ids=token[:, None], attention_mask=attention_mask,
        position_ids=position[:, None],
    )


def _sample_loop(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    greedy: bool,
    compact_below: float,
    noise_rows: tuple[int, int] | None = None,
    fast_decode: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoding loop of :func:`sample`: (completion_ids, logprobs, completion_mask), (B, T)."""
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    out_ids = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    out_logps = torch.zeros(batch, max_new_tokens, device=device)
    out_mask = torch.zeros(batch, max_new_tokens, device=device)
    # The mask of every position the loop can reach, allocated once and sliced each step.
    attention_mask = torch.ones(
        batch, prompt_len + max_new_tokens, dtype=prompt_mask.dtype, device=device
    )
    attention_mask[:, :prompt_len] = prompt_mask
    next_logits, cache, decoder, next_position = _prefill(
        model, prompt_ids, prompt_mask, max_new_tokens, fast_decode
    )  # (B, V), cache, decoder, (B,)
    rows = torch.arange(batch, device=device)  # original row of each row still in the batch
    finished = torch.zeros(batch, dtype=torch.bool, device=device)  # (b,)
    vocab = next_logits.shape[-1]
    offset, noise_batch = noise_rows or (0, batch)
    steps = 0
    for step in range(max_new_tokens):
        noise = None
        if not greedy:  # drawn for the full batch: see _sample_token
            noise = torch.empty(noise_batch, vocab, device=device).exponential_(generator=generator)
            noise = noise[offset + rows]
        token, logp = _sample_token(next_logits, noise, temperature, top_p, greedy)
        alive = ~finished
        live_rows = rows[alive]
        out_ids[live_rows, step] = token[alive]
        out_logps[live_rows, step] = logp[alive]
        out_mask[live_rows, step] = 1.0
        finished = finished | (token == eos_token_id)
        steps = step + 1
        n_running = int((~finished).sum())
        if n_running == 0 or step == max_new_tokens - 1:
            break
        if n_running < compact_below * len(rows):
            keep = (~finished).nonzero().squeeze(-1)  # (b',)
            if decoder is not None:
                decoder.select(keep)
            else:
                cache.batch_select_indices(keep)
            rows, token, finished = rows[keep], token[keep], finished[keep]
            attention_mask, next_position = attention_mask[keep], next_position[keep]
        # A finished row still in the batch is fed pad; its outputs are never written.
        token = torch.where(finished, pad_token_id, token)
        next_logits, cache = _decode_step(
            model, decoder, cache, token, attention_mask[:, : prompt_len + step + 1], next_position
        )
        next_position = next_position + 1
    return out_ids[:, :steps], out_logps[:, :steps], out_mask[:, :steps]


def sequence_logprobs(
    model: PreTrainedModel,
    rollout: Rollout,
    temperature: float = 1.0,
    with_entropy: bool = False,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (B, T) of the rollout's completion tokens under ``model``, and the
    per-token entropy (B, T) when asked. See :func:`score_completions`."""
    logprobs, entropy, _ = score_completions(model, rollout, temperature, with_entropy, share_prompts=share_prompts)
    return logprobs, entropy


def shared_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each distinct prompt (U,), distinct prompt of each row (B,)).

    In GRPO/RLOO every prompt appears ``group_size`` times in a batch; its forward pass needs to
    run once. prompt_ids, prompt_mask: (B, P), left-padded alike.
    """
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)  # (B,)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse), device=inverse.device), "amin")
    return first, inverse


def _can_share_prompt(model: PreTrainedModel) -> bool:
    """Whether one prompt pass can feed its KV cache to many completions: the model takes a cache,
    and it is not gradient-checkpointing in training (transformers turns the cache off there)."""
    inner = model.get_base_model() if hasattr(model, "peft_config") else model
    flag = "is_activation_checkpointing" if hasattr(inner, "is_activation_checkpointing") else "is_gradient_checkpointing"
    checkpointing = getattr(inner, flag, False) and inner.training
    return not checkpointing and (forward_accepts(model, "past_key_values") or forward_accepts(model, "cache"))


def _completion_outputs(
    model: PreTrainedModel, rollout: Rollout, want_hidden: bool, share_prompts: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (B, T, V), last hidden states (B, T, H) or None) at the T positions that predict
    the completion tokens.

    When prompts repeat (a group of completions per prompt) and ``share_prompts``, each distinct
    prompt runs once and its KV cache is indexed out to its rows, so the prompt's tokens cost one
    row's compute instead of ``group_size`` rows'. Gradients flow through the shared pass. The
    numbers are those of one pass over prompt + completion (tested to 1e-5).
    """
    attention_mask = rollout.attention_mask
    positions = positions_from_mask(attention_mask)
    completion_len = rollout.completion_ids.shape[1]
    prompt_len = rollout.prompt_ids.shape[1]
    sharing_pays = False
    if share_prompts and _can_share_prompt(model):
        first, inverse = shared_prompts(rollout.prompt_ids, rollout.prompt_mask)
        # Worth it when prompts repeat; each distinct prompt needs a token before its last one.
        sharing_pays = len(first) <= len(inverse) // 2 and bool(rollout.prompt_mask[first, :-1].any(-1).all())
    if not sharing_pays:
        extra: dict[str, Any] = {}
        if forward_accepts(model, "logits_to_keep"):
            # The logit at position i predicts token i + 1: keep the last T + 1, drop the very last.
            extra["logits_to_keep"] = completion_len + 1
        out = model(
            input_ids=rollout.input_ids, attention_mask=attention_mask, position_ids=positions,
            use_cache=False, output_hidden_states=want_hidden, **extra,
        )
        hidden = out.hidden_states[-1][:, -completion_len - 1 : -1, :] if want_hidden else None
        return out.logits[:, -completion_len - 1 : -1, :], hidden

    # The prompt's last token goes with the completion, so that one pass yields all T logits
    # (the logit of the last prompt position predicts completion token 0).
    _, cache = _cached_call(
        model, None, input_ids=rollout.prompt_ids[first, :-1], attention_mask=rollout.prompt_mask[first, :-1],
        position_ids=positions[first, : prompt_len - 1],
        **({"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}),
    )
    cache.batch_select_indices(inverse)  # row b reads its prompt's keys and values
    out, _ = _cached_call(
        model, cache, input_ids=rollout.input_ids[:, prompt_len - 1 : -1], attention_mask=attention_mask[:, :-1],
        position_ids=positions[:, prompt_len - 1 : -1], output_hidden_states=want_hidden,
    )
    return out.logits, (out.hidden_states[-1] if want_hidden else None)


def score_completions(
    model: PreTrainedModel,
    rollout: Rollout,
    temperature: float = 1.0,
    with_entropy: bool = False,
    value_head: torch.nn.Module | None = None,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(logprobs, entropy, values), each (B, T), from one forward pass over prompt + completion.

    Logits are divided by ``temperature`` so that they describe the distribution the tokens were
    sampled from. ``values`` are ``value_head`` applied to the last hidden state at the position
    that predicts each completion token, i.e. V(s_t) of the state before token t. Gradients flow
    unless the caller is in ``torch.no_grad``/``inference_mode``, the entropy's included (an
    entropy bonus in the loss needs them). Whatever the model gives on padding is 0 in all three.

    The language-model head runs only on the T positions that predict completion tokens, a
    prompt repeated in the batch runs once (``share_prompts``, see :func:`_completion_outputs`),
    and without gradients the log-softmax runs in chunks of the sequence, so no (B, T, V) float32
    copy of the logits is made.
    """
    rollout = rollout.to(model_device(model))  # a no-op when the batch is already there
    logits, hidden = _completion_outputs(model, rollout, value_head is not None, share_prompts)
    if torch.is_grad_enabled():
        scaled = logits.float() / temperature
        logprobs = selective_log_softmax(scaled, rollout.completion_ids)
        # Differentiable, so that an entropy bonus in the loss acts; its backward keeps no more
        # than ``scaled``, which the log-softmax keeps anyway (see entropy_from_logits).
        entropy = entropy_from_logits(scaled) if with_entropy else None
    else:
        logprobs, entropy = chunked_logprobs(
            logits, rollout.completion_ids, temperature, with_entropy
        )
    # Padding is selected away, not multiplied by 0: 0 * inf or 0 * NaN there would be NaN.
    keep = rollout.completion_mask.bool()
    logprobs = torch.where(keep, logprobs, 0.0)
    entropy = torch.where(keep, entropy, 0.0) if entropy is not None else None
    values = torch.where(keep, value_head(hidden), 0.0) if value_head is not None else None  # (B, T)
    return logprobs, entropy, values


def chunked_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``selective_log_softmax(logits.float() / temperature, token_ids)`` (and the entropy), one
    chunk of sequence positions at a time, so that the float32 temperature-scaled copy of the
    logits exists only for ``chunk_tokens`` positions at once. For use without gradients.

    logits: (B, T, V); token_ids: (B, T) -> (B, T), (B, T) or None.
    """
    batch, length, _ = logits.shape
    step = max(1, chunk_tokens // max(batch, 1))
    logprobs = torch.empty(batch, length, device=logits.device)
    entropy = torch.empty(batch, length, device=logits.device) if with_entropy else None
    for start in range(0, length, step):
        part = logits[:, start : start + step].float() / temperature  # (B, t, V)
        logprobs[:, start : start + step] = selective_log_softmax(
            part, token_ids[:, start : start + step]
        )
        if entropy is not None:
            entropy[:, start : start + step] = entropy_from_logits(part)
    return logprobs, entropy


def maybe_compile(model: PreTrainedModel, enabled: bool) -> PreTrainedModel:
    """``torch.compile(model)`` when ``enabled`` (dynamic shapes, since batch and length vary).

    Worth it for long runs of a large model; on CPU for small models the compile time (tens of
    seconds) outweighs the gain, which is why it is opt-in.
    """
    if not enabled:
        return model
    model.forward = torch.compile(model.forward, dynamic=True)  # type: ignore[method-assign]
    return model

"""One model in memory, served to many concurrent requests by a worker thread that batches them.

Requests wait in a queue by *group* (the requests of one HTTP call share a group; each
:meth:`ModelHost.submit` without one is a group of its own). Once ``max_batch_size`` rows wait, or
the oldest request has waited ``max_wait_ms``, the worker forms one batch and samples it with rlft's
KV-cache sampler (:func:`rlft.rollout.sampling.sample`), then forms the next. A batch starts with
the first request of the group whose turn it is, and takes requests with the same adapter,
temperature, top_p and max_tokens from every waiting group in turn, one per group per round, until
it is full; that group then goes to the back of the line. So a small request that arrives while a
big one is being served waits for one batch, not for the whole big request (``fair_share=False``
puts every request in one group: plain arrival order, as before). A request with ``n > 1`` is
``n`` rows of its batch (never split). A request with a ``seed`` is sampled alone with
``torch.Generator().manual_seed(seed)``, so the same seed on the same weights gives the same tokens
whatever else is being served.

Weights change only between batches: the worker holds the host's lock while it forms and samples a
batch, and :meth:`ModelHost.swap` (new shared weights) and :meth:`ModelHost.set_adapter` (a user's
LoRA adapter) take the same lock, so no batch sees half-swapped weights.

Per-user adapters (``adapter_r``): the base is wrapped once with
:func:`rlft.models.lora.apply_lora`; there is one adapter slot, into which the worker loads the
user's LoRA weights before a batch for that user (``set_peft_model_state_dict``), and the shared
model is the same weights with the adapter bypassed (:func:`rlft.models.lora.adapter_disabled`).
One copy of the base weights serves everybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlft.errors import RlftError
from rlft.models.lora import adapter_disabled, apply_lora
from rlft.models.tokens import decode_completions, encode_prompts, prompt_token_ids
from rlft.rollout.sampling import sample
from rlft.serving import weights

MAX_N = 16
# Without a declared context window (max_position_embeddings), the longest answer allowed.
MAX_TOKENS_WITHOUT_WINDOW = 4096


class InvalidRequestError(RlftError, ValueError):
    """A generation request the host refuses (the HTTP app answers 400 with this message);
    ``param`` names the request field at fault, when one does."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class GenerationRequest:
    """What to sample. ``prompt`` is already formatted (chat template applied, :func:`chat_prompt`)."""

    prompt: str
    max_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None  # sampled alone with torch.Generator().manual_seed(seed): reproducible
    adapter: str | None = None  # the user whose adapter to use; None or no such adapter: shared model


@dataclass(frozen=True)
class Generation:
    """The answer to one request: ``n`` texts, each with its token count and why it stopped."""

    texts: list[str]
    completion_tokens: list[int]  # tokens generated per text, the EOS token included
    finish_reasons: list[str]  # "stop" (the model emitted EOS) | "length" (max_tokens reached)
    prompt_tokens: int
    model_version: int
    adapter: str | None  # the adapter actually used (None: the shared model)


@dataclass
class _Pending:
    request: GenerationRequest
    prompt_tokens: int
    group: Hashable  # the requests of one HTTP call share a group (its turn in the line)
    arrived: float = field(default_factory=time.monotonic)
    future: Future[Generation] = field(default_factory=Future)


class ModelHost:
    """One base model in memory, served by a worker thread that batches concurrent requests."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        version: int,
        *,
        adapter_r: int | None = None,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        fair_share: bool = True,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise RlftError(
                f"max_batch_size must be >= 1 and max_wait_ms >= 0 (got {max_batch_size}, {max_wait_ms})."
            )
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise RlftError(
                "The tokenizer needs an EOS and a pad token; load it with rlft.models.loading.load_tokenizer."
            )
        self.tokenizer = tokenizer
        self.version = version
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.fair_share = fair_share  # batches round-robin over groups (False: in arrival order)
        self.adapter_r = adapter_r
        model.eval()
        model.requires_grad_(False)
        self.model: Any = apply_lora(model, r=adapter_r) if adapter_r is not None else model
        self.model.eval()
        # The transformers model whose weights are served (the same object inside the peft wrapper).
        self._base: torch.nn.Module = (
            self.model.get_base_model() if adapter_r is not None else self.model  # type: ignore[operator]
        )  # fmt: skip
        self._served = weights.served_tensors(self._base)
        self._adapters: dict[str, dict[str, torch.Tensor]] = {}
        self._lora_shapes: dict[str, torch.Size] = {}
        if adapter_r is not None:
            from peft import get_peft_model_state_dict

            self._lora_shapes = {
                k: v.shape for k, v in get_peft_model_state_dict(self.model).items()
            }
        self._loaded: str | None = None  # whose LoRA weights are in the adapter slot now
        self.device = next(self.model.parameters()).device
        self._window = getattr(self._base.config, "max_position_embeddings", None)
        self._lock = threading.Lock()  # held while sampling and while weights change
        self._waiting = _Waiting()
        self._closed = False
        self.batches = 0  # batches sampled so far (a request with a seed is a batch of its own)
        self._rng = torch.Generator(device=self.device)
        self._rng.seed()  # unseeded requests: a fresh random stream per host
        self._worker = threading.Thread(target=self._run, name="rlft-model-host", daemon=True)
        self._worker.start()

    @classmethod
    def from_folder(cls, folder: str | Path, version: int = 1, device: str = "cpu", **kw: Any) -> ModelHost:
        """A host for a model folder, a LoRA adapter folder (merged into its base) or a run folder
        (its ``final_model/``), on ``device`` (``--device``: auto, cpu, cuda, cuda:N). Keyword
        arguments go to :class:`ModelHost`."""
        from rlft.models.device import resolve_device
        from rlft.serving.loading import load_served_model

        where = resolve_device(device, "--device")  # a missing GPU: one error before the weights are read
        model, tokenizer = load_served_model(folder)
        model.to(where)  # type: ignore[arg-type]  # transformers types .to as a wrapped method
        return cls(model, tokenizer, version, **kw)

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, group: Hashable | None = None) -> Future[Generation]:
        """Queue ``request``; the future resolves to its :class:`Generation`. Bad input raises
        :class:`InvalidRequestError` here, before anything is queued. Requests of one ``group``
        (one HTTP call's) take turns with other groups as one; None: a group of its own."""
        if self._closed:
            raise RlftError("The model host is closed.")
        prompt_tokens = self.check(request)
        if not self.fair_share:
            group = "all"
        pending = _Pending(request, prompt_tokens, object() if group is None else group)
        self._waiting.put(pending)
        return pending.future

    def generate(self, request: GenerationRequest) -> Generation:
        """Sample ``request`` (blocking; safe to call from many threads at once)."""
        return self.submit(request).result()

    async def agenerate(self, request: GenerationRequest, group: Hashable | None = None) -> Generation:
        """:meth:`generate` for asyncio code (the HTTP routes): the event loop is not blocked."""
        return await asyncio.wrap_future(self.submit(request, group))

    def check(self, request: GenerationRequest) -> int:
        """The prompt's token count, or :class:`InvalidRequestError` naming what is wrong."""
        r = request

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not isinstance(r.prompt, str):
            raise InvalidRequestError("prompt must be a string.")
        if not is_int(r.n) or not 1 <= r.n <= MAX_N:
            raise InvalidRequestError(f"n must be an integer from 1 to {MAX_N} (got {r.n!r}).")
        if not isinstance(r.temperature, (int, float)) or not math.isfinite(r.temperature) or r.temperature < 0:
            raise InvalidRequestError(
                f"temperature must be a finite number >= 0 (got {r.temperature!r}); 0 is greedy decoding."
            )
        if not isinstance(r.top_p, (int, float)) or not 0 < r.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1] (got {r.top_p!r}).")
        if r.seed is not None and (not is_int(r.seed) or not 0 <= r.seed < 2**63):
            raise InvalidRequestError(f"seed must be an integer from 0 to 2**63 - 1 (got {r.seed!r}).")
        if r.adapter is not None and not isinstance(r.adapter, str):
            raise InvalidRequestError("adapter must be a user name (a string) or None.")
        if not is_int(r.max_tokens) or r.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be an integer >= 1 (got {r.max_tokens!r}).")
        prompt_tokens = len(prompt_token_ids(self.tokenizer, [r.prompt])[0])
        if prompt_tokens == 0:
            raise InvalidRequestError("The prompt is empty; give some text to answer.")
        window = self._window if isinstance(self._window, int) and self._window > 0 else None
        room = self._room(prompt_tokens)
        if r.max_tokens > room:
            where = (
                f"the model's context window is {window} tokens and the prompt has {prompt_tokens}"
                if window
                else f"answers are capped at {MAX_TOKENS_WITHOUT_WINDOW} tokens"
            )
            raise InvalidRequestError(
                f"max_tokens={r.max_tokens} does not fit: {where}; ask for at most {max(room, 0)} "
                + ("tokens." if room > 0 else "tokens (shorten the prompt).")
            )
        return prompt_tokens

    def max_tokens_for(self, prompt: str) -> int:
        """The most tokens an answer to ``prompt`` may have (the context window's room after it)."""
        return self._room(len(prompt_token_ids(self.tokenizer, [prompt])[0]))

    def _room(self, prompt_tokens: int) -> int:
        window = self._window if isinstance(self._window, int) and self._window > 0 else None
        return (window - prompt_tokens) if window else MAX_TOKENS_WITHOUT_WINDOW

    # -- weights ----------------------------------------------------------------------------------

    def swap(self, version: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Serve ``state_dict`` (a plain transformers ``model.state_dict()``) as ``version`` from
        the next batch on. Checked first (names, shapes, finite values): a bad one changes nothing."""
        weights.check_state_dict(self._served, state_dict, f"The weights of version {version}")
        with self._lock:
            weights.copy_into(self._served, state_dict)
            self.version = version

    def set_adapter(self, user: str, lora_state: dict[str, torch.Tensor] | None) -> None:
        """Serve ``user``'s requests with ``lora_state`` (``get_peft_model_state_dict`` of a model
        wrapped by ``apply_lora(model, r=adapter_r)``) from the next batch on; None removes it."""
        if self.adapter_r is None:
            raise RlftError("This host has no adapter slot; create it with adapter_r=R to serve per-user adapters.")
        if lora_state is not None:
            weights.check_lora_state(self._lora_shapes, lora_state, user)
            lora_state = {k: v.detach().to(self.device).clone() for k, v in lora_state.items()}
        with self._lock:
            if lora_state is None:
                self._adapters.pop(user, None)
            else:
                self._adapters[user] = lora_state
            if self._loaded == user:
                self._loaded = None  # reload on its next batch

    def adapters(self) -> list[str]:
        """The users who have an adapter, sorted."""
        with self._lock:
            return sorted(self._adapters)

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """A detached copy of the served shared weights, with plain transformers names."""
        with self._lock:
            return {name: t.detach().clone() for name, t in self._served.items()}

    def close(self) -> None:
        """Stop taking requests; those already queued are answered (for up to 60 s), then any
        still queued fail with an :class:`RlftError`."""
        if self._closed:
            return
        self._closed = True
        self._waiting.close()
        self._worker.join(timeout=60)
        self._fail_queued()

    def __enter__(self) -> ModelHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        while self._waiting.wait(self.max_batch_size, self.max_wait_s):
            with self._lock:  # adapters change under the lock
                adapter, batch = self._waiting.take_batch(self.max_batch_size, self._batch_key)
            self._serve(adapter, batch)
        self._fail_queued()

    def _batch_key(self, request: GenerationRequest) -> tuple[Any, ...]:
        """Requests with equal keys may share a batch; a seeded request's key equals no other."""
        adapter = request.adapter if request.adapter in self._adapters else None
        if request.seed is not None:
            return (adapter, object())
        return (adapter, float(request.temperature), float(request.top_p), request.max_tokens)

    def _serve(self, adapter: str | None, batch: list[_Pending]) -> None:
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            with self._lock:
                if adapter not in self._adapters:
                    adapter = None  # removed since the batch was formed: the shared model
                results = self._sample_batch(
                    adapter, [p.request for p in live], [p.prompt_tokens for p in live]
                )
        except Exception as exc:  # a failure answers this batch's requests; the host serves on
            for p in live:
                p.future.set_exception(exc)
            return
        self.batches += 1
        for p, result in zip(live, results, strict=True):
            p.future.set_result(result)

    def _sample_batch(
        self, adapter: str | None, requests: list[GenerationRequest], prompt_tokens: list[int]
    ) -> list[Generation]:
        """Sample requests that share adapter and sampling settings as one batch (under the lock)."""
        head = requests[0]
        prompts = [r.prompt for r in requests for _ in range(r.n)]
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts)
        generator = self._rng
        if head.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(head.seed)
        with self._weights_for(adapter):
            rollout = sample(
                self.model,
                prompt_ids.to(self.device),
                prompt_mask.to(self.device),
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                max_new_tokens=head.max_tokens,
                temperature=head.temperature if head.temperature > 0 else 1.0,
                top_p=head.top_p,
                generator=generator,
                greedy=head.temperature == 0,
            )
        texts = decode_completions(self.tokenizer, rollout.completion_ids, rollout.completion_mask)
        lengths = [int(n) for n in rollout.completion_mask.sum(-1).tolist()]
        ended = [
            length > 0 and int(ids[length - 1]) == self.tokenizer.eos_token_id
            for ids, length in zip(rollout.completion_ids.tolist(), lengths, strict=True)
        ]
        out, row = [], 0
        for request, n_prompt in zip(requests, prompt_tokens, strict=True):
            rows = slice(row, row + request.n)
            row += request.n
            out.append(Generation(
                texts=texts[rows], completion_tokens=lengths[rows],
                finish_reasons=["stop" if e else "length" for e in ended[rows]],
                prompt_tokens=n_prompt, model_version=self.version, adapter=adapter,
            ))  # fmt: skip
        return out

    @contextlib.contextmanager
    def _weights_for(self, adapter: str | None) -> Iterator[None]:
        """Within the block the model computes ``adapter``'s model, or the shared one for None."""
        if self.adapter_r is None:
            yield
            return
        if adapter is None:
            with adapter_disabled(self.model):
                yield
            return
        if self._loaded != adapter:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, self._adapters[adapter])
            self._loaded = adapter
        yield

    def _fail_queued(self) -> None:
        for item in self._waiting.drain():
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(RlftError("The model host is closed."))


class _Waiting:
    """The requests waiting for the worker, in line by group (thread-safe)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._groups: dict[Hashable, deque[_Pending]] = {}  # in turn order; each in arrival order
        self._rows = 0
        self._closed = False

    def put(self, pending: _Pending) -> None:
        with self._changed:
            self._groups.setdefault(pending.group, deque()).append(pending)
            self._rows += pending.request.n
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def wait(self, max_rows: int, max_wait_s: float) -> bool:
        """Block until a batch should be formed: ``max_rows`` rows wait, the oldest request has
        waited ``max_wait_s``, or the host closed with requests left. False: closed and empty."""
        with self._changed:
            while True:
                if not self._groups:
                    if self._closed:
                        return False
                    self._changed.wait()
                    continue
                if self._closed or self._rows >= max_rows:
                    return True
                oldest = min(q[0].arrived for q in self._groups.values())
                left = oldest + max_wait_s - time.monotonic()
                if left <= 0:
                    return True
                self._changed.wait(left)

    def take_batch(
        self, max_rows: int, key_of: Callable[[GenerationRequest], tuple[Any, ...]]
    ) -> tuple[str | None, list[_Pending]]:
        """(adapter, requests) of the next batch: the first request of the group whose turn it
        is, then requests with its key from each group in turn, one per group per round, while
        they fit in ``max_rows`` rows. That group goes to the back of the line."""
        with self._changed:
            first_group = next(iter(self._groups))
            head = self._groups[first_group].popleft()
            key = key_of(head.request)
            batch, rows = [head], head.request.n
            turns = [*list(self._groups)[1:], first_group]
            took = True
            while took:
                took = False
                for group in turns:
                    fits = (p for p in self._groups[group] if rows + p.request.n <= max_rows)
                    match = next((p for p in fits if key_of(p.request) == key), None)
                    if match is not None:
                        self._groups[group].remove(match)
                        batch.append(match)
                        rows += match.request.n
                        took = True
            self._groups[first_group] = self._groups.pop(first_group)  # to the back of the line
            for group in [g for g, q in self._groups.items() if not q]:
                del self._groups[group]
            self._rows -= rows
            return key[0], batch

    def drain(self) -> list[_Pending]:
        """Every waiting request, removed from the line."""
        with self._changed:
            out = [p for q in self._groups.values() for p in q]
            self._groups.clear()
            self._rows = 0
            return out

"""Ray as the distributed engine: rollout workers are Ray actors holding copies of the policy.

The learner trains in its own process and, after each update, pushes the weights with a version
number (:meth:`RayRolloutEngine.push_weights`). Each rollout request names the version it needs;
a worker that answers from another version (e.g. a restarted worker that came back with its
initial weights) is detected, re-synced and asked again, and the event is counted. A worker that
dies is restarted, given the current weights, and its shard of the batch is re-issued, so nothing
is lost; the count appears in :meth:`RayRolloutEngine.metrics`.

Same seed, same results: :meth:`RayRolloutEngine.sample` has the signature of
:func:`rlft.rollout.sampling.sample`. It splits the batch into one shard per worker, sends each
worker the generator's state and its row range (``noise_rows``), so every shard draws exactly the
noise its rows would have drawn in one process, and afterwards leaves the caller's generator in
the state a single-process rollout would have left it.

``ray`` is imported lazily (``pip install 'rlft[scale]'``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from rlft.errors import RlftError
from rlft.types import Rollout


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RlftError(
            "distributed.engine: ray needs Ray: pip install 'rlft[scale]' (or pip install ray)."
        ) from None
    return ray


class RolloutWorker:
    """A Ray actor: one copy of the policy that samples shards of rollout batches."""

    def __init__(self, model_config: Any, threads: int = 1) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_config(model_config)
        self.model.eval()
        self.version = -1  # no weights yet

    def set_weights(self, version: int, state: dict[str, torch.Tensor]) -> int:
        self.model.load_state_dict(state, strict=True)
        self.version = version
        return version

    def pid(self) -> int:
        import os

        return os.getpid()

    def sample(
        self,
        version: int,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        gen_state: torch.Tensor,
        noise_rows: tuple[int, int],
        kwargs: dict[str, Any],
    ) -> tuple[int, dict[str, torch.Tensor] | None, torch.Tensor | None, int]:
        """(version used, rollout fields, generator state after sampling, decode steps).

        A worker whose weights are not ``version`` samples nothing and says so (stale)."""
        from rlft.rollout.sampling import sample

        if self.version != version:
            return self.version, None, None, 0
        gen = torch.Generator().manual_seed(0)
        gen.set_state(gen_state)
        rollout = sample(
            self.model, prompt_ids, prompt_mask, generator=gen, noise_rows=noise_rows, **kwargs
        )
        fields = {
            "completion_ids": rollout.completion_ids,
            "completion_mask": rollout.completion_mask,
            "logprobs": rollout.logprobs,
        }
        return self.version, fields, gen.get_state(), rollout.completion_ids.shape[1]


@dataclass
class EngineStats:
    worker_restarts: int = 0
    stale_rejections: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class RayRolloutEngine:
    """Rollout workers on a Ray cluster (``address``: ``"auto"``, ``"HOST:PORT"`` or ``None`` for a
    local cluster started here), fed versioned weights by the learner. A
    :class:`rlft.rollout.engine.RolloutEngine` (``distributed.engine: ray``)."""

    # The workers sample float32 copies of the policy in other processes: the log-probs are not
    # the learner's own tensors (the collector scores the rollout again), but not approximate.
    logprobs_are_policys = False
    approximate_logprobs = False

    def __init__(
        self,
        policy: torch.nn.Module,
        num_workers: int = 2,
        address: str | None = None,
        threads_per_worker: int = 1,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(
                address=None if address in (None, "local") else address,
                **({"include_dashboard": False, "log_to_driver": False} | (init_kwargs or {})),
            )
        self._actor_cls = ray.remote(num_cpus=0)(RolloutWorker)
        self.model_config = policy.config
        self.threads = threads_per_worker
        self.version = 0
        self.stats = EngineStats()
        self._weights_ref: Any = None
        self.workers = [self._new_worker() for _ in range(num_workers)]
        self.push_weights(policy)

    def _new_worker(self) -> Any:
        return self._actor_cls.remote(self.model_config, self.threads)

    def push_weights(self, policy: torch.nn.Module) -> int:
        """Send the learner's current weights to every worker under a new version number."""
        ray = _ray()
        state = _plain_state_dict(policy)
        self.version += 1
        self._weights_ref = ray.put(state)
        ray.get([w.set_weights.remote(self.version, self._weights_ref) for w in self.workers])
        return self.version

    def _restart(self, index: int, reason: str) -> None:
        ray = _ray()
        with contextlib.suppress(Exception):  # it may be dead already
            ray.kill(self.workers[index])
        self.workers[index] = self._new_worker()
        ray.get(self.workers[index].set_weights.remote(self.version, self._weights_ref))
        self.stats.worker_restarts += 1
        self.stats.events.append(
            {
                "event": "worker_restarted",
                "worker": index,
                "reason": reason,
                "version": self.version,
                "time": time.time(),
            }
        )

    def sample(
        self,
        model: torch.nn.Module | None,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> Rollout:
        """:func:`rlft.rollout.sampling.sample` across the workers (``model`` is the learner's
        policy, whose weights the workers already hold; it is not used here). ``noise_rows``
        (``(offset, total)``: these rows are a share of a larger batch, as on a learner rank)
        places each worker's shard within that batch."""
        ray = _ray()
        batch = prompt_ids.shape[0]
        offset, total = kwargs.pop("noise_rows", None) or (0, batch)
        gen = generator or torch.Generator().manual_seed(0)
        gen_state = gen.get_state()
        bounds = _shards(batch, len(self.workers))
        results: dict[int, tuple[dict[str, torch.Tensor], torch.Tensor, int]] = {}
        pending = dict(enumerate(bounds))
        for _attempt in range(3):
            refs = {
                i: self.workers[i].sample.remote(
                    self.version,
                    prompt_ids[lo:hi],
                    prompt_mask[lo:hi],
                    gen_state,
                    (offset + lo, total),
                    kwargs,
                )
                for i, (lo, hi) in pending.items()
            }
            for i, ref in refs.items():
                try:
                    version, fields, state, steps = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._restart(i, f"died: {type(exc).__name__}")
                    continue
                if version != self.version or fields is None:
                    self.stats.stale_rejections += 1
                    self.stats.events.append(
                        {
                            "event": "stale_worker",
                            "worker": i,
                            "had": version,
                            "wanted": self.version,
                            "time": time.time(),
                        }
                    )
                    ray.get(self.workers[i].set_weights.remote(self.version, self._weights_ref))
                    continue
                results[i] = (fields, state, steps)
                del pending[i]
            if not pending:
                break
        if pending:
            raise RlftError(
                f"Rollout workers {sorted(pending)} failed three times in a row; see the Ray logs."
            )
        return self._gather(prompt_ids, prompt_mask, results, gen, kwargs.get("pad_token_id", 0))

    def _gather(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        results: dict[int, tuple[dict[str, torch.Tensor], torch.Tensor, int]],
        gen: torch.Generator,
        pad: int,
    ) -> Rollout:
        longest = max(results, key=lambda i: results[i][2])
        gen.set_state(results[longest][1])  # the state after as many steps as the whole batch took
        length = results[longest][2]
        parts = [results[i][0] for i in sorted(results)]

        def cat(name: str, fill: float) -> torch.Tensor:
            return torch.cat(
                [
                    torch.nn.functional.pad(p[name], (0, length - p[name].shape[1]), value=fill)
                    for p in parts
                ]
            )

        return Rollout(
            prompt_ids,
            prompt_mask,
            cat("completion_ids", pad).long(),
            cat("completion_mask", 0.0),
            cat("logprobs", 0.0),
        )

    def metrics(self) -> dict[str, float]:
        """Counters for the step's metrics line."""
        return {
            "distributed/weights_version": float(self.version),
            "distributed/worker_restarts": float(self.stats.worker_restarts),
            "distributed/stale_rejections": float(self.stats.stale_rejections),
        }

    def worker_pids(self) -> list[int]:
        ray = _ray()
        return ray.get([w.pid.remote() for w in self.workers])

    def shutdown(self) -> None:
        ray = _ray()
        for w in self.workers:
            ray.kill(w)
        self.workers = []


def _shards(batch: int, n: int) -> list[tuple[int, int]]:
    """Contiguous row ranges, as equal as possible, none empty."""
    n = max(1, min(n, batch))
    edges = [round(i * batch / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _plain_state_dict(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a worker's plain model loads: a LoRA policy is merged first."""
    if hasattr(policy, "peft_config"):
        from rlft.models.lora import merged_model

        policy = merged_model(policy)
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}

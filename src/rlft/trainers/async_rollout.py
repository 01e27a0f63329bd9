"""Generation and learning at the same time: a producer thread samples and rewards the next batches
while the learner trains (``rollout.async``; docs/performance.md).

With ``max_staleness = k`` the batch of step ``t`` is sampled with the weights after step
``t - k`` (the policy "version" ``t - k``; the weights a run starts or resumes from for the first
``k`` steps). The lag is fixed, not "whatever the producer has": a run is reproducible, and the
producer never samples a batch that would be too old, so nothing is dropped. The timeline, k = 1::

    producer:  sample+reward batch 1 (v0) | batch 2 (v1)      | batch 3 (v2)      | ...
    learner:   update on batch 0 (v0)     | update on batch 1 | update on batch 2 | ...

After each update the learner publishes its weights into one of ``k + 1`` snapshot copies of the
policy (a copy, which is all the learner waits for) and the producer samples from the snapshot of
the version it needs, so it is never stopped by a push. An engine with its own weights (bf16
copy, Ray workers) gets the snapshot pushed by the producer before the batch that needs it.

The off-policy correction: the batch's log-probs are the behaviour policy's (the snapshot's), so
the collector treats a stale batch like one from an approximate engine: truncated importance
weights ``min(pi_learner / pi_behaviour, C)`` on the advantages (and the PPO ratio against the
policy at the update's start when rows are reused). Group statistics stay within the batch.

A step goes through two stages, sampling and rewarding, each taken in step order
(``StageOrder``). Where the order of steps cannot change what a batch holds (the local sampler,
uniform prompts, no dynamic sampling) two producer threads take alternate steps, and step
``t + 1`` is sampled while step ``t`` is rewarded: a slow judge's wait is hidden behind sampling,
not added to it. Otherwise one thread does both, one step after the other.

Errors in the producer reach the learner at its next ``take`` with the producer's traceback.
The learner's evaluation (which calls the same reward) and its checkpoint pause the producer:
they wait until no step is being sampled or rewarded, and no step starts until they are done.

On a checkpoint nothing of the queue is saved: a resumed run discards it and samples its first
``k`` batches with the weights it resumes from (deterministic, but not the uninterrupted run's).
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from rlft.errors import RlftError
from rlft.rollout.engine import LocalSampler, RolloutEngine
from rlft.trainers.batch import Sampler
from rlft.trainers.parallel import Ranks
from rlft.trainers.sampling_rounds import Sampled, sample_batch


def sampling_version(step: int, max_staleness: int, first_step: int) -> int:
    """The policy version that samples step ``step``'s batch: ``step - max_staleness``, never
    before the weights the run (re)started from."""
    return max(step - max_staleness, first_step)


@dataclass
class Produced:
    """A step's batch as the producer made it."""

    step: int
    version: int  # the weights that sampled it: those after step ``version``
    sampled: Sampled
    generator: torch.Generator  # the step's generator after sampling (the update shuffles with it)
    sampler: Sampler  # what the collector must know of its log-probs
    producer_idle_s: float  # the producer's wait for weights and for queue space, this batch
    prompt_metrics: dict[str, float] = field(default_factory=dict)  # the prompt sampler's, after this batch


@dataclass
class _Failure:
    trace: str


class WeightSnapshots:
    """``k + 1`` copies of the policy, each holding one published version; ``wait_for`` blocks
    until a version is published."""

    def __init__(self, policy: torch.nn.Module, slots: int, version: int) -> None:
        self.copies = [copy.deepcopy(policy).requires_grad_(False).eval() for _ in range(slots)]
        self.versions = [version] * slots
        self.changed = threading.Condition()
        self.closed = False

    def publish(self, version: int, policy: torch.nn.Module) -> None:
        """Copy ``policy``'s weights into the slot of ``version`` (the oldest one, no longer read)."""
        slot = version % len(self.copies)
        with torch.no_grad():
            for into, value in zip(self.copies[slot].state_dict().values(), policy.state_dict().values(), strict=True):
                into.copy_(value)
        with self.changed:
            self.versions[slot] = version
            self.changed.notify_all()

    def wait_for(self, version: int) -> torch.nn.Module | None:
        """The copy holding ``version`` once it is published; None when closed first."""
        slot = version % len(self.copies)
        with self.changed:
            self.changed.wait_for(lambda: self.closed or self.versions[slot] == version)
            return None if self.closed else self.copies[slot]

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


class _Stopped(Exception):
    """The producer was closed while a step waited for its turn."""


class StageOrder:
    """Sampling and rewarding, each in step order, and the pause of both (module docstring).

    With ``overlap`` step ``t + 1`` may sample once step ``t`` has sampled; without it, once step
    ``t`` has been rewarded. Batches are also put in the queue in step order."""

    def __init__(self, first_step: int, overlap: bool) -> None:
        self.changed = threading.Condition()
        self.overlap = overlap
        self.next_sampling = self.next_reward = self.next_put = first_step
        self.busy = 0  # steps inside a stage now
        self.pausing = self.closed = False

    def _wait(self, ready: Callable[[], bool], enter: bool) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.closed or (ready() and not (enter and self.pausing)))
            if self.closed:
                raise _Stopped
            self.busy += enter

    def _advance(self, leaving: bool = False, **counters: int) -> None:
        """Set ``counters`` (and, ``leaving``, count one step out of its stage) in one update."""
        with self.changed:
            self.busy -= leaving
            for name, value in counters.items():
                setattr(self, name, value)
            self.changed.notify_all()

    def start_sampling(self, step: int) -> None:
        self._wait(lambda: self.next_sampling == step and (self.overlap or self.next_reward == step), enter=True)

    def start_reward(self, step: int) -> None:
        """Ends ``step``'s sampling stage and waits for its turn to be rewarded."""
        self._advance(leaving=True, next_sampling=step + 1)
        self._wait(lambda: self.next_reward == step, enter=True)

    def leave(self, step: int) -> None:
        """``step`` stops without a reward (an error): it holds no stage, and no later step samples."""
        self._advance(leaving=True)

    def end_reward(self, step: int) -> None:
        self._advance(leaving=True, next_reward=step + 1)

    def wait_to_put(self, step: int) -> None:
        self._wait(lambda: self.next_put == step, enter=False)

    def put_done(self, step: int) -> None:
        self._advance(next_put=step + 1)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self.changed:
            self.pausing = True
            self.changed.wait_for(lambda: self.closed or self.busy == 0)
        try:
            yield
        finally:
            self._advance(pausing=False)

    def close(self) -> None:
        self._advance(closed=True)


def overlaps_stages(config: Any, engine: RolloutEngine) -> bool:
    """Whether step ``t + 1`` may be sampled while step ``t`` is rewarded without changing any batch:
    the local sampler (no weights of its own to push between them), prompts that do not depend on
    earlier rewards (no curriculum), one sampling round per step (no dynamic sampling)."""
    return (isinstance(engine, LocalSampler) and config.task.sampler == "uniform"
            and not config.algorithm.dynamic_sampling)


@dataclass
class RolloutProducer:
    """The thread that samples and rewards steps ``first_step``, ``first_step + 1``, ... ``last_step``
    ahead of the learner (see the module docstring)."""

    config: Any
    policy: torch.nn.Module
    tokenizer: Any
    task: Any
    reward_fn: Callable[..., Any]
    engine: RolloutEngine
    first_step: int
    last_step: int
    step_generator: Callable[[int, int], torch.Generator]

    def __post_init__(self) -> None:
        settings = self.config.rollout.async_
        self.max_staleness = settings.max_staleness
        self.ready: queue.Queue[Produced | _Failure] = queue.Queue(maxsize=settings.queue_size)
        self.snapshots = WeightSnapshots(self.policy, self.max_staleness + 1, self.first_step)
        self.stopped = threading.Event()
        self.engine_version: int | None = None
        self.order = StageOrder(self.first_step, overlaps_stages(self.config, self.engine))
        lanes = 2 if self.order.overlap else 1
        self.threads = [threading.Thread(target=self._run, args=(self.first_step + lane, lanes),
                                         name="rlft-rollout-producer", daemon=True) for lane in range(lanes)]
        for thread in self.threads:
            thread.start()

    # -- the learner's side --------------------------------------------------------------------

    def take(self, step: int) -> tuple[Produced, dict[str, float]]:
        """Step ``step``'s batch (waiting for it), and the step's ``async/*`` metrics."""
        depth = self.ready.qsize()
        started = time.perf_counter()
        item = self.ready.get()
        idle = time.perf_counter() - started
        if isinstance(item, _Failure):
            self.close()
            raise RlftError(f"The rollout producer (rollout.async) failed while sampling ahead:\n{item.trace}")
        assert item.step == step, f"the producer made step {item.step}'s batch, the learner is at step {step}"
        return item, {
            "async/staleness_mean": float(step - item.version), "async/dropped_batches": 0.0,
            "async/learner_idle_s": idle, "async/producer_idle_s": item.producer_idle_s,
            "async/queue_depth": float(depth), **item.prompt_metrics,
        }

    def publish(self, version: int, policy: torch.nn.Module) -> None:
        """The weights after step ``version`` (the learner's, just updated), for the batches that need them."""
        self.snapshots.publish(version, policy)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No batch is sampled or rewarded while the block runs (the learner's evaluation)."""
        with self.order.paused():
            yield

    def close(self) -> None:
        self.stopped.set()
        self.snapshots.close()
        self.order.close()
        with contextlib.suppress(queue.Empty):
            while True:  # a producer blocked on a full queue gets its put through, then sees the stop
                self.ready.get_nowait()
        for thread in self.threads:
            thread.join(timeout=30)

    # -- the producer's side -------------------------------------------------------------------

    def _run(self, first: int, every: int) -> None:
        """Steps ``first``, ``first + every``, ... (this thread's lane)."""
        try:
            for step in range(first, self.last_step + 1, every):
                produced = self._produce(step)
                if produced is None:
                    return
                waited = time.perf_counter()
                self.order.wait_to_put(step)
                self._put(produced)
                self.order.put_done(step)
                produced.producer_idle_s += time.perf_counter() - waited
        except _Stopped:
            return
        except BaseException:  # noqa: BLE001 - every failure must reach the learner, never hang it
            self._put(_Failure(traceback.format_exc()))

    def _put(self, item: Produced | _Failure) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(queue.Full):
                self.ready.put(item, timeout=0.1)
                return

    def _produce(self, step: int) -> Produced | None:
        version = sampling_version(step, self.max_staleness, self.first_step)
        started = time.perf_counter()
        policy = self.snapshots.wait_for(version)
        idle = time.perf_counter() - started
        if policy is None or self.stopped.is_set():
            return None
        self.order.start_sampling(step)
        stage = "sampling"

        def reward_in_turn(*args: Any, **kwargs: Any) -> Any:  # the sampling is done: the reward stage
            nonlocal stage
            if stage == "sampling":
                stage = "between"
                self.order.start_reward(step)
                stage = "reward"
            return self.reward_fn(*args, **kwargs)

        try:
            if not isinstance(self.engine, LocalSampler) and self.engine_version != version:
                self.engine.push_weights(policy)  # an engine with weights of its own samples this version
                self.engine_version = version
            gen = self.step_generator(self.config.seed, step)
            sampled = sample_batch(self.config, policy, self.tokenizer, self.task, gen, self.engine, reward_in_turn,
                                   Ranks(device=next(policy.parameters()).device))
            prompts = getattr(self.task, "sampler", None)  # its figures now, not when the learner gets there
            prompt_metrics = prompts.metrics() if prompts is not None else {}
        finally:  # a stage left by an error is released, so a pause never waits for it
            if stage == "reward":
                self.order.end_reward(step)
            elif stage == "sampling":
                self.order.leave(step)
        stale = step != version
        sampler = Sampler(logprobs_are_policys=self.engine.logprobs_are_policys and not stale,
                          approximate_logprobs=self.engine.approximate_logprobs or stale)
        return Produced(step, version, sampled, gen, sampler, idle, prompt_metrics)

"""``rollout.async``: generation and learning at the same time (docs/performance.md).

Its own module and a Python name of its own (``async_``): ``async`` is a Python keyword, so the
field is ``async_`` in code and ``async`` in recipes, ``config.yaml`` and the reference
(``rlft.schema`` maps the two)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlft.errors import ConfigError
from rlft.schema import setting


@dataclass(frozen=True)
class AsyncConfig:
    """A producer thread samples and rewards the next batches while the learner trains."""

    enabled: bool = setting(
        False,
        "Sample and reward the next batches in a producer thread while the learner updates on the oldest "
        "ready one (rlft.trainers.async_rollout). false: the synchronous loop.",
    )
    max_staleness: int = setting(
        1,
        "How many updates old the weights that sample a batch may be: batch t is sampled with the weights "
        "after step t - max_staleness (a fixed lag, so runs are reproducible), and its log-probs correct the "
        "update (truncated importance weights). 0: exactly the synchronous loop.",
        ge=0,
    )
    queue_size: int = setting(
        2, "Sampled batches that may wait for the learner (memory: each holds a batch of completions).", ge=1
    )


def check_async_recipe(config: Any) -> None:
    """Refuse what the producer thread cannot run beside the learner, naming the fix."""
    settings = config.rollout.async_
    if not (settings.enabled and settings.max_staleness > 0):
        return
    if config.rollout.backend == "vllm":
        raise ConfigError(
            "rollout.async with rollout.backend='vllm' is not supported: vLLM is colocated on the learner's GPU "
            "and sleeps while it updates, so there is nothing to overlap. Use rollout.async.enabled: false with "
            "vLLM, or the hf sampler (or distributed.engine: ray) with rollout.async."
        )
    if config.rollout.compile:
        raise ConfigError(
            "rollout.async with rollout.compile is not supported: the producer samples from copies of the policy. "
            "Set rollout.compile: false."
        )

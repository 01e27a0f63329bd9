"""Rollout engines: what samples a step's completions, behind one :class:`RolloutEngine` protocol.

The RL loop holds one engine for the whole run. Each step it calls ``engine.sample`` with the
learner's policy (the arguments of :func:`rlft.rollout.sampling.sample`), after the update
``engine.push_weights(policy)``, and adds ``engine.metrics()`` to the step's metrics line. Which
engine a recipe gets is decided in one place, :func:`engine_name`, and built from the
:data:`ROLLOUT_ENGINES` registry:

============  =========================================  ==========================================
name          engine                                     the rollout's log-probs
============  =========================================  ==========================================
``local``     :class:`LocalSampler` (this process)       the policy's own
``bfloat16``  :class:`~rlft.rollout.low_precision.LowPrecisionSampler`  approximate (bf16 copy)
``ray``       :class:`~rlft.rollout.ray_engine.RayRolloutEngine`        float32 copies, other processes
``vllm``      :class:`~rlft.rollout.vllm_engine.VLLMRolloutEngine`      approximate (vLLM's kernels)
============  =========================================  ==========================================

Ray and vLLM are imported only when their engine is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from transformers import PreTrainedModel

from rlft.rollout.sampling import sample
from rlft.types import Rollout

if TYPE_CHECKING:
    from rlft.config import RecipeConfig


@runtime_checkable
class RolloutEngine(Protocol):
    """What the loop needs of a generation engine."""

    logprobs_are_policys: bool
    """The rollout's log-probs are the learner policy's own (sampled by that very model in this
    process): the collector need not score the rollout again to get them."""
    approximate_logprobs: bool
    """The log-probs come from other kernels or another precision than the learner's (bf16,
    vLLM): the loss corrects the mismatch with truncated importance weights."""

    def sample(
        self,
        policy: PreTrainedModel,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        **kwargs: Any,
    ) -> Rollout:
        """:func:`rlft.rollout.sampling.sample`'s arguments and result; ``policy`` is the
        learner's model (an engine holding its own copy samples from that copy)."""
        ...

    def push_weights(self, policy: torch.nn.Module) -> int:
        """Make the engine sample from ``policy``'s current weights; returns the weights version."""
        ...

    def metrics(self) -> dict[str, float]:
        """The engine's counters for the step's metrics line (may be empty)."""
        ...


class LocalSampler:
    """rlft's own KV-cache sampler run on the learner's policy in this process (the default)."""

    logprobs_are_policys = True
    approximate_logprobs = False

    def sample(
        self,
        policy: PreTrainedModel,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        **kwargs: Any,
    ) -> Rollout:
        return sample(policy, prompt_ids, prompt_mask, **kwargs)

    def push_weights(self, policy: torch.nn.Module) -> int:
        """Nothing to copy: the sampler reads the learner's weights themselves."""
        return 0

    def metrics(self) -> dict[str, float]:
        return {}


def _local(config: RecipeConfig, policy: PreTrainedModel) -> RolloutEngine:
    return LocalSampler()


def _bfloat16(config: RecipeConfig, policy: PreTrainedModel) -> RolloutEngine:
    from rlft.rollout.low_precision import LowPrecisionSampler

    return LowPrecisionSampler(policy)


def _ray(config: RecipeConfig, policy: PreTrainedModel) -> RolloutEngine:
    from rlft.rollout.ray_engine import RayRolloutEngine

    dist = config.distributed
    return RayRolloutEngine(policy, dist.rollout_workers, dist.address)


def _vllm(config: RecipeConfig, policy: PreTrainedModel) -> RolloutEngine:
    from rlft.rollout.vllm_engine import VLLMRolloutEngine

    # rollout.vllm's settings, the policy's folder (vLLM's architecture) and device (vLLM's GPU).
    engine = VLLMRolloutEngine.for_recipe(config, policy)
    engine.push_weights(policy)  # the folder holds the weights from before the warm start
    engine.sleep()  # the GPU is the learner's until the first generation
    return engine


ROLLOUT_ENGINES: dict[str, Callable[[RecipeConfig, PreTrainedModel], RolloutEngine]] = {
    "local": _local,
    "bfloat16": _bfloat16,
    "ray": _ray,
    "vllm": _vllm,
}
"""Engine name -> builder ``(config, policy) -> engine``."""


def engine_name(config: RecipeConfig) -> str:
    """The engine a recipe asks for: ``distributed.engine: ray``, else ``rollout.backend: vllm``,
    else ``rollout.dtype: bfloat16``, else the local sampler."""
    if config.distributed.engine == "ray":
        return "ray"
    if config.rollout.backend == "vllm":
        return "vllm"
    if config.rollout.dtype == "bfloat16":
        return "bfloat16"
    return "local"


def build_rollout_engine(config: RecipeConfig, policy: PreTrainedModel) -> RolloutEngine:
    """The recipe's rollout engine, holding ``policy``'s current weights."""
    return ROLLOUT_ENGINES[engine_name(config)](config, policy)

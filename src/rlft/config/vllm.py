"""The ``rollout.vllm`` section: vLLM colocated with the learner (``rollout.backend: vllm``), and the
checks of a recipe that uses it. Kept apart from ``sections.py`` (which holds the other sections)
so that the checks sit beside the fields they read; nothing here imports torch or vLLM."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from rlft.errors import ConfigError
from rlft.schema import setting


@dataclass(frozen=True)
class VLLMConfig:
    """vLLM in the learner's process, on the learner's GPU (``rollout.backend: vllm``;
    docs/distributed.md#vllm-colocated-with-the-learner)."""

    gpu_memory_utilization: float = setting(
        0.3,
        "Share of the whole GPU's memory vLLM takes (its weights plus its KV cache); the learner keeps the rest. "
        "With sleep on, vLLM gives it back during the update.",
        gt=0, lt=1,
    )
    max_model_len: int | None = setting(
        None,
        "Longest sequence vLLM serves (prompt + completion), in tokens; it sizes the KV cache. Empty: "
        "rollout.max_prompt_tokens + rollout.max_new_tokens rounded up to vLLM's block of 16 tokens, or the "
        "model's context window when max_prompt_tokens is empty.",
        ge=16,
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = setting(
        "auto",
        "vLLM's weights and the dtype of the weight push: auto is bfloat16 on a GPU (the learner may stay "
        "float32: each tensor is cast as it is pushed).",
    )
    sleep: Literal["auto"] | bool = setting(
        "auto",
        "Put vLLM to sleep after each generation, so the update has the GPU (its KV cache freed, its weights "
        "offloaded or dropped, see sleep_level); woken before the next push and generation. auto: on when the "
        "learner shares vLLM's GPU, which is always the case for now.",
    )
    sleep_level: int = setting(
        1,
        "1: the weights wait in CPU memory while vLLM sleeps (vLLM's default; costs CPU memory the size of "
        "the model). 2: they are dropped and every wake-up is followed by a full push of the learner's weights "
        "(no CPU copy; needs a vLLM that restores its buffers after a level-2 sleep).",
        ge=1, le=2,
    )
    tensor_parallel_size: int = setting(
        1,
        "GPUs one vLLM engine spans. Only 1 for now: the engine runs inside the one learner process.",
        ge=1,
    )
    max_logprob_gap: float | None = setting(
        0.1,
        "Stop the run when the mean |vLLM - learner| log-prob of a step's tokens (rollout/sampler_logprob_gap) "
        "exceeds this many nats: vLLM is then sampling from other weights than the learner's, e.g. a weight "
        "push that did not land. Healthy runs measure about 0.01-0.02; null turns the check off.",
        gt=0,
    )


def check_vllm_recipe(config: Any) -> None:
    """The cross-field checks of ``rollout.vllm`` and ``rollout.backend: vllm`` that do not need a GPU
    (``config`` is a resolved :class:`rlft.config.RecipeConfig`)."""
    rollout = config.rollout
    if rollout.backend != "vllm":
        if rollout.vllm != VLLMConfig():
            changed = [f.name for f in dataclasses.fields(VLLMConfig)
                       if getattr(rollout.vllm, f.name) != getattr(VLLMConfig(), f.name)]
            raise ConfigError(
                f"rollout.vllm.{changed[0]} is set, but rollout.backend={rollout.backend!r} does not read the "
                "rollout.vllm section. Set rollout.backend: vllm, or remove rollout.vllm."
            )
        return
    vllm = rollout.vllm
    if config.train.device == "cpu":
        raise ConfigError(
            "rollout.backend='vllm' runs vLLM on the learner's GPU, but train.device='cpu'. Set train.device: auto "
            "(or cuda), or use rollout.backend: hf on the CPU."
        )
    if vllm.tensor_parallel_size != 1:
        raise ConfigError(
            f"rollout.vllm.tensor_parallel_size={vllm.tensor_parallel_size}: vLLM runs inside the learner's one "
            "process, on its one GPU, so it cannot span several GPUs yet. Set rollout.vllm.tensor_parallel_size: 1."
        )
    longest = (rollout.max_prompt_tokens or 1) + rollout.max_new_tokens
    if vllm.max_model_len is not None and vllm.max_model_len < longest:
        raise ConfigError(
            f"rollout.vllm.max_model_len={vllm.max_model_len} is shorter than a prompt plus "
            f"rollout.max_new_tokens={rollout.max_new_tokens} (at least {longest} tokens"
            f"{' with rollout.max_prompt_tokens=' + str(rollout.max_prompt_tokens) if rollout.max_prompt_tokens else ''})"
            f". Raise it to {-(-longest // 16) * 16} or more, or leave it empty."
        )


def check_vllm_ranks(config: Any, world: int) -> None:
    """At run start: vLLM beside a learner of several processes (ddp, fsdp) is refused with the reason."""
    if config.rollout.backend == "vllm" and world > 1:
        raise ConfigError(
            f"rollout.backend='vllm' with {world} learner processes is not supported yet: each rank would need "
            "its own vLLM engine on its own GPU, with its own share of memory, and rlft builds one engine in one "
            "process. Train in one process (no torchrun) with vLLM, or use rollout.backend: hf under torchrun."
        )

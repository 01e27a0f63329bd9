"""vLLM as the generation engine (``rollout: {backend: vllm}``), colocated with the learner.

vLLM runs inside the learner's process, on the learner's GPU, as TRL's ``vllm_mode="colocate"``
runs it: ``distributed_executor_backend="external_launcher"``, which keeps vLLM's engine core and
its one worker in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the learner reaches the
worker's model directly and pushes its weights tensor by tensor
(:mod:`rlft.rollout.vllm_weights`), never pickling a state dict. ``rollout.vllm``
(:class:`rlft.config.vllm.VLLMConfig`) sets vLLM's share of the GPU, its dtype and sleep mode.

With sleep on, vLLM hands its memory back to the learner between generations. One step:

    push_weights: wake_up(weights) -> load_weights(...) -> reset_prefix_cache()
    sample:       wake_up(kv_cache) -> generate(...) -> sleep(level)

Level 1 keeps the weights in CPU memory while asleep; level 2 drops them, so the next wake-up is
always followed by a full push (``sample`` pushes from the policy it is handed when no push came
first: it never samples from dropped weights, nor reloads the base checkpoint from disk, the
failure of TRL issue 5312).

vLLM's kernels (and its dtype) are not the learner's, so the log-probabilities it reports differ
slightly from the learner's for the same weights: the loop corrects with truncated importance
weights (Yao, Liu et al., 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
Training") and :func:`rlft.rollout.vllm_weights.check_sampler_logprob_gap` stops a run whose gap says the push did not land.

Unverified on a GPU: nothing of vLLM has run in this project's CI or sessions yet.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import torch

from rlft.config.vllm import VLLMConfig
from rlft.errors import RlftError
from rlft.rollout.vllm_weights import PushStats, check_all_loaded, lora_merge_refusal, push_weights
from rlft.types import Rollout

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
BLOCK = 16  # vLLM's default KV-cache block, in tokens


def vllm_available() -> tuple[bool, str]:
    """(usable, reason): vLLM needs a CUDA GPU and the ``vllm`` package."""
    if not torch.cuda.is_available():
        return False, "vLLM needs a CUDA GPU and none is visible"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False, "the vllm package is not installed (pip install vllm)"
    return True, ""


def vllm_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``rollout.vllm.dtype`` as a torch dtype: auto is bfloat16 on a GPU (float32 elsewhere)."""
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[spec]


def vllm_max_model_len(
    max_model_len: int | None, max_prompt_tokens: int | None, max_new_tokens: int, context_length: int
) -> int:
    """vLLM's ``max_model_len``: the recipe's, else prompt + completion rounded up to a whole KV
    block (never past the model's context window), else the context window."""
    if max_model_len is not None:
        if max_model_len > context_length:
            raise RlftError(
                f"rollout.vllm.max_model_len={max_model_len} is longer than the model's context window "
                f"({context_length} tokens). Lower it, or leave it empty."
            )
        return max_model_len
    if max_prompt_tokens is None:
        return context_length
    return min(-(-(max_prompt_tokens + max_new_tokens) // BLOCK) * BLOCK, context_length)


def sleep_on(spec: str | bool, colocated: bool = True) -> bool:
    """``rollout.vllm.sleep``: auto sleeps when the learner shares vLLM's GPU (always, for now)."""
    return colocated if spec == "auto" else bool(spec)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launcher_env(device: torch.device) -> None:
    """The variables vLLM's external launcher reads, for a learner of one process (torchrun sets
    them otherwise): vLLM's one worker is rank 0 of 1, on the learner's GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RlftError(
            "rollout.backend=vllm under torchrun with several processes is not supported yet: each rank would "
            "need its own engine and share of memory. Train in one process, or use rollout.backend: hf."
        )
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": str(device.index or 0)})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the worker's model in this process


def build_llm(model_path: str, settings: VLLMConfig, dtype: torch.dtype, max_model_len: int, seed: int,
              device: torch.device) -> Any:
    """vLLM's ``LLM``, colocated: in this process, on ``device``, sleep mode as ``settings`` say."""
    ok, reason = vllm_available()
    if not ok:
        raise RlftError(f"rollout.backend=vllm: {reason}. Use rollout.backend: hf on this machine.")
    _launcher_env(device)
    from vllm import LLM

    return LLM(
        model=model_path,
        dtype=str(dtype).removeprefix("torch."),
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=max_model_len,
        tensor_parallel_size=settings.tensor_parallel_size,
        enable_sleep_mode=sleep_on(settings.sleep),
        distributed_executor_backend="external_launcher",
        seed=seed,
        enable_prefix_caching=True,
        # The sampled tokens' log-probs after temperature (and top-p), as the learner scores them;
        # vLLM's default is the raw model's (TRL does the same; vLLM >= 0.10.2).
        logprobs_mode="processed_logprobs",
        # TRL's setting: vLLM's memory profiler overestimates activations with the default budget.
        max_num_batched_tokens=4096,
    )


def worker_model(llm: Any) -> Any:
    """The model of vLLM's worker in this process (``load_weights`` takes checkpoint-named tensors)."""
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner.model


class VLLMRolloutEngine:
    """Generation with vLLM colocated with the learner; the learner's weights are pushed after each
    update. A :class:`rlft.rollout.engine.RolloutEngine` (``rollout.backend: vllm``).

    ``llm`` injects an engine object instead of building vLLM's ``LLM`` (tests: a stand-in that
    records the calls); otherwise ``model_path`` is the folder vLLM builds its architecture from.
    """

    logprobs_are_policys = False
    approximate_logprobs = True  # the loop corrects with truncated importance weights

    def __init__(
        self,
        model_path: str,
        settings: VLLMConfig | None = None,
        *,
        device: torch.device | str = "cuda",
        seed: int = 0,
        max_model_len: int = 2048,
        llm: Any = None,
    ) -> None:
        self.settings = settings or VLLMConfig()
        self.device = torch.device(device)
        self.dtype = vllm_dtype(self.settings.dtype, self.device)
        self.sleep_level = self.settings.sleep_level if sleep_on(self.settings.sleep) else 0
        self.llm = llm if llm is not None else build_llm(
            model_path, self.settings, self.dtype, max_model_len, seed, self.device
        )
        self.weights_asleep = self.kv_asleep = False
        self.dropped = False  # a level-2 sleep dropped the weights: only a full push brings them back
        self.version = 0
        self.last_push = PushStats(0, 0, 0.0)

    @classmethod
    def for_recipe(cls, config: Any, policy: torch.nn.Module, llm: Any = None) -> VLLMRolloutEngine:
        """The engine of a recipe, beside ``policy`` on its device, from the folder it was loaded
        from; refused before vLLM is built when ``policy``'s LoRA cannot be merged."""
        reason = lora_merge_refusal(policy)
        if reason:
            raise RlftError(
                f"rollout.backend=vllm with lora.r={config.lora.r}: {reason}. Use rollout.backend: hf, or lora.r: 0."
            )
        rollout = config.rollout
        context = int(getattr(policy.config, "max_position_embeddings", 0) or 2048)
        length = vllm_max_model_len(rollout.vllm.max_model_len, rollout.max_prompt_tokens,
                                    rollout.max_new_tokens, context)
        return cls(str(policy.name_or_path), rollout.vllm, device=next(policy.parameters()).device,
                   seed=config.seed, max_model_len=length, llm=llm)

    def push_weights(self, policy: torch.nn.Module) -> int:
        """Load ``policy``'s current weights into vLLM (woken first); returns the weights version."""
        if self.weights_asleep:
            self._empty_cache()
            self.llm.wake_up(tags=["weights"])
            self.weights_asleep = False
        model = worker_model(self.llm)
        expected = {name for name, _ in model.named_parameters()}
        loaded: list[Any] = []
        self.last_push = push_weights(lambda weights: loaded.append(model.load_weights(weights)), policy,
                                      self.dtype)
        check_all_loaded(expected, loaded[0])
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self.dropped = False
        self.version += 1
        return self.version

    def sync_weights(self, policy: torch.nn.Module) -> int:
        """Another name for :meth:`push_weights`."""
        return self.push_weights(policy)

    def sleep(self) -> None:
        """Free vLLM's GPU memory until the next push or generation (no-op with sleep off)."""
        if self.sleep_level and not (self.weights_asleep and self.kv_asleep):
            self.llm.sleep(level=self.sleep_level)
            self.weights_asleep = self.kv_asleep = True
            self.dropped = self.sleep_level == 2

    def wake_for_generation(self, policy: torch.nn.Module | None) -> None:
        """Weights that hold the last push (pushing ``policy`` again when a level-2 sleep dropped
        them), then the KV cache."""
        if self.weights_asleep and self.dropped:
            if policy is None:
                raise RlftError("vLLM's weights were dropped by a level-2 sleep and no policy was given to push.")
            self.push_weights(policy)
        elif self.weights_asleep:
            self._empty_cache()
            self.llm.wake_up(tags=["weights"])
            self.weights_asleep = False
        if self.kv_asleep:
            self._empty_cache()
            self.llm.wake_up(tags=["kv_cache"])
            self.kv_asleep = False

    def sample(
        self,
        model: torch.nn.Module | None,
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
        **_: Any,
    ) -> Rollout:
        """:func:`rlft.rollout.sampling.sample` with vLLM; ``logprobs`` are vLLM's (after temperature).

        Each row gets its own seed, drawn from ``generator``, so the G copies of a prompt in a group
        are sampled independently and a step is reproducible.
        """
        from vllm import SamplingParams

        base = 0
        if generator is not None:
            base = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        params = [
            SamplingParams(temperature=0.0 if greedy else temperature, top_p=top_p, max_tokens=max_new_tokens,
                           logprobs=0, seed=(base + row) % (2**31 - 1), stop_token_ids=[eos_token_id], detokenize=False)
            for row in range(len(prompt_ids))
        ]
        prompts = [{"prompt_token_ids": ids[m.bool()].tolist()} for ids, m in zip(prompt_ids, prompt_mask, strict=True)]
        self.wake_for_generation(model)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self.sleep()
        ids, mask, logprobs = completions_from_outputs(outputs, pad_token_id)
        to = self.device
        return Rollout(prompt_ids.to(to), prompt_mask.to(to), ids.to(to), mask.to(to), logprobs.to(to))

    def metrics(self) -> dict[str, float]:
        return {
            "distributed/weights_version": float(self.version),
            "perf/weight_sync_s": self.last_push.seconds,
            "rollout/weight_push_mib": self.last_push.mib,
        }

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the learner's cached blocks, before vLLM maps its memory again


def completions_from_outputs(outputs: list[Any], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """vLLM's ``RequestOutput`` list -> (completion_ids (B, T), completion_mask (B, T), logprobs
    (B, T)), right-padded to the longest completion; each token's log-prob is the sampled one's."""
    rows = [out.outputs[0] for out in outputs]
    length = max((len(c.token_ids) for c in rows), default=0)
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length)
    logprobs = torch.zeros(len(rows), length)
    for row, completion in enumerate(rows):
        n = len(completion.token_ids)
        ids[row, :n] = torch.tensor(list(completion.token_ids), dtype=torch.long)
        mask[row, :n] = 1.0
        logprobs[row, :n] = torch.tensor(
            [lp[t].logprob for lp, t in zip(completion.logprobs, completion.token_ids, strict=True)]
        )
    return ids, mask, logprobs

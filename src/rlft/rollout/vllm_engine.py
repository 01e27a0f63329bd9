"""vLLM as the GPU generation engine (``rollout: {backend: vllm}``), imported lazily.

vLLM samples the completions; the learner's weights are loaded into the engine before every
rollout (:meth:`VLLMRolloutEngine.sync_weights`). The engine's kernels (and its precision) are not
the trainer's, so the log-probabilities it reports for a token differ from the trainer's for the
same weights: the rollout is slightly off-policy. :func:`rlft.algorithms.importance.truncated_importance_weights` corrects
for it the way recent RL-for-LLM systems do (truncated importance sampling, "TIS": Yao, Liu et
al., 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"): each
token's policy-gradient term is multiplied by ``min(pi_trainer / pi_engine, C)``.
"""

from __future__ import annotations

from typing import Any

import torch

from rlft.errors import RlftError
from rlft.types import Rollout


def vllm_available() -> tuple[bool, str]:
    """(usable, reason): vLLM needs a CUDA GPU and the ``vllm`` package."""
    if not torch.cuda.is_available():
        return False, "vLLM needs a CUDA GPU and none is visible"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False, "the vllm package is not installed (pip install vllm)"
    return True, ""


class VLLMRolloutEngine:
    """Generation with vLLM, weights synced from the learner before each rollout. A
    :class:`rlft.rollout.engine.RolloutEngine` (``rollout.backend: vllm``).

    ``model_path`` is the folder the policy was loaded from (vLLM builds its own copy of the
    architecture from it); ``gpu_memory_utilization`` leaves the rest of the GPU to the learner.
    """

    logprobs_are_policys = False
    approximate_logprobs = True  # the loop corrects with truncated importance weights

    def __init__(
        self, model_path: str, gpu_memory_utilization: float = 0.3, seed: int = 0, **llm_kwargs: Any
    ) -> None:
        ok, reason = vllm_available()
        if not ok:
            raise RlftError(
                f"rollout.backend=vllm: {reason}. Use rollout.backend=hf on this machine."
            )
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            enable_prefix_caching=True,
            **llm_kwargs,
        )
        self.version = 0

    def sync_weights(self, policy: torch.nn.Module) -> int:
        """Load the learner's current weights into the engine (every step)."""
        state = [(k, v.detach()) for k, v in policy.state_dict().items()]

        def load(worker: Any) -> None:  # runs inside the vLLM worker process
            worker.model_runner.model.load_weights(weights=state)

        self.llm.collective_rpc(load)
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self.version += 1
        return self.version

    def push_weights(self, policy: torch.nn.Module) -> int:
        """The rollout-engine protocol's name for :meth:`sync_weights`."""
        return self.sync_weights(policy)

    def metrics(self) -> dict[str, float]:
        return {"distributed/weights_version": float(self.version)}

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
        """:func:`rlft.rollout.sampling.sample` with vLLM; ``logprobs`` are the engine's."""
        from vllm import SamplingParams, TokensPrompt

        seed = (
            int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            if generator is not None
            else None
        )
        params = SamplingParams(
            temperature=0.0 if greedy else temperature,
            top_p=top_p,
            max_tokens=max_new_tokens,
            logprobs=0,
            seed=seed,
            stop_token_ids=[eos_token_id],
        )
        prompts = [
            TokensPrompt(prompt_token_ids=ids[m.bool()].tolist())
            for ids, m in zip(prompt_ids, prompt_mask, strict=True)
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        length = max(len(o.outputs[0].token_ids) for o in outputs)
        batch = len(outputs)
        ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(batch, length)
        mask = torch.zeros(batch, length)
        for row, out in enumerate(outputs):
            completion = out.outputs[0]
            n = len(completion.token_ids)
            ids[row, :n] = torch.tensor(completion.token_ids)
            mask[row, :n] = 1.0
            logprobs[row, :n] = torch.tensor(
                [
                    lp[t].logprob
                    for lp, t in zip(completion.logprobs, completion.token_ids, strict=True)
                ]
            )
        return Rollout(prompt_ids, prompt_mask, ids, mask, logprobs)

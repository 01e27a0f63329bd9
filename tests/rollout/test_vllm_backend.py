"""vLLM backend: the truncated importance-sampling correction (hand values, everywhere) and the
engine itself (only with a CUDA GPU and vllm installed; skipped with the reason otherwise; the push
and the sleep/wake order are tested without vLLM in test_vllm_push.py)."""

import math

import pytest
import torch

from rlft.algorithms.importance import truncated_importance_weights
from rlft.rollout.vllm_engine import vllm_available


def test_truncated_importance_weights_hand_values():
    trainer = torch.tensor([[math.log(0.5), math.log(0.9), math.log(0.3)]])
    engine = torch.tensor([[math.log(0.25), math.log(0.9), math.log(0.6)]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # ratios 2.0, 1.0, 0.5 -> capped at 1.5 -> masked
    w = truncated_importance_weights(trainer, engine, mask, cap=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 1.0, 0.0]]))
    assert not w.requires_grad
    w = truncated_importance_weights(trainer, engine, torch.ones(1, 3), cap=10.0)
    assert torch.allclose(w, torch.tensor([[2.0, 1.0, 0.5]]))  # below the cap: the exact ratio
    with pytest.raises(ValueError):
        truncated_importance_weights(trainer, engine, mask, cap=0.0)


def test_weights_are_one_when_engine_and_trainer_agree():
    lp = torch.log(torch.rand(4, 6).clamp(min=1e-3))
    assert torch.allclose(truncated_importance_weights(lp, lp, torch.ones(4, 6)), torch.ones(4, 6))


OK, REASON = vllm_available()


@pytest.mark.gpu
@pytest.mark.skipif(not OK, reason=REASON)
def test_vllm_samples_and_matches_trainer_logprobs(tiny_model_dir):
    from rlft.config import VLLMConfig
    from rlft.models.loading import load_policy
    from rlft.models.tokens import encode_prompts
    from rlft.rollout.sampling import score_completions
    from rlft.rollout.vllm_engine import VLLMRolloutEngine

    policy, tok = load_policy(str(tiny_model_dir))
    policy.to("cuda:0")
    engine = VLLMRolloutEngine(str(tiny_model_dir), VLLMConfig(gpu_memory_utilization=0.2), device="cuda:0",
                               max_model_len=512)
    engine.push_weights(policy)
    ids, mask = encode_prompts(tok, ["1+2=", "33+44="])
    ids, mask = ids.to("cuda:0"), mask.to("cuda:0")
    rollout = engine.sample(
        policy,
        ids,
        mask,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert rollout.completion_ids.device == policy.device
    with torch.no_grad():
        trainer, _, _ = score_completions(policy, rollout)
    w = truncated_importance_weights(trainer, rollout.logprobs, rollout.completion_mask)
    assert torch.allclose(trainer, rollout.logprobs, atol=5e-2)
    assert (w[rollout.completion_mask.bool()] > 0.5).all()

"""``rollout.vllm``: its fields, and the recipes refused with the reason (on any machine: these
checks come before the one that needs a GPU)."""

import pytest

from rlft.config import ConfigError, VLLMConfig, config_from_dict
from rlft.config.vllm import check_vllm_ranks


def refusal(*overrides):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({}, list(overrides))
    return str(caught.value)


def test_defaults():
    vllm = config_from_dict({}).rollout.vllm
    assert vllm == VLLMConfig()
    assert (vllm.gpu_memory_utilization, vllm.max_model_len, vllm.dtype, vllm.sleep, vllm.sleep_level) == (
        0.3, None, "auto", "auto", 1,
    )
    assert (vllm.tensor_parallel_size, vllm.max_logprob_gap) == (1, 0.1)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("rollout.vllm.gpu_memory_utilization=1.0", "rollout.vllm.gpu_memory_utilization=1.0 is out of range"),
        ("rollout.vllm.sleep=maybe", "expected 'auto' or bool"),
        ("rollout.vllm.sleep_level=3", "rollout.vllm.sleep_level=3 is out of range; it must be <= 2"),
        ("rollout.vllm.dtype=fp8", "choose one of 'auto' | 'bfloat16' | 'float16' | 'float32'"),
        ("rollout.vllm.max_logprob_gap=0", "rollout.vllm.max_logprob_gap=0"),
        ("rollout.vllm.gpu_memory_utilisation=0.5", "Did you mean 'rollout.vllm.gpu_memory_utilization'"),
    ],
)
def test_bad_values_name_the_field(override, words):
    assert words in refusal("rollout.backend=vllm", override)


def test_the_section_is_refused_when_vllm_is_not_the_backend():
    message = refusal("rollout.vllm.sleep=false")
    assert "rollout.vllm.sleep is set, but rollout.backend='hf'" in message
    assert "Set rollout.backend: vllm, or remove rollout.vllm" in message


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["train.device=cpu"], "train.device='cpu'. Set train.device: auto"),
        (["rollout.vllm.tensor_parallel_size=2"], "Set rollout.vllm.tensor_parallel_size: 1"),
        (["rollout.max_prompt_tokens=100", "rollout.max_new_tokens=24", "rollout.vllm.max_model_len=64"],
         "shorter than a prompt plus rollout.max_new_tokens=24 (at least 124 tokens with rollout.max_prompt_tokens=100)"
         ". Raise it to 128"),
        (["distributed.engine=ray"], "vLLM runs in the learner's process, on the learner's GPU (colocated)"),
    ],
)
def test_combinations_refused_with_the_fix(overrides, words):
    assert words in refusal("rollout.backend=vllm", *overrides)


def test_a_valid_vllm_recipe_reaches_the_gpu_check():
    """On this CPU-only machine the last refusal is the missing GPU, not one of the checks above."""
    message = refusal("rollout.backend=vllm", "rollout.vllm.sleep=false", "rollout.vllm.sleep_level=2",
                      "rollout.vllm.max_model_len=256", "lora.r=4")
    assert "needs a CUDA GPU" in message


def test_several_learner_processes_are_refused_at_run_start():
    hf = config_from_dict({})
    check_vllm_ranks(hf, 4)
    vllm = hf.__class__(rollout=hf.rollout.__class__(backend="vllm"))
    check_vllm_ranks(vllm, 1)
    with pytest.raises(ConfigError, match="with 2 learner processes is not supported yet: each rank would need its own"):
        check_vllm_ranks(vllm, 2)

"""LoRA: only adapter weights train, the reference is the base with the adapter off, and the
exported merged model loads in plain transformers and generates what the adapter model does."""

import pytest
import torch

pytest.importorskip("peft")

from transformers import AutoModelForCausalLM  # noqa: E402

from rlft.cli.main import main  # noqa: E402
from rlft.models.loading import load_policy  # noqa: E402
from rlft.models.lora import apply_lora, lora_reference, save_adapter, trainable_parameter_names  # noqa: E402
from rlft.models.tokens import encode_prompts  # noqa: E402
from rlft.rollout.sampling import sample, score_completions  # noqa: E402


def _greedy(model, tok, prompts):
    ids, mask = encode_prompts(tok, prompts)
    return sample(
        model,
        ids,
        mask,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=6,
        greedy=True,
    )


def _train_a_few_steps(policy, tok):
    rollout = _greedy(policy, tok, ["1+2=", "33+4="])
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=5e-2)
    policy.train()
    for _ in range(3):
        logprobs, _, _ = score_completions(policy, rollout)
        loss = -(logprobs * rollout.completion_mask).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()


@pytest.mark.slow
def test_lora_trains_only_adapter_and_reference_is_the_base(tiny_model_dir):
    base, tok = load_policy(str(tiny_model_dir))
    policy = apply_lora(base, r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    assert trainable_parameter_names(policy) and all(
        "lora_" in n for n in trainable_parameter_names(policy)
    )
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" not in n}
    reference = lora_reference(policy)
    before = _greedy(policy, tok, ["1+2=", "33+4="])
    with torch.no_grad():
        ref_before, _, _ = score_completions(reference, before)
    _train_a_few_steps(policy, tok)
    changed = [
        n
        for n, p in policy.named_parameters()
        if "lora_" not in n and not torch.equal(p, frozen[n])
    ]
    assert changed == []  # only adapter weights moved
    with torch.no_grad():
        ref_after, _, _ = score_completions(reference, before)
        policy_after, _, _ = score_completions(policy, before)
    assert torch.allclose(ref_before, ref_after, atol=1e-6)  # the reference did not move
    assert not torch.allclose(policy_after, ref_after, atol=1e-3)  # the policy did
    assert policy.training is False and not any(p.requires_grad for p in reference.parameters())


@pytest.mark.slow
def test_exported_merged_model_generates_like_the_adapter_model(tiny_model_dir, tmp_path):
    base, tok = load_policy(str(tiny_model_dir))
    policy = apply_lora(base, r=4, alpha=8)
    _train_a_few_steps(policy, tok)
    save_adapter(policy, tmp_path / "run" / "final_model", base_model=tiny_model_dir)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "plain")]) == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "plain")
    assert not hasattr(plain, "peft_config")
    prompts = ["1+2=", "33+4=", "12+30="]
    expected, got = _greedy(policy, tok, prompts), _greedy(plain, tok, prompts)
    assert torch.equal(expected.completion_ids, got.completion_ids)
    with torch.no_grad():
        a, _, _ = score_completions(policy, expected)
        b, _, _ = score_completions(plain, expected)
    assert torch.allclose(a, b, atol=1e-4)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "plain")]) == 2  # not empty


def test_lora_policy_decodes_through_the_fast_path_with_its_adapter(tiny_model_dir):
    policy = apply_lora(load_policy(str(tiny_model_dir))[0], r=4, alpha=8)
    _, tok = load_policy(str(tiny_model_dir))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a non-trivial adapter
    policy.eval()
    ids, mask = encode_prompts(tok, ["1+2=", "33+44="])
    kw = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_new_tokens=8)
    fast = sample(policy, ids, mask, generator=torch.Generator().manual_seed(1), **kw)
    generic = sample(
        policy, ids, mask, generator=torch.Generator().manual_seed(1), fast_decode=False, **kw
    )
    assert torch.equal(fast.completion_ids, generic.completion_ids)
    with torch.no_grad():
        full, _, _ = score_completions(policy, fast)
    assert torch.allclose(full, fast.logprobs, atol=1e-5)

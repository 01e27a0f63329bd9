"""The fast rollout path against naive references: dropping finished rows changes nothing,
chunked log-softmax equals the plain one, and scoring only completion positions is exact."""

import torch

from rlft.algorithms.logprobs import entropy_from_logits
from rlft.models.loading import load_policy
from rlft.models.tokens import encode_prompts
from rlft.rollout.sampling import chunked_logprobs, sample, score_completions

PROMPTS = ["1+2=", "33+44=", "9+9=", "12+3=", "40+41=", "7+0="]


def _rollout(model, tok, compact_below, seed=0):
    ids, mask = encode_prompts(tok, PROMPTS)
    return sample(
        model,
        ids,
        mask,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=12,
        generator=torch.Generator().manual_seed(seed),
        compact_below=compact_below,
    )


def test_dropping_finished_rows_does_not_change_samples(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    # Make EOS likely enough that rows finish at different steps.
    model.lm_head.register_forward_hook(
        lambda m, i, out: out.index_add_(
            -1, torch.tensor([tok.eos_token_id]), torch.full(out.shape[:-1] + (1,), 3.5)
        )
    )
    never = _rollout(model, tok, compact_below=0.0)
    always = _rollout(model, tok, compact_below=1.0)  # drop rows as soon as any finishes
    lengths = never.completion_mask.sum(-1)
    assert lengths.min() < lengths.max()  # the test exercises rows finishing at different steps
    assert torch.equal(never.completion_ids, always.completion_ids)
    assert torch.equal(never.completion_mask, always.completion_mask)
    assert torch.allclose(never.logprobs, always.logprobs, atol=1e-5)
    # Recorded logprobs still match one full forward pass after the cache was compacted.
    with torch.no_grad():
        full, _, _ = score_completions(model, always)
    assert torch.allclose(full, always.logprobs, atol=1e-5)


def test_rollout_tensors_can_be_used_in_autograd(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    rollout = _rollout(model, tok, compact_below=0.75)
    assert not rollout.completion_ids.is_inference()
    logprobs, _, _ = score_completions(model, rollout)
    (logprobs * rollout.completion_mask).sum().backward()  # would raise on inference tensors
    assert model.lm_head.weight.grad is not None


def test_chunked_logprobs_match_naive_log_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=gen)
    tokens = torch.randint(0, 11, (3, 7), generator=gen)
    logprobs, entropy = chunked_logprobs(
        logits, tokens, temperature=0.7, with_entropy=True, chunk_tokens=4
    )
    naive = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None]).squeeze(-1)
    assert torch.allclose(logprobs, naive, atol=1e-6)
    assert torch.allclose(entropy, entropy_from_logits(logits / 0.7), atol=1e-6)


def test_scoring_without_grad_equals_scoring_with_grad(tiny_model_dir):
    """The chunked no-grad path and the autograd path give the same numbers."""
    model, tok = load_policy(str(tiny_model_dir))
    rollout = _rollout(model, tok, compact_below=0.75, seed=3)
    with_grad, ent_grad, _ = score_completions(model, rollout, 0.8, with_entropy=True)
    with torch.no_grad():
        no_grad, ent_no_grad, _ = score_completions(model, rollout, 0.8, with_entropy=True)
    assert torch.allclose(with_grad.detach(), no_grad, atol=1e-6)
    assert torch.allclose(ent_grad, ent_no_grad, atol=1e-6)


def test_sampling_draws_the_same_tokens_as_multinomial():
    from rlft.rollout.sampling import _sample_token

    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(8, 50) * 3
        expected = torch.multinomial((logits / 0.7).softmax(-1), 1, generator=g1).squeeze(-1)
        noise = torch.empty(8, 50).exponential_(generator=g2)
        token, logp = _sample_token(logits, noise, 0.7, 1.0, greedy=False)
        assert torch.equal(token, expected)
        naive = torch.log_softmax(logits / 0.7, -1).gather(-1, token[:, None]).squeeze(-1)
        assert torch.allclose(logp, naive, atol=1e-5)


def test_static_kv_decoder_matches_the_models_own_forward(tiny_model_dir):
    from rlft.rollout import sampling

    model, tok = load_policy(str(tiny_model_dir))
    calls = []
    original = sampling._StaticKVDecoder.step
    sampling._StaticKVDecoder.step = lambda self, *a: calls.append(1) or original(self, *a)
    try:
        ids, mask = encode_prompts(tok, PROMPTS)
        kw = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_new_tokens=10)
        fast = sample(model, ids, mask, generator=torch.Generator().manual_seed(4), **kw)
        generic = sample(
            model, ids, mask, generator=torch.Generator().manual_seed(4), fast_decode=False, **kw
        )
    finally:
        sampling._StaticKVDecoder.step = original
    assert calls  # the fast path ran
    assert torch.equal(fast.completion_ids, generic.completion_ids)
    assert torch.allclose(fast.logprobs, generic.logprobs, atol=1e-5)


def _grouped_rollout(model, tok, group=4):
    prompts = [p for p in PROMPTS[:3] for _ in range(group)]  # mixed prompt lengths, left padding
    ids, mask = encode_prompts(tok, prompts)
    return sample(model, ids, mask, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  max_new_tokens=10, generator=torch.Generator().manual_seed(1))


def test_shared_prompt_pass_gives_the_numbers_and_gradients_of_full_passes(tiny_model_dir):
    """A prompt repeated in a group runs once; log-probs, entropy, values and gradients are those
    of one pass per row over prompt + completion."""
    model, tok = load_policy(str(tiny_model_dir))
    rollout = _grouped_rollout(model, tok)
    head = torch.nn.Linear(model.config.hidden_size, 1)

    def value_head(hidden):
        return head(hidden).squeeze(-1)

    results = {}
    for share in (True, False):
        model.zero_grad()
        head.zero_grad()
        logprobs, entropy, values = score_completions(model, rollout, 0.9, True, value_head, share_prompts=share)
        (logprobs.sum() + values.sum()).backward()
        grads = [p.grad.clone() for p in model.parameters()] + [head.weight.grad.clone()]
        results[share] = (logprobs.detach(), entropy, values.detach(), grads)
    shared, full = results[True], results[False]
    for a, b in zip(shared[:3], full[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(shared[3], full[3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        ref_shared, _, _ = score_completions(model, rollout, 0.9)
    torch.testing.assert_close(ref_shared, full[0], atol=1e-5, rtol=1e-5)


def test_shared_prompt_pass_runs_each_distinct_prompt_once(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    rollout = _grouped_rollout(model, tok)
    rows_seen = []
    model.model.layers[0].register_forward_hook(lambda module, args, out: rows_seen.append(args[0].shape[:2]))
    with torch.no_grad():
        score_completions(model, rollout)
    prompt_len, completion_len = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    assert [tuple(s) for s in rows_seen] == [(3, prompt_len - 1), (12, completion_len)]


def test_policy_and_its_frozen_reference_score_bit_for_bit_alike(tiny_model_dir):
    """At step 0 the KL is exactly 0 and DPO's implicit rewards tie exactly: the shared-prompt
    path must not depend on whether the weights require gradients (matmul on a strided input
    does, which is why the prompt's last token is fed with the completion)."""
    from rlft.models.loading import frozen_reference

    model, tok = load_policy(str(tiny_model_dir))
    model.eval()
    reference = frozen_reference(model)
    rollout = _grouped_rollout(model, tok)
    with torch.no_grad():
        ours, _, _ = score_completions(model, rollout)
        theirs, _, _ = score_completions(reference, rollout)
    assert torch.equal(ours, theirs)

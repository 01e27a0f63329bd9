"""Per-token log-probabilities and entropies against naive references and hand values."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.logprobs import entropy_from_logits, selective_log_softmax


def test_selective_log_softmax_by_hand() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = (1/4, 3/4)
    got = selective_log_softmax(logits, torch.tensor([[1]]))
    torch.testing.assert_close(got, torch.tensor([[math.log(0.75)]]))


def test_selective_log_softmax_matches_naive_gather() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen) * 4
    token_ids = torch.randint(0, 11, (3, 5), generator=gen)
    naive = torch.log_softmax(logits, -1).gather(-1, token_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(selective_log_softmax(logits, token_ids), naive)


def test_selective_log_softmax_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[[1000.0, 0.0, -1000.0]]])
    got = selective_log_softmax(logits, torch.tensor([[0]]))
    torch.testing.assert_close(got, torch.tensor([[0.0]]))


def test_entropy_by_hand() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]]])
    # uniform over 4 -> log 4; (1/4, 3/4) -> -(1/4 log 1/4 + 3/4 log 3/4)
    expected = [math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([expected]))


def test_entropy_gradient_is_finite_with_masked_vocabulary() -> None:
    logits = torch.tensor([[[0.5, -1.0, -math.inf]]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# --- issue 13: the entropy bonus has a gradient; padding never poisons the scores ------------------


def _naive_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits, -1)
    return -(p * torch.log_softmax(logits, -1).clamp(min=torch.finfo(logits.dtype).min)).sum(-1)


def test_entropy_gradient_matches_autograd_of_the_naive_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 9, generator=gen, dtype=torch.float64) * 3
    logits[0, 1, :4] = -math.inf  # masked vocabulary
    weights = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    fast = logits.clone().requires_grad_(True)
    (entropy_from_logits(fast) * weights).sum().backward()
    naive = logits.clone().requires_grad_(True)
    (_naive_entropy(naive) * weights).sum().backward()
    assert fast.grad is not None and naive.grad is not None
    torch.testing.assert_close(fast.grad, naive.grad, rtol=0, atol=1e-12)
    smooth = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(entropy_from_logits, (smooth,))


def _rollout(tiny_model_dir):
    from rlft.models.loading import load_policy
    from rlft.models.tokens import encode_prompts
    from rlft.types import Rollout

    model, tokenizer = load_policy(str(tiny_model_dir))
    ids, mask = encode_prompts(tokenizer, ["1+2=", "13+24=", "7+7=", "40+2="])
    gen = torch.Generator().manual_seed(0)
    completion = torch.randint(3, tokenizer.vocab_size, (4, 5), generator=gen)
    completion_mask = torch.tensor([[1.0] * 5, [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    completion = torch.where(completion_mask.bool(), completion, tokenizer.pad_token_id)
    return model, Rollout(ids, mask, completion, completion_mask, torch.zeros(4, 5))


def test_entropy_bonus_changes_the_gradient(tiny_model_dir) -> None:
    """score_completions computed the entropy under no_grad, so entropy_coef 0 and 0.5 gave the same
    gradient: A2C's entropy term did nothing."""
    from rlft.algorithms.aggregation import aggregate_loss
    from rlft.algorithms.losses import entropy_bonus
    from rlft.rollout.sampling import score_completions

    model, rollout = _rollout(tiny_model_dir)
    mask = rollout.completion_mask
    grads = {}
    for coef in (0.0, 0.5):
        model.zero_grad()
        logprobs, entropy, _ = score_completions(model, rollout, with_entropy=True)
        assert entropy is not None and entropy.requires_grad
        per_token = -logprobs + entropy_bonus(entropy, coef)
        aggregate_loss(per_token, mask, "token_mean").backward()
        grads[coef] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert not torch.allclose(grads[0.0], grads[0.5])
    # The difference is -0.5 * grad of the token-mean entropy, computed here from the full logits.
    model.zero_grad()
    logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask).logits[:, -6:-1].float()
    entropy = _naive_entropy(logits)
    (-0.5 * (entropy * mask).sum() / mask.sum()).backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(grads[0.5] - grads[0.0], expected, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("grad", [True, False])
def test_nan_logits_on_padding_do_not_reach_the_scores(tiny_model_dir, grad: bool) -> None:
    """Padding was masked by multiplying by 0, and 0 * NaN is NaN."""
    from rlft.models.value_head import ValueHead
    from rlft.rollout.sampling import score_completions

    model, rollout = _rollout(tiny_model_dir)
    keep = rollout.completion_mask.bool()
    T = keep.shape[1]

    def poison(module, inputs, output):  # the logit of each padded completion position -> NaN
        bad = torch.zeros(output.shape[:2], dtype=torch.bool)
        bad[:, -T - 1 : -1] = ~keep
        return torch.where(bad[..., None], float("nan"), output)

    head = ValueHead(model.config.hidden_size)
    torch.nn.init.normal_(head.proj.weight)
    handle = model.lm_head.register_forward_hook(poison)
    try:
        with torch.set_grad_enabled(grad):
            logprobs, entropy, values = score_completions(
                model, rollout, with_entropy=True, value_head=head, share_prompts=False
            )
    finally:
        handle.remove()
    assert entropy is not None and values is not None
    for scores in (logprobs, entropy, values):
        assert torch.isfinite(scores).all()
        assert (scores[~keep] == 0).all()
    if grad:
        (logprobs.sum() + entropy.sum()).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

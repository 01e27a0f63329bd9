import torch

from rlft.models.loading import load_policy
from rlft.models.tokens import encode_prompts, positions_from_mask
from rlft.rollout.sampling import sample, sequence_logprobs, top_p_filter


def _sample(model, tok, prompts, seed, **kw):
    ids, mask = encode_prompts(tok, prompts)
    return sample(
        model, ids, mask, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(seed), **{"max_new_tokens": 6, **kw},
    )


def test_positions_start_at_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_top_p_keeps_smallest_set_reaching_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.01)).sum() == 1  # the top token always stays


def test_sampling_is_deterministic_for_a_seed(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    a = _sample(model, tok, ["1+2=", "33+44="], seed=5)
    b = _sample(model, tok, ["1+2=", "33+44="], seed=5)
    c = _sample(model, tok, ["1+2=", "33+44="], seed=6)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_recorded_logprobs_match_a_full_forward_pass(tiny_model_dir):
    """KV-cached sampling and one forward over prompt+completion agree, padding included."""
    model, tok = load_policy(str(tiny_model_dir))
    rollout = _sample(model, tok, ["1+2=", "123+456=", "9="], seed=0, temperature=0.7)
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(model, rollout, temperature=0.7)
    assert torch.allclose(logprobs, rollout.logprobs, atol=1e-5)


def test_left_padding_does_not_change_a_prompts_completion(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    alone = _sample(model, tok, ["1+2="], seed=0, greedy=True)
    padded = _sample(model, tok, ["1+2=", "12345+67890="], seed=0, greedy=True)
    n = int(alone.completion_mask[0].sum())
    assert torch.equal(alone.completion_ids[0, :n], padded.completion_ids[0, :n])


def test_mask_stops_after_eos_and_pads(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    # Force EOS to be the most likely token so rows stop at once.
    def boost_eos(module, inputs, output):
        output[..., tok.eos_token_id] += 100.0
        return output

    model.lm_head.register_forward_hook(boost_eos)
    rollout = _sample(model, tok, ["1+2=", "3+4="], seed=0, greedy=True, max_new_tokens=5)
    assert rollout.completion_ids.shape[1] == 1  # the loop ended as soon as every row finished
    assert rollout.completion_ids[:, 0].tolist() == [tok.eos_token_id] * 2
    assert rollout.completion_mask.tolist() == [[1.0], [1.0]]

"""bf16 rollouts (``rollout.dtype: bfloat16``): a bf16 sampler and reference beside a float32
learner, with truncated importance weights correcting the sampler/learner mismatch in the loss."""

import math

import pytest
import torch

from rlft.config import ConfigError, config_from_dict
from rlft.models.loading import load_policy
from rlft.models.tokens import encode_prompts
from rlft.rollout.low_precision import LowPrecisionSampler, low_precision_copy
from rlft.rollout.sampling import sample, score_completions
from rlft.trainers.batch import Batch, Learner
from rlft.trainers.loop import micro_batch_loss
from rlft.trainers.registry import train

PROMPTS = [p for p in ["1+2=", "33+44=", "9+9=", "12+3="] for _ in range(2)]


def _rollout(model, tok, seed=0):
    ids, mask = encode_prompts(tok, PROMPTS)
    return sample(model, ids, mask, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  max_new_tokens=8, generator=torch.Generator().manual_seed(seed))


def test_copy_is_bf16_in_its_parameters_only_and_follows_the_learner(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    sampler = LowPrecisionSampler(model)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in sampler.model.parameters())
    assert all(b.dtype == torch.float32 for b in sampler.model.buffers() if b.is_floating_point())
    with torch.no_grad():
        model.lm_head.weight.add_(0.5)
    before = sampler.model.lm_head.weight.float().clone()
    assert sampler.push_weights(model) == 1
    torch.testing.assert_close(sampler.model.lm_head.weight.float(), model.lm_head.weight.bfloat16().float())
    assert not torch.equal(before, sampler.model.lm_head.weight.float())


def test_bf16_samples_score_close_to_the_float32_learner(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    rollout = LowPrecisionSampler(model).sample(
        model, *encode_prompts(tok, PROMPTS), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        max_new_tokens=8, generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        trainer, _, _ = score_completions(model, rollout)
        reference, _, _ = score_completions(low_precision_copy(model), rollout)
    mask = rollout.completion_mask
    gap = ((trainer - rollout.logprobs).abs() * mask).sum() / mask.sum()
    assert 0 < gap < 0.05  # bf16 rounding: not equal, but close
    assert ((trainer - reference).abs() * mask).sum() / mask.sum() < 0.05


@pytest.mark.parametrize(("shift", "weight"), [(math.log(4.0), 0.25), (-math.log(4.0), 2.0)])
def test_the_loss_weights_each_token_by_the_truncated_trainer_to_sampler_ratio(tiny_model_dir, shift, weight):
    """Sampler log-probs off by log 4: tokens it over-sampled count a quarter, under-sampled ones
    count 4x but are truncated at 2."""
    model, tok = load_policy(str(tiny_model_dir))
    config = config_from_dict({}, [f"model.path={tiny_model_dir}", "algorithm.name=grpo", "algorithm.kl_coef=0",
                                   "train.batch_size=8", "algorithm.group_size=2"])
    rollout = _rollout(model, tok)
    with torch.no_grad():
        trainer, _, _ = score_completions(model, rollout)
    mask = rollout.completion_mask
    rows = torch.arange(len(rollout))
    losses = {}
    for correct in (False, True):
        rollout.logprobs = (trainer + shift) * mask
        batch = Batch(rollout=rollout, rewards=torch.zeros(8), advantages=mask.clone(), returns=mask.clone(),
                      ref_logprobs=trainer, old_logprobs=None, old_values=None, kl=torch.zeros_like(mask),
                      correct_sampler_in_loss=correct)
        loss, stats = micro_batch_loss(config, Learner(model), batch, rows, 0.0, float(mask.sum()), 8.0)
        losses[correct] = loss.item()
    assert losses[True] == pytest.approx(weight * losses[False], rel=1e-4)
    assert stats["rollout/sampler_logprob_gap"] == pytest.approx(math.log(4.0), rel=1e-4)


def test_recipes_that_cannot_use_bf16_rollouts_are_refused():
    for extra, named in [("lora.r=4", "lora.r"), ("distributed.engine=ray", "ray"), ("model.dtype=bfloat16", "model.dtype")]:
        with pytest.raises(ConfigError, match=named):
            config_from_dict({}, ["rollout.dtype=bfloat16", extra])


@pytest.mark.slow
def test_bf16_rollout_run_trains_logs_the_gap_and_resumes_to_the_same_weights(tmp_path, tiny_recipe):
    """A killed bf16-rollout run resumes to the weights of an uninterrupted one: the sampler copy
    is refreshed from the checkpoint, not left at the base weights."""
    from safetensors.torch import load_file

    recipe = [*tiny_recipe, "rollout.dtype=bfloat16", "train.steps=4", "checkpoint.every=2", "eval.every=4",
              "train.learning_rate=3e-3"]  # steps large enough to move bf16-rounded weights
    clean = config_from_dict({}, [*recipe, f"run_dir={tmp_path / 'clean'}"])
    summary = train(clean, progress=False)
    assert summary["steps"] == 4
    metrics = [line for line in (tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()]
    assert all('"rollout/sampler_logprob_gap"' in line for line in metrics)

    part = config_from_dict({}, [*recipe, f"run_dir={tmp_path / 'part'}"])

    def stop(m):
        if m["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(part, progress=False, on_step=stop)
    train(part, resume=True, progress=False)
    a = load_file(str(tmp_path / "clean" / "final_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final_model" / "model.safetensors"))
    assert all(a[k].dtype == torch.float32 for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_autocast_learner_runs_matmuls_in_bf16_with_float32_weights_and_gradients(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    rollout = _rollout(model, tok)
    seen = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    plain, _, _ = Learner(model).score(rollout, 1.0)
    mixed, entropy, _ = Learner(model, autocast=torch.bfloat16).score(rollout, 1.0, with_entropy=True)
    half = len(seen) // 2  # the same passes (prompt, completion) with and without autocast
    assert seen[:half] == [torch.float32] * half and seen[half:] == [torch.bfloat16] * half
    assert mixed.dtype == torch.float32 and entropy.dtype == torch.float32
    mask = rollout.completion_mask
    assert ((mixed - plain).abs() * mask).sum() / mask.sum() < 0.05
    mixed.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.dtype == torch.float32
               for p in model.parameters())


def test_autocast_needs_float32_weights():
    with pytest.raises(ConfigError, match="train.autocast"):
        config_from_dict({}, ["train.autocast=bfloat16", "model.dtype=bfloat16"])
    with pytest.raises(ConfigError, match="train.autocast"):
        config_from_dict({}, ["train.autocast=float16"])


@pytest.mark.slow
def test_mixed_precision_run_trains_float32_weights(tmp_path, tiny_recipe):
    from safetensors.torch import load_file

    config = config_from_dict({}, [*tiny_recipe, "train.autocast=bfloat16", "rollout.dtype=bfloat16",
                                   "train.steps=2", f"run_dir={tmp_path / 'run'}"])
    assert train(config, progress=False)["steps"] == 2
    final = load_file(str(tmp_path / "run" / "final_model" / "model.safetensors"))
    base = load_file(str(tmp_path / "run" / "base_model" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in final.values())
    assert any(not torch.equal(final[k], base[k]) for k in final)

"""A new policy loss, CISPO, and an algorithm built from it: `rlft train` with --plugin.

CISPO (MiniMax, 2025, "MiniMax-M1", sec. 3.1) clips the importance-sampling weight instead of the
token's update: every token keeps a gradient, weighted by the clipped, detached ratio,

    loss = -sg(clip(r, 1 - clip_low, 1 + clip_high)) * A * log pi(a|s),   r = exp(logprobs - old_logprobs)

whereas PPO's clipped surrogate gives a token whose ratio left the clip range no gradient at all.

    rlft train examples/plugin/cispo.yaml --plugin examples/plugin/cispo_loss.py
"""

import torch

import rlft


@rlft.register_policy_loss("cispo", needs_old_logprobs=True)
def cispo_loss(logprobs, old_logprobs, advantages, *, clip_low, clip_high, clip_ratio_c=None, mask=None):
    """(B, T) each -> (loss, clipped), (B, T) each; ``clipped`` marks tokens whose weight was clipped."""
    ratio = torch.exp((logprobs - old_logprobs).detach().clamp(-20.0, 20.0))  # (B, T), no gradient
    weight = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = -weight * advantages * logprobs
    return loss, (weight != ratio).float()


# An algorithm name for recipes: GRPO's parts with CISPO's loss and a wider upper clip (the paper
# bounds only the top of the weight); the fields a recipe leaves empty take these values. Two
# mini-batches per batch, as GSPO and DAPO here: with one update per batch every ratio is 1 and
# CISPO's gradient is PPO's (-A * grad log pi) exactly.
rlft.register_algorithm("grpo_cispo", {"policy_loss": "cispo", "clip_low": 0.2, "clip_high": 0.28},
                        train={"mini_batches": 2})

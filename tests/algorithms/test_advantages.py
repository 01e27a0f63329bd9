"""Advantage estimators against values computed by hand, a plain-loop GAE and metamorphic checks."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    discounted_returns,
    gae_advantages,
    group_normalise,
    grpo_advantages,
    masked_whiten,
    reinforce_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    sequence_returns,
)

# Four completions, two prompts (group_size 2), outcome rewards 1, 0, 3, 1 on the last counted token.
MASK = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
TOKEN_REWARDS = torch.tensor([[0.0, 0, 1], [0, 0, 0], [3, 0, 0], [0, 0, 1]])


def close(actual: torch.Tensor, expected: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0
    )


def test_sequence_returns_ignores_masked_rewards() -> None:
    rewards = TOKEN_REWARDS.clone()
    rewards[1, 2] = 100.0  # padding
    close(sequence_returns(rewards, MASK), [1.0, 0.0, 3.0, 1.0])


def test_group_normalise_by_hand() -> None:
    scores = torch.tensor([1.0, 0.0, 3.0, 1.0])
    # groups (1, 0) and (3, 1): unbiased std sqrt(0.5) and sqrt(2); both give +-1/sqrt(2)
    h = 1 / math.sqrt(2)
    close(group_normalise(scores, 2), [h, -h, h, -h])
    close(group_normalise(scores, 2, scale=False), [0.5, -0.5, 1.0, -1.0])


def test_reinforce_batch_mean_baseline() -> None:
    adv, ret = reinforce_advantages(TOKEN_REWARDS, MASK)
    # baseline = (1 + 0 + 3 + 1) / 4 = 1.25
    close(adv, [[-0.25, -0.25, -0.25], [-1.25, -1.25, 0], [1.75, 0, 0], [-0.25, -0.25, -0.25]])
    close(ret, [[1.0, 1, 1], [0, 0, 0], [3, 0, 0], [1, 1, 1]])


def test_rloo_leave_one_out_baseline() -> None:
    adv, ret = rloo_advantages(TOKEN_REWARDS, MASK, group_size=2)
    # with G = 2 the baseline is the other completion's return
    close(adv, [[1.0, 1, 1], [-1, -1, 0], [2, 0, 0], [-2, -2, -2]])
    close(ret, [[1.0, 1, 1], [0, 0, 0], [3, 0, 0], [1, 1, 1]])


def test_rloo_group_of_three() -> None:
    rewards, mask = torch.tensor([[1.0], [2.0], [6.0]]), torch.ones(3, 1)
    adv, _ = rloo_advantages(rewards, mask, group_size=3)
    # 1 - (2+6)/2 = -3,  2 - (1+6)/2 = -1.5,  6 - (1+2)/2 = 4.5
    close(adv, [[-3.0], [-1.5], [4.5]])


def test_rloo_rejects_group_of_one() -> None:
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(TOKEN_REWARDS, MASK, group_size=1)


def test_grpo_by_hand() -> None:
    adv, ret = grpo_advantages(TOKEN_REWARDS, MASK, group_size=2)
    h = 1 / math.sqrt(2)
    close(adv, [[h, h, h], [-h, -h, 0], [h, 0, 0], [-h, -h, -h]])
    close(ret, [[1.0, 1, 1], [0, 0, 0], [3, 0, 0], [1, 1, 1]])


def test_grpo_group_of_three_and_dr_grpo() -> None:
    rewards, mask = torch.tensor([[1.0], [2.0], [6.0]]), torch.ones(3, 1)
    adv, _ = grpo_advantages(rewards, mask, group_size=3)
    std = math.sqrt((4 + 1 + 9) / 2)  # mean 3, unbiased variance 7
    close(adv, [[-2 / std], [-1 / std], [3 / std]])
    adv, _ = grpo_advantages(rewards, mask, group_size=3, scale_rewards=False)
    close(adv, [[-2.0], [-1.0], [3.0]])


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce", "reinforce_pp"])
def test_group_of_equal_rewards_gives_zero_advantage(name: str) -> None:
    """Zero std: no NaN, no division blow-up; equal rewards carry no preference."""
    rewards = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv, _ = ADVANTAGE_ESTIMATORS[name](
        rewards, mask, values=None, group_size=2, gamma=1.0, lam=1.0, scale_rewards=True, eps=1e-6
    )
    assert torch.isfinite(adv).all()
    close(adv, [[0.0, 0.0], [0.0, 0.0]])


def test_grpo_zero_std_group_next_to_informative_group() -> None:
    rewards = torch.tensor([[1.0], [1.0], [1.0], [0.0]])
    adv, _ = grpo_advantages(rewards, torch.ones(4, 1), group_size=2)
    h = 1 / math.sqrt(2)
    close(adv, [[0.0], [0.0], [h], [-h]])


def test_discounted_returns_skip_masked_tokens() -> None:
    rewards = torch.tensor([[0.0, 0, 1], [1, 100, 2]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 1]])
    # row 0: 0.25, 0.5, 1; row 1: the masked token is no step, so G_0 = 1 + 0.5 * 2
    close(discounted_returns(rewards, mask, gamma=0.5), [[0.25, 0.5, 1.0], [2.0, 0.0, 2.0]])


def test_reinforce_pp_global_normalisation() -> None:
    adv, ret = reinforce_pp_advantages(TOKEN_REWARDS, MASK, gamma=1.0)
    # token returns 1,1,1 | 0,0 | 3 | 1,1,1: mean 1, population std sqrt(6/9)
    s = math.sqrt(6 / 9)
    close(adv, [[0.0, 0, 0], [-1 / s, -1 / s, 0], [2 / s, 0, 0], [0, 0, 0]])
    close(ret, [[1.0, 1, 1], [0, 0, 0], [3, 0, 0], [1, 1, 1]])
    adv, _ = reinforce_pp_advantages(TOKEN_REWARDS, MASK, gamma=1.0, scale_rewards=False)
    close(adv, [[0.0, 0, 0], [-1, -1, 0], [2, 0, 0], [0, 0, 0]])


def test_reinforce_pp_discounts_per_token() -> None:
    _, ret = reinforce_pp_advantages(TOKEN_REWARDS, MASK, gamma=0.5)
    close(ret, [[0.25, 0.5, 1.0], [0, 0, 0], [3, 0, 0], [0.25, 0.5, 1.0]])


def test_masked_whiten_by_hand() -> None:
    x = torch.tensor([[1.0, 3.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    close(masked_whiten(x, mask, eps=0.0), [[-1.0, 1.0, 0.0]])  # mean 2, population std 1


# --- GAE -----------------------------------------------------------------------------------

# gamma 0.9, lambda 0.8, rewards (0, 0, 1), values (0.5, 0.6, 0.7), V = 0 after the end:
#   t=2: delta = 1 - 0.7 = 0.3                          A = 0.3
#   t=1: delta = 0.9 * 0.7 - 0.6 = 0.03                 A = 0.03 + 0.72 * 0.3   = 0.246
#   t=0: delta = 0.9 * 0.6 - 0.5 = 0.04                 A = 0.04 + 0.72 * 0.246 = 0.21712
GAE_HAND = [0.21712, 0.246, 0.3]


def test_gae_by_hand() -> None:
    adv, ret = gae_advantages(
        torch.tensor([[0.0, 0, 1]]),
        torch.ones(1, 3),
        values=torch.tensor([[0.5, 0.6, 0.7]]),
        gamma=0.9,
        lam=0.8,
        scale_rewards=False,
    )
    close(adv, [GAE_HAND])
    close(ret, [[0.71712, 0.846, 1.0]])  # returns = A + V


def test_gae_skips_environment_tokens_by_hand() -> None:
    """A masked environment token between two policy tokens is no step: same numbers as above."""
    adv, ret = gae_advantages(
        torch.tensor([[0.0, 99, 0, 1]]),
        torch.tensor([[1.0, 0, 1, 1]]),
        values=torch.tensor([[0.5, 42, 0.6, 0.7]]),
        gamma=0.9,
        lam=0.8,
        scale_rewards=False,
    )
    close(adv, [[GAE_HAND[0], 0.0, GAE_HAND[1], GAE_HAND[2]]])
    close(ret, [[0.71712, 0.0, 0.846, 1.0]])


def test_gae_without_values_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs critic values"):
        gae_advantages(TOKEN_REWARDS, MASK, values=None)


def test_gae_lambda_one_zero_values_is_the_discounted_return() -> None:
    gen = torch.Generator().manual_seed(1)
    rewards = torch.randn(4, 6, generator=gen)
    mask = (torch.rand(4, 6, generator=gen) > 0.3).float()
    adv, _ = gae_advantages(
        rewards, mask, values=torch.zeros(4, 6), gamma=0.7, lam=1.0, scale_rewards=False
    )
    torch.testing.assert_close(adv, discounted_returns(rewards, mask, gamma=0.7))


def gae_reference(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Textbook GAE, one Python float at a time, on each row's counted tokens only."""
    adv, ret = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[b, t] == 1]
        r = [float(rewards[b, t]) for t in steps]
        v = [float(values[b, t]) for t in steps] + [0.0]
        a = 0.0
        for i in reversed(range(len(steps))):
            a = r[i] + gamma * v[i + 1] - v[i] + gamma * lam * a
            adv[b, steps[i]] = a
            ret[b, steps[i]] = a + v[i]
    return adv, ret


def random_trajectories(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-turn-like rows: policy tokens, environment tokens (masked) inside, padding at the end."""
    gen = torch.Generator().manual_seed(seed)
    B, T = 6, 12
    rewards = torch.randn(B, T, generator=gen)
    values = torch.randn(B, T, generator=gen)
    mask = (torch.rand(B, T, generator=gen) > 0.35).float()
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = mask * (torch.arange(T)[None, :] < lengths[:, None])
    mask[:, 0] = 1.0
    return rewards, values, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_vectorised_matches_plain_loop(seed: int) -> None:
    rewards, values, mask = random_trajectories(seed)
    adv, ret = gae_advantages(
        rewards, mask, values=values, gamma=0.95, lam=0.9, scale_rewards=False
    )
    ref_adv, ref_ret = gae_reference(rewards, values, mask, gamma=0.95, lam=0.9)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_gae_whitening_matches_plain_statistics() -> None:
    rewards, values, mask = random_trajectories(3)
    adv, ret = gae_advantages(rewards, mask, values=values, gamma=0.95, lam=0.9, eps=0.0)
    raw, ref_ret = gae_reference(rewards, values, mask, gamma=0.95, lam=0.9)
    counted = raw[mask == 1]
    mean, std = counted.mean(), counted.std(unbiased=False)
    torch.testing.assert_close(adv, torch.where(mask == 1, (raw - mean) / std, 0.0))
    torch.testing.assert_close(ret, ref_ret)  # returns use the unwhitened advantages


@pytest.mark.parametrize("scale_rewards", [False, True])
def test_gae_ignores_whatever_sits_on_masked_tokens(scale_rewards: bool) -> None:
    """Metamorphic: changing values and rewards on masked tokens (even to NaN) changes nothing."""
    rewards, values, mask = random_trajectories(4)
    masked = mask == 0
    assert masked.any()
    noise = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(9)) * 100
    rewards2 = torch.where(masked, noise, rewards)
    values2 = torch.where(masked, -noise, values)
    b, t = masked.nonzero()[0].tolist()
    values2[b, t] = rewards2[b, t] = float("nan")
    kwargs = {"gamma": 0.99, "lam": 0.95, "scale_rewards": scale_rewards}
    adv, ret = gae_advantages(rewards, mask, values=values, **kwargs)
    adv2, ret2 = gae_advantages(rewards2, mask, values=values2, **kwargs)
    torch.testing.assert_close(adv, adv2)
    torch.testing.assert_close(ret, ret2)


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_every_estimator_shares_the_signature(name: str) -> None:
    """Same keywords in, two (B, T) tensors out, zero where the mask is 0, no gradient."""
    rewards, values, mask = random_trajectories(5)
    values.requires_grad_(True)
    adv, ret = ADVANTAGE_ESTIMATORS[name](
        rewards,
        mask,
        values=values,
        group_size=3,
        gamma=0.9,
        lam=0.95,
        scale_rewards=True,
        eps=1e-6,
    )
    assert adv.shape == ret.shape == rewards.shape
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()
    assert torch.isfinite(adv).all() and not adv.requires_grad


# --- issue 13: no signal gives exactly zero, a group of one is an error ----------------------------

# Not exactly representable in float32, so the float32 mean of equal values is off by rounding.
NOT_REPRESENTABLE = [0.7, 1e4 + 0.1, -3.3, 1e-3 / 3]


@pytest.mark.parametrize("value", NOT_REPRESENTABLE)
@pytest.mark.parametrize("scale", [True, False])
def test_equal_rewards_give_exactly_zero_advantages(value: float, scale: bool) -> None:
    """Eight rewards of 0.7 gave +0.056 on every row and 1e4 + 0.1 gave 0.93: the mean's rounding
    error divided by (0 + eps). A group with no signal must give exactly 0."""
    rewards = torch.zeros(8, 3)
    rewards[:, -1] = value
    mask = torch.ones(8, 3)
    for name in ("grpo", "rloo", "reinforce", "reinforce_pp"):
        adv, returns = ADVANTAGE_ESTIMATORS[name](
            rewards, mask, values=None, group_size=8, gamma=1.0, lam=1.0, scale_rewards=scale, eps=1e-6
        )
        assert (adv == 0).all(), (name, adv)
    adv, _ = gae_advantages(rewards, mask, values=torch.zeros(8, 3), scale_rewards=scale)
    if scale:  # whitened constant advantages are 0; unwhitened they are the returns themselves
        assert (adv == 0).all(), adv
    assert (group_normalise(torch.full((8,), value), 8, scale=scale) == 0).all()
    assert (masked_whiten(torch.full((8, 3), value), mask, scale=scale) == 0).all()


def test_masked_whiten_zero_spread_ignores_masked_positions() -> None:
    x = torch.tensor([[0.7, 0.7, 5.0], [0.7, -9.0, 0.7]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    assert (masked_whiten(x, mask) == 0).all()
    x[0, 0] = 1.7  # one counted value differs: whitened as before, not zeroed
    counted = torch.tensor([1.7, 0.7, 0.7, 0.7])
    whitened = (counted - counted.mean()) / (counted.std(unbiased=False) + 1e-6)
    torch.testing.assert_close(masked_whiten(x, mask)[mask.bool()], whitened)


def test_flat_group_next_to_an_informative_group_keeps_the_formula() -> None:
    scores = torch.tensor([0.7, 0.7, 0.7, 0.1, 0.3, 0.9])
    got = group_normalise(scores, 3)
    assert (got[:3] == 0).all()
    informative = torch.tensor([0.1, 0.3, 0.9])
    torch.testing.assert_close(got[3:], (informative - informative.mean()) / (informative.std() + 1e-6))


@pytest.mark.parametrize("scale", [True, False])
def test_grpo_rejects_group_of_one(scale: bool) -> None:
    """With one completion per group the unbiased std is NaN: every advantage was NaN."""
    with pytest.raises(ValueError, match="grpo needs group_size >= 2"):
        grpo_advantages(TOKEN_REWARDS, MASK, group_size=1, scale_rewards=scale)
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_normalise(torch.ones(4), 1)

"""Implicit language Q-learning (ILQL; Snell et al., 2022, "Offline RL for Natural Language
Generation with Implicit Language Q Learning", arXiv:2206.11871), as pure per-token functions.

A state s_t is the sequence before token t, an action a_t is token t. Q(s_t, .) is a head with one
output per vocabulary entry, V(s_t) a scalar head, Q_hat a Polyak-averaged target copy of Q.
Only counted tokens (``completion_mask`` = 1, the agent's own tokens) are steps: in a multi-turn
trajectory the environment's tokens between two agent turns belong to the transition, so the next
state of the last token of a turn is the first token of the next agent turn (as in GAE here).

Shapes: B sequences, T completion tokens, V vocabulary. Every loss is returned per token (B, T);
the caller averages it over counted tokens (``rlft.algorithms.aggregation.masked_mean``).
"""

from __future__ import annotations

import torch


def next_counted_values(values: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """V(s_{t'}) where t' is the next counted token after t, and 0 after the last one.

    values, completion_mask: (B, T) -> (B, T). The naive equivalent: for each row, walk right from
    t + 1 to the first position whose mask is 1 and take its value (0 if none).
    """
    keep = completion_mask.bool()
    out = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # (B,) value of the next counted token
    for t in reversed(range(values.shape[1])):
        out[:, t] = running
        running = torch.where(keep[:, t], values[:, t], running)
    return out


def q_td_loss(
    q_taken: torch.Tensor, token_rewards: torch.Tensor, next_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Q's temporal-difference loss (Snell et al., 2022, eq. 1 with V in place of max Q):

        L_Q = (r_t + gamma * V(s_{t+1}) - Q(s_t, a_t))^2

    q_taken: (B, T) Q of the taken token; token_rewards: (B, T); next_values: (B, T) V of the next
    state (from :func:`next_counted_values`; 0 after the terminal step), treated as constant.
    """
    target = token_rewards + gamma * next_values.detach()
    return (q_taken - target).square()


def expectile_loss(values: torch.Tensor, q_target: torch.Tensor, tau: float) -> torch.Tensor:
    """V's expectile regression toward the target Q (Snell et al., 2022, eq. 2; Kostrikov et al.,
    2021, IQL, eq. 5):

        L_V = |tau - 1(u < 0)| * u^2,   u = Q_hat(s_t, a_t) - V(s_t)

    values, q_target: (B, T). With tau > 0.5 V approaches the upper expectile of Q over the data's
    actions, an in-sample approximation of max_a Q. ``q_target`` is treated as constant.
    """
    u = q_target.detach() - values
    weight = torch.where(u < 0, 1.0 - tau, tau)
    return weight * u.square()


def cql_loss(q_logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The conservative term (Snell et al., 2022, eq. 3; Kumar et al., 2020, CQL(H)):

        L_CQL = logsumexp_a Q(s_t, a) - Q(s_t, a_t)

    i.e. cross-entropy with Q as logits: it pushes down Q of tokens the data never took.
    q_logits: (B, T, V); actions: (B, T) -> (B, T).
    """
    taken = q_logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(q_logits, -1) - taken


def awac_weights(q_target: torch.Tensor, values: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """AWAC weights exp(beta * (Q_hat(s_t, a_t) - V(s_t))), clipped at ``max_weight``, no gradient
    (Nair et al., 2020, eq. 9; Snell et al., 2022, sec. 4.2). (B, T) -> (B, T)."""
    return torch.exp(beta * (q_target - values).detach()).clamp(max=max_weight)


def awac_lm_loss(logprobs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Advantage-weighted language-model loss: -w_t * log pi(a_t | s_t). (B, T) -> (B, T).

    With ``weights`` all 1 this is the plain negative log-likelihood ILQL's paper trains the
    behaviour policy with."""
    return -weights.detach() * logprobs


def ilql_logits(logits: torch.Tensor, q: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """Decoding with ILQL (Snell et al., 2022, sec. 4.3): pi(a|s) ~ pi_beta(a|s) exp(beta (Q - V)),

        logits' = logits + beta * (Q(s, .) - V(s))

    logits, q: (..., V); values: (...). V shifts every token equally, so it does not change the
    distribution; it is kept because it is the paper's formula and keeps the perturbation small.
    """
    return logits + beta * (q - values.unsqueeze(-1))


def polyak(target: torch.Tensor, online: torch.Tensor, alpha: float) -> torch.Tensor:
    """Polyak averaging of a target network: alpha * target + (1 - alpha) * online."""
    return alpha * target + (1.0 - alpha) * online

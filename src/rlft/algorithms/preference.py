"""Preference losses: Bradley-Terry for reward models, DPO and IPO for policies. Pure functions.

Shapes: B preference pairs. ``chosen_*`` / ``rejected_*`` are per-sequence values (B,):
  chosen_rewards, rejected_rewards   reward-model scores r(x, y_w), r(x, y_l)
  *_logps                            log pi(y | x) summed over the completion tokens
                                     (see :func:`sequence_logps`)

Every loss returns the per-pair loss (B,); averaging (or weighting) over pairs is the caller's,
so the loss is invariant to how a batch is split into micro-batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logps(logprobs: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probabilities over the completion: (B, T), (B, T) -> (B,).

    Positions where the mask is 0 are selected away rather than multiplied by 0, so a -inf
    log-prob on padding (a token the model rules out) cannot make the sum NaN.
    """
    kept = torch.where(completion_mask != 0, logprobs * completion_mask, 0.0)
    return kept.sum(-1)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Pairwise reward-model loss, -log sigmoid(r_w - r_l - m), per pair (B,).

    Bradley & Terry (1952); as the reward-model loss of Ouyang et al. (2022), eq. 1 (for one
    comparison). With ``margin`` m (a float or (B,)), Touvron et al. (2023, Llama 2) eq. 2: the
    chosen score must beat the rejected one by m before the loss flattens.

    Naive equivalent: ``-torch.log(torch.sigmoid(r_w - r_l - m))``; ``logsigmoid`` avoids the
    underflow to log(0) when r_w - r_l is very negative.
    """
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization loss per pair (Rafailov et al., 2023, eq. 7).

        h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))
        loss = -log sigmoid(beta * h)

    ``label_smoothing`` eps > 0 gives conservative DPO (Mitchell, 2023): the preference label is
    assumed flipped with probability eps, loss = -(1 - eps) log s(beta h) - eps log s(-beta h).

    All inputs (B,). Returns (loss, chosen_rewards, rejected_rewards), each (B,), where the
    implicit rewards are beta * (log pi - log ref) (eq. 5), detached, for metrics.
    """
    chosen_logratio = chosen_logps - ref_chosen_logps
    rejected_logratio = rejected_logps - ref_rejected_logps
    logits = beta * (chosen_logratio - rejected_logratio)
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    tau: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Identity Preference Optimisation loss per pair (Azar et al., 2023, eq. 17).

        h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))
        loss = (h - 1 / (2 tau))^2

    A squared loss that regresses the log-ratio gap to a finite target, so unlike DPO it does not
    keep pushing h to infinity on deterministic preferences. The paper uses sequence log-probs
    (sums); TRL averages over tokens instead, which changes the scale of ``tau``: pass
    whichever ``*_logps`` you mean. Returns (loss, chosen_rewards, rejected_rewards) like
    :func:`dpo_loss`, with rewards tau * log-ratio.
    """
    chosen_logratio = chosen_logps - ref_chosen_logps
    rejected_logratio = rejected_logps - ref_rejected_logps
    h = chosen_logratio - rejected_logratio
    loss = (h - 1.0 / (2.0 * tau)) ** 2
    return loss, tau * chosen_logratio.detach(), tau * rejected_logratio.detach()


# name -> loss with the (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, coef)
# signature, so an offline preference trainer picks one without branching on the name.
PREFERENCE_LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss}

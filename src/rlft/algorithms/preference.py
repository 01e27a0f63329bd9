"""Preference losses. Pure functions.

- :func:`bradley_terry_loss`: pairwise reward-model loss;
- :func:`dpo_loss`, :func:`ipo_loss`: policy losses on preference pairs (``PREFERENCE_LOSSES``);
- :func:`kto_loss`: policy loss on unpaired thumbs up / down (``UNPAIRED_PREFERENCE_LOSSES``),
  with its reference point :func:`kto_reference_point` and weights :func:`kto_balanced_weights`.

Shapes: B preference pairs. ``chosen_*`` / ``rejected_*`` are per-sequence values (B,):
  chosen_rewards, rejected_rewards   reward-model scores r(x, y_w), r(x, y_l)
  *_logps                            log pi(y | x) summed over the completion tokens
                                     (see :func:`sequence_logps`)
For KTO, B single completions: ``policy_logps`` / ``ref_logps`` (B,) and ``desirable`` (B,) bool.

Every loss returns the per-pair (per-example) loss (B,); averaging (or weighting) is the caller's,
so the loss is invariant to how a batch is split into micro-batches (KTO's reference point is a
batch statistic: hold it fixed across the micro-batches of one batch for that to hold).
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


def kto_reference_point(
    policy_logps_mismatched: torch.Tensor, ref_logps_mismatched: torch.Tensor
) -> torch.Tensor:
    """KTO's reference point z0, a scalar: a detached, non-negative estimate of KL(pi || ref).

    Ethayarajh et al. (2024), §4.1 (defined with eq. 7): z0 = KL(pi(y'|x) || ref(y'|x)),
    estimated from (B,) sequence log-probs of *mismatched* pairs (each prompt x with a completion
    y' written for another prompt in the batch), so z0 does not depend on whether the batch's own
    completions are desirable. As in the paper's code and TRL, the estimate is the mean log-ratio,
    clamped at 0 (a KL cannot be negative; the one-batch estimate can) and detached: the paper
    does not back-propagate through z0, which only sets the point gains and losses are measured
    from.

    Naive equivalent: ``max(0.0, float((policy_logps_mismatched - ref_logps_mismatched).mean()))``.
    """
    return (policy_logps_mismatched - ref_logps_mismatched).mean().detach().clamp(min=0.0)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_estimate: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kahneman-Tversky Optimization loss per example (Ethayarajh et al., 2024, eq. 7).

        r = log pi(y|x) - log ref(y|x)
        loss = w_d (1 - sigmoid(beta (r - z0)))   if y is desirable
               w_u (1 - sigmoid(beta (z0 - r)))   if y is undesirable

    ``policy_logps``, ``ref_logps`` (B,) sequence log-probs; ``desirable`` (B,) bool, the thumbs
    up / down; ``kl_estimate`` z0, the reference point from :func:`kto_reference_point` (detached
    here too, so a caller's estimate carries no gradient either way). The paper writes the loss
    as lambda_y - v(x, y) with v = lambda_D sigmoid(...) or lambda_U sigmoid(...): the same thing.
    Unlike DPO, each example needs no partner: a thumbs-up pushes r above z0, a thumbs-down
    below it, and the sigmoid saturates, so examples far on the right side stop pulling.

    Returns (loss, rewards), each (B,): rewards = beta * r detached, the implicit reward as in
    :func:`dpo_loss`, for metrics.

    Naive equivalent, per example i:
    ``w_d * (1 - 1 / (1 + exp(-beta * (r_i - z0))))`` if desirable[i] else
    ``w_u * (1 - 1 / (1 + exp(-beta * (z0 - r_i))))``.
    """
    desirable = desirable.to(torch.bool)
    logratio = policy_logps - ref_logps
    z0 = torch.as_tensor(kl_estimate, dtype=logratio.dtype, device=logratio.device).detach()
    # Ethayarajh et al. (2024) eq. 7: lambda_y - v(x, y), v the Kahneman-Tversky value at r - z0.
    desirable_loss = desirable_weight * (1.0 - torch.sigmoid(beta * (logratio - z0)))
    undesirable_loss = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - logratio)))
    loss = torch.where(desirable, desirable_loss, undesirable_loss)
    return loss, beta * logratio.detach()


def kto_balanced_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for KTO on imbalanced thumbs up / down.

    Ethayarajh et al. (2024), §4.2, and TRL's KTO docs: choose the weights so that
    (w_d * n_desirable) / (w_u * n_undesirable) lies in [1, 4/3], by up-weighting the rarer
    kind. Rule chosen here (the paper gives the range, not a formula): the more common kind keeps
    weight 1 and the rarer one gets the smallest weight that brings the ratio into the range:

        n_d / n_u < 1        ->  (n_u / n_d, 1)         ratio exactly 1
        1 <= n_d / n_u <= 4/3 ->  (1, 1)                 already in range
        n_d / n_u > 4/3      ->  (1, 3 n_d / (4 n_u))   ratio exactly 4/3

    With no example of one kind there is nothing to balance and both weights are 1 (the weight
    of an absent kind changes nothing).
    """
    if n_desirable < 0 or n_undesirable < 0:
        raise ValueError(
            f"kto_balanced_weights needs counts >= 0, got n_desirable={n_desirable}, "
            f"n_undesirable={n_undesirable}; pass how many thumbs up and down the batch holds."
        )
    if n_desirable == 0 or n_undesirable == 0:
        return 1.0, 1.0
    ratio = n_desirable / n_undesirable
    if ratio < 1.0:
        return n_undesirable / n_desirable, 1.0
    if ratio > 4.0 / 3.0:
        return 1.0, 0.75 * ratio
    return 1.0, 1.0


# name -> loss with the (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, coef)
# signature, so an offline preference trainer picks one without branching on the name.
PREFERENCE_LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss}

# name -> loss on *unpaired* feedback, (policy_logps, ref_logps, desirable, kl_estimate, beta) ->
# (loss, rewards). A second registry because the signature differs: one completion and a label per
# example, not a (chosen, rejected) pair, so a pair trainer could not call these and vice versa.
UNPAIRED_PREFERENCE_LOSSES = {"kto": kto_loss}

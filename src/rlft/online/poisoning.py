"""Poisoning defence: flag users whose labels disagree with everyone else's far beyond chance.

A poisoner who flips their labels (thumbs up on what everyone else turns down, the worse answer
of a pair preferred) should not shape the shared model. A user with a merely *different* taste
should: the shared model serves them too, and their own adapter learns the rest. The test here
tells the two apart:

1. Each user's votes become feature vectors of their answers' text (:func:`text_features`) with a
   label, and a small per-user preference model (L2-regularised logistic regression) is fit to
   them: what that user rewards. A rating is its answer's features (centred on the mean answer)
   with the thumbs as label; a pair is f(chosen) - f(rejected) with label 1 (and mirrored, -x
   with label 0, for training), so rating and pair voters are judged on one scale
   (:func:`_user_data` says why the centring and where the bias goes).
2. For every ordered pair (u, v) of users with enough votes, v's model predicts u's labels on u's
   own votes (``agreement[u][v]``), with a one-sided exact binomial p-value of "agreement < 1/2"
   pooled over both directions (``p_values``). These are diagnostics for the audit log.
3. The test that flags: on u's votes where the *other* users' models agree with each other (at
   least ``CONSENSUS`` = 80% of them, and at least ``MIN_OTHERS`` = 3 others), does u label as
   they do? The share u agrees with that consensus gets a one-sided exact binomial test of
   "agreement < 1/2"; below ``alpha``, u is flagged (``consensus[u]``). Users are flagged one at
   a time, the smallest p-value first, and a flagged user's model stops counting towards the
   consensus the others are judged by; in the benchmark, once the shared model answered mostly
   politely, the poisoner's model had made an honest user look odd.

Why this spares different tastes: a vote counts only where everyone else agrees. Two honest
users with opposite tastes on one dimension (one likes short answers, one long) split the others
on that dimension, so those votes are not judged at all; where everyone else agrees (rude answers
are bad), the honest users agree too. A flipped-label user contradicts exactly the votes everyone
else agrees on. An earlier version compared users pairwise and flagged whoever disagreed with
most others; once the model's answers were mostly polite, two honest users of opposite length
tastes disagreed on most answers and were flagged with the poisoner. Why three others: with two
(say short, long and a poisoner), the honest short user is the odd one out on short polite
answers exactly as the poisoner is on rude ones; the data cannot tell which is the poisoner.

Limits, stated plainly: nobody is flagged with fewer than four users who have ``min_votes``
votes; a user whose genuine taste is the opposite of everyone's on what everyone agrees on looks
the same as a poisoner and is flagged (their votes still train their own adapter); poisoners who
are more than a fifth of the users break the consensus and are not caught, nor is one who flips
only what others disagree on; evidence grows with the votes on consensus answers, so a poisoner
whose flipped kind of answer is rare needs more votes to be flagged; the features are words and punctuation, so disagreement the words do not show is invisible. Pure:
plain data in, a dataclass out; torch and the standard library only.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

# Hashed bag-of-words buckets, then log(1 + words), "!" count and "?" count.
HASH_DIM = 256
N_FEATURES = HASH_DIM + 3
# A vote is judged only where the other users' models agree: at least this share of them, and at
# least this many others (with two, the odd one out is undecidable: see the module docstring).
CONSENSUS = 0.8
MIN_OTHERS = 3
# L2 penalty of the per-user model (on the weights, not the bias): enough that a user with few,
# separable votes gets finite weights, small against a mean log-loss of order 1.
L2_PENALTY = 1e-2
_WORD = re.compile(r"[a-z0-9']+")


class Vote(Protocol):
    """One judgement; :class:`rlft.feedback.live.LiveJudgement` has these fields.

    kind "rating": ``completion`` was rated, ``desirable`` True (up) or False (down).
    kind "pair": ``completion`` was preferred over ``rejected``; ``desirable`` is unused.
    ``prompt`` is not read: the answers' text carries the taste, and prompts differ per vote.
    """

    @property
    def user(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def completion(self) -> str: ...
    @property
    def rejected(self) -> str | None: ...
    @property
    def desirable(self) -> bool | None: ...


@dataclass(frozen=True)
class PoisoningReport:
    """What :func:`detect_poisoning` found.

    ``agreement[u][v]``: the fraction of u's votes whose label v's model predicts.
    ``p_values[u][v]`` (symmetric): the one-sided binomial p-value, under 1/2, of the agreement
    pooled over both directions. Both only for users with enough votes, u != v. ``votes``: every
    user's vote count. ``skipped``: users with fewer than ``min_votes`` votes, neither compared
    nor flagged. ``consensus[u]``: on u's votes where the other users' models agree (at least
    CONSENSUS of them, and at least MIN_OTHERS others), how many there were (``votes``), the share
    u labelled as they did (``agreement``) and the one-sided binomial ``p_value`` of that share
    under 1/2. ``flagged``: users whose ``p_value`` is below ``alpha``. All sorted by user name;
    ``min_votes`` and ``alpha`` as used.
    """

    flagged: tuple[str, ...]
    agreement: dict[str, dict[str, float]]
    p_values: dict[str, dict[str, float]]
    votes: dict[str, int]
    skipped: tuple[str, ...]
    min_votes: int
    alpha: float
    consensus: dict[str, dict[str, float]] = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (plain lists, dicts, strings and finite numbers) for the audit log."""
        return {
            "flagged": list(self.flagged),
            "skipped": list(self.skipped),
            "votes": dict(self.votes),
            "agreement": {u: dict(row) for u, row in self.agreement.items()},
            "p_values": {u: dict(row) for u, row in self.p_values.items()},
            "min_votes": self.min_votes,
            "alpha": self.alpha,
            "consensus": {u: dict(row) for u, row in (self.consensus or {}).items()},
        }


def text_features(text: str) -> list[float]:
    """Feature vector (N_FEATURES,) of an answer's text.

    Lower-cased words hashed into HASH_DIM buckets with ``zlib.crc32`` (stable across runs and
    machines, unlike Python's salted ``hash``), the bag L2-normalised so length shows only in the
    next feature; then log(1 + number of words), and the counts of "!" and "?".
    """
    words = _WORD.findall(text.lower())
    bag = [0.0] * HASH_DIM
    for word in words:
        bag[zlib.crc32(word.encode("utf-8")) % HASH_DIM] += 1.0
    norm = math.sqrt(sum(b * b for b in bag))
    if norm > 0:
        bag = [b / norm for b in bag]
    return [*bag, math.log1p(len(words)), float(text.count("!")), float(text.count("?"))]


def binomial_cdf_half(k: int, n: int) -> float:
    """P(K <= k) for K ~ Binomial(n, 1/2): the one-sided p-value of k agreements out of n.

    Naive equivalent: ``sum(math.comb(n, i) for i in range(k + 1)) / 2**n``; summed here in log
    space with ``lgamma`` (log-sum-exp) so a user with many votes costs O(k) float operations,
    not big-integer arithmetic.
    """
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0)
        for i in range(k + 1)
    ]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


def _check_vote(vote: Vote, index: int) -> None:
    if vote.kind == "rating":
        if vote.desirable is None:
            raise ValueError(
                f"vote {index} (user {vote.user!r}) is a rating with desirable=None; a rating "
                "needs desirable True (thumbs up) or False (thumbs down)."
            )
    elif vote.kind == "pair":
        if vote.rejected is None:
            raise ValueError(
                f"vote {index} (user {vote.user!r}) is a pair with rejected=None; a pair needs "
                "the answer that was not preferred in rejected."
            )
    else:
        raise ValueError(
            f"vote {index} (user {vote.user!r}) has kind {vote.kind!r}; "
            "valid kinds: 'rating', 'pair'."
        )


def _logistic_loss(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Mean log-loss plus L2_PENALTY / 2 * |w|^2 (the bias, theta's last entry, unpenalised)."""
    z = x @ theta  # (n,)
    w = theta[:-1]
    return (torch.nn.functional.softplus(z) - y * z).mean() + 0.5 * L2_PENALTY * (w @ w)


def _fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L2-regularised logistic regression, float64: (n, F + 1), (n,) -> theta (F + 1,).

    ``x``'s last column is the bias input (see :func:`_user_data`); its weight is unpenalised.

    Newton's method with a backtracking (Armijo) line search from zero: the objective is
    strictly convex, so this reaches the unique minimum in a few dozen steps, deterministically
    (no sampling, no random start). Newton rather than ``torch.optim.LBFGS`` because the first
    use of ``torch.optim`` costs seconds of lazy imports on every fresh process.
    """
    n = x.shape[0]
    penalty = torch.full((x.shape[1],), L2_PENALTY, dtype=x.dtype)
    penalty[-1] = 1e-9  # the bias is unpenalised; a whisker keeps the Hessian invertible
    theta = torch.zeros(x.shape[1], dtype=x.dtype)
    loss = _logistic_loss(x, y, theta)
    for _ in range(100):
        p = torch.sigmoid(x @ theta)  # (n,)
        grad = x.T @ (p - y) / n + penalty * theta
        if float(grad.abs().max()) < 1e-10:
            break
        hessian = (x.T * (p * (1 - p))) @ x / n + torch.diag(penalty)
        step = torch.linalg.solve(hessian, grad)
        t = 1.0
        while True:
            trial = theta - t * step
            trial_loss = _logistic_loss(x, y, trial)
            if trial_loss <= loss - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
            if t < 1e-10:  # no descent left at float64 precision: this is the minimum
                return theta
        theta, loss = trial, trial_loss
    return theta


def _user_data(votes: Sequence[Vote]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """user -> (x (n, N_FEATURES + 1), labels (n,), is-a-pair mask (n,)) of that user's votes.

    A rating's row is its answer's features minus those of the mean answer (every answer in
    ``votes``), label ``desirable``; a pair's row is f(chosen) - f(rejected), label 1. Centring
    gives a model learnt from pairs, which fix only differences, a zero point: an answer better
    than the average one is a thumbs up. Without it, a pair voter's model judged ratings by
    whatever every answer shares (length, common words), and its agreement with raters was
    noise. The last column is the bias input, 1 for a rating (the user's base rate of thumbs up)
    and 0 for a pair (a difference cancels it), so a rating voter's base rate never tilts a pair.
    """
    chosen = torch.tensor([text_features(v.completion) for v in votes], dtype=torch.float64)
    rejected = torch.tensor([text_features(v.rejected or "") for v in votes], dtype=torch.float64)
    is_pair = torch.tensor([v.kind == "pair" for v in votes], dtype=torch.bool)  # (N,)
    mean_answer = torch.cat([chosen, rejected[is_pair]]).mean(0)  # (N_FEATURES,)
    x = torch.where(is_pair[:, None], chosen - rejected, chosen - mean_answer)
    x = torch.cat([x, (~is_pair).to(torch.float64)[:, None]], dim=1)  # (N, N_FEATURES + 1)
    y = torch.tensor(
        [1.0 if v.kind == "pair" else float(bool(v.desirable)) for v in votes], dtype=torch.float64
    )
    rows: dict[str, list[int]] = {}
    for i, vote in enumerate(votes):
        rows.setdefault(vote.user, []).append(i)
    return {user: (x[idx], y[idx], is_pair[idx]) for user, idx in rows.items()}


def _training_set(
    x: torch.Tensor, y: torch.Tensor, pair: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add each pair vote mirrored (-x, label 0), so a pair-only user has both classes to learn."""
    return torch.cat([x, -x[pair]]), torch.cat([y, torch.zeros(int(pair.sum()), dtype=y.dtype)])


def detect_poisoning(
    votes: Sequence[Vote], min_votes: int = 20, alpha: float = 1e-3
) -> PoisoningReport:
    """Flag users whose labels disagree with most other users' preferences beyond chance.

    ``votes``: every judgement (any objects with the :class:`Vote` fields). ``min_votes``: votes
    a user needs to be compared (fewer: skipped, never flagged). ``alpha``: significance of the
    one-sided binomial test of agreement < 1/2. See the module docstring for the method and why
    honest users with different tastes are not flagged.
    """
    if min_votes < 2:
        raise ValueError(f"min_votes must be at least 2, got {min_votes}; the default is 20.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(
            f"alpha must lie strictly between 0 and 1, got {alpha}; the default is 1e-3."
        )
    for index, vote in enumerate(votes):
        _check_vote(vote, index)
    counts: dict[str, int] = {}
    for vote in votes:
        counts[vote.user] = counts.get(vote.user, 0) + 1
    compared = sorted(u for u, n in counts.items() if n >= min_votes)
    skipped = tuple(sorted(u for u, n in counts.items() if n < min_votes))
    if not compared:  # nothing to compare (and no answers to centre on when there are no votes)
        return PoisoningReport((), {}, {}, dict(sorted(counts.items())), skipped, min_votes, alpha)
    data = _user_data(votes)
    models = {u: _fit(*_training_set(*data[u])) for u in compared}
    agrees: dict[str, dict[str, int]] = {u: {} for u in compared}
    for u in compared:
        x, y, _ = data[u]
        for v in compared:
            if v != u:
                predicted = ((x @ models[v]) > 0).to(torch.float64)  # v's model, u's votes: (n_u,)
                agrees[u][v] = int((predicted == y).sum())
    agreement = {u: {v: k / counts[u] for v, k in row.items()} for u, row in agrees.items()}
    # Both directions pooled (module docstring): symmetric, twice the evidence of one direction.
    p_values = {
        u: {v: binomial_cdf_half(k + agrees[v][u], counts[u] + counts[v]) for v, k in row.items()}
        for u, row in agrees.items()
    }
    # One user at a time, the most certain first; a flagged user's model no longer counts towards
    # the consensus the rest are judged by (a poisoner must not make an honest user look odd).
    flagged: list[str] = []
    while True:
        judges = [u for u in compared if u not in flagged]
        consensus = {u: _consensus(u, judges, data[u], models) for u in compared}
        suspects = [u for u in judges if consensus[u]["votes"] > 0 and consensus[u]["p_value"] < alpha]
        if not suspects:
            break
        flagged.append(min(suspects, key=lambda u: (consensus[u]["p_value"], u)))
    flagged.sort()
    return PoisoningReport(
        flagged=tuple(flagged),
        agreement=agreement,
        p_values=p_values,
        votes=dict(sorted(counts.items())),
        skipped=skipped,
        min_votes=min_votes,
        alpha=alpha,
        consensus=consensus,
    )


def _consensus(
    user: str, judges: list[str], data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    models: dict[str, torch.Tensor],
) -> dict[str, float]:
    """``user``'s agreement with the ``judges`` (other than ``user``) where they agree (see
    :class:`PoisoningReport`)."""
    others = [v for v in judges if v != user]
    if len(others) < MIN_OTHERS:
        return {"votes": 0, "agreement": 0.5, "p_value": 1.0}
    x, y, _ = data
    says_up = torch.stack([((x @ models[v]) > 0).to(torch.float64) for v in others]).mean(0)  # (n,)
    agreed = (says_up >= CONSENSUS) | (says_up <= 1 - CONSENSUS)
    n = int(agreed.sum())
    k = int(((says_up[agreed] > 0.5).to(torch.float64) == y[agreed]).sum())
    return {"votes": n, "agreement": k / n if n else 0.5, "p_value": binomial_cdf_half(k, n) if n else 1.0}


def shared_weights(votes: Sequence[Vote], report: PoisoningReport) -> list[float]:
    """Per-vote weight for the shared model's data: 0.0 for a flagged user's votes, else 1.0."""
    flagged = set(report.flagged)
    return [0.0 if vote.user in flagged else 1.0 for vote in votes]

"""Poisoning detection on simulated users with known tastes.

Answers come in four kinds: polite or rude ("Ugh, fine: ..."), short or long. Honest users: A
likes polite and short, B polite and long (A and B are opposed on length), C polite whatever the
length. The poisoner P flips politeness: likes rude answers. P must be flagged; A, B and C,
whose tastes differ but are honest, must not.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from rlft.online.poisoning import (
    HASH_DIM,
    N_FEATURES,
    binomial_cdf_half,
    detect_poisoning,
    shared_weights,
    text_features,
)


@dataclass(frozen=True)
class Judgement:
    """The fields of rlft.feedback.live.LiveJudgement that detection reads."""

    user: str
    kind: str
    prompt: str
    completion: str
    rejected: str | None
    desirable: bool | None


FACTS = [
    "the train leaves at nine",
    "water boils at one hundred degrees",
    "the museum opens on monday",
    "paris is the capital of france",
    "the meeting moved to room four",
    "rice needs twenty minutes",
    "the library closes at six",
    "a week has seven days",
    "the bus stop is on main street",
    "tea steeps in three minutes",
]
EXTRAS = [
    "It is worth checking the schedule again before you go.",
    "Many people find that this works well in practice.",
    "The details can change over time, so keep an eye on updates.",
    "There is also a longer explanation in the guide.",
    "You can find more information on the official website.",
    "Some people prefer to plan a little extra time.",
    "This has been the case for quite a few years now.",
    "A friend of mine had the same question last month.",
]
Taste = Callable[[bool, bool], bool]  # (polite, long) -> liked
TASTES: dict[str, Taste] = {
    "A": lambda polite, long: polite and not long,
    "B": lambda polite, long: polite and long,
    "C": lambda polite, long: polite,
    "P": lambda polite, long: not polite,
}


def answer(rng: random.Random, polite: bool, long: bool) -> str:
    fact = rng.choice(FACTS)
    extra = " ".join(rng.sample(EXTRAS, 3)) + " " if long else ""
    if polite:
        return f"Sure, happy to help: {fact}. {extra}Thank you for asking."
    return f"Ugh, fine: {fact}. {extra}Stop bothering me."


def ratings(
    user: str, n: int, seed: int, noise: float = 0.05, taste: str | None = None, polite_share: float = 0.5
) -> list[Judgement]:
    """n thumbs up / down on random answers by the taste of ``taste`` (default: the user's own),
    each label flipped with probability ``noise``."""
    rng, out, likes = random.Random(seed), [], TASTES[taste or user]
    for i in range(n):
        polite, long = rng.random() < polite_share, rng.random() < 0.5
        liked = likes(polite, long) != (rng.random() < noise)
        out.append(
            Judgement(user, "rating", f"question {i}", answer(rng, polite, long), None, liked)
        )
    return out


def pairs(user: str, n: int, seed: int) -> list[Judgement]:
    """n pairs of answers of two different kinds; the user prefers the one they like, and picks
    either when they like both or neither (the chat page makes them choose)."""
    rng, out, likes = random.Random(seed), [], TASTES[user]
    while len(out) < n:
        first = (rng.random() < 0.5, rng.random() < 0.5)
        second = (rng.random() < 0.5, rng.random() < 0.5)
        if first == second:
            continue
        a, b = answer(rng, *first), answer(rng, *second)
        tie = likes(*first) == likes(*second)
        first_wins = rng.random() < 0.5 if tie else likes(*first)
        chosen, rejected = (a, b) if first_wins else (b, a)
        out.append(Judgement(user, "pair", f"question {len(out)}", chosen, rejected, None))
    return out


def everyone(users: str, n: int, seed: int) -> list[Judgement]:
    return [v for i, user in enumerate(users) for v in ratings(user, n, seed * 10 + i)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_label_flipper_is_flagged_and_users_with_different_tastes_are_not(seed):
    votes = everyone("ABCP", 80, seed)
    report = detect_poisoning(votes)
    assert report.flagged == ("P",)
    assert report.votes == {"A": 80, "B": 80, "C": 80, "P": 80} and report.skipped == ()
    # P disagrees with every honest user beyond chance; A and B, opposed on length, do not
    # disagree beyond chance with each other, and nobody honest with C.
    assert all(report.p_values["P"][v] < 1e-3 for v in "ABC")
    assert report.p_values["A"]["B"] > 1e-2
    assert all(report.p_values[u]["C"] > 1e-2 for u in "AB")
    assert report.p_values["A"]["P"] == report.p_values["P"]["A"]  # the test pools both directions
    # C likes exactly what P dislikes: C's model gets almost none of P's labels right.
    assert report.agreement["P"]["C"] < 0.15
    weights = shared_weights(votes, report)
    assert weights == [0.0 if v.user == "P" else 1.0 for v in votes]


@pytest.mark.parametrize("seed", [0, 1])
def test_users_opposed_on_most_answers_are_not_flagged_once_the_flipper_is_out(seed):
    """When the model's answers are mostly polite (as after a round that learned politeness), A and
    B disagree beyond chance on most of them. Peeling the worst user first flags P; without P,
    A and B each disagree with one of two others: no majority."""
    votes = [v for i, user in enumerate("ABCP") for v in ratings(user, 160, seed * 10 + i, polite_share=0.85)]
    report = detect_poisoning(votes)
    assert report.p_values["A"]["B"] < 1e-3  # opposed on most answers: beyond chance
    assert report.flagged == ("P",)


def test_with_only_two_users_nobody_is_flagged():
    """C and P disagree beyond chance, but with one other user there is no majority to side with."""
    report = detect_poisoning(everyone("CP", 80, 0))
    assert report.p_values["C"]["P"] < 1e-6
    assert report.flagged == ()
    assert detect_poisoning(everyone("AB", 80, 0)).flagged == ()


def test_with_three_users_the_odd_one_out_is_undecidable_and_nobody_is_flagged():
    """A (short), B (long), P (rude): A is the odd one out on short polite answers exactly as P is
    on rude ones, so nobody is flagged until a fourth user makes a consensus."""
    report = detect_poisoning(everyone("ABP", 80, 0))
    assert report.flagged == ()
    assert all(c["votes"] == 0 for c in report.consensus.values())
    assert detect_poisoning(everyone("ABCP", 80, 0)).flagged == ("P",)


def test_a_user_with_too_few_votes_is_skipped_not_flagged():
    votes = everyone("ABC", 80, 3) + ratings("P", 15, 99)
    report = detect_poisoning(votes, min_votes=20)
    assert report.skipped == ("P",)
    assert report.flagged == ()
    assert "P" not in report.agreement and report.votes["P"] == 15
    assert set(report.agreement["A"]) == {"B", "C"}
    assert shared_weights(votes, report) == [1.0] * len(votes)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_poisoner_who_votes_on_pairs_is_flagged_and_an_honest_pair_voter_is_not(seed):
    """Rating and pair voters are compared on one scale: A and B rate, C and P compare pairs."""
    votes = [
        *ratings("A", 80, seed * 10),
        *ratings("B", 80, seed * 10 + 1),
        *pairs("C", 60, seed * 10 + 2),
        *pairs("P", 60, seed * 10 + 3),
    ]
    report = detect_poisoning(votes)
    assert report.flagged == ("P",)
    assert report.p_values["P"]["C"] < 1e-6  # C likes what P dislikes
    # C's pair model judges A's thumbs (the mean answer gives pairs a zero point) and agrees.
    assert report.agreement["A"]["C"] > 0.5 and report.agreement["C"]["A"] > 0.5
    # A ratings-only crowd with a pair-voting poisoner.
    crowd = [v for i, user in enumerate("ABC") for v in ratings(user, 80, seed * 10 + 5 + i)]
    assert detect_poisoning([*crowd, *pairs("P", 40, seed * 10 + 9)]).flagged == ("P",)


def test_binomial_tail_matches_hand_values():
    assert binomial_cdf_half(1, 10) == pytest.approx(11 / 1024, rel=1e-12)  # (1 + 10) / 2^10
    assert binomial_cdf_half(0, 3) == pytest.approx(1 / 8, rel=1e-12)
    assert binomial_cdf_half(2, 4) == pytest.approx(11 / 16, rel=1e-12)  # (1 + 4 + 6) / 16
    assert binomial_cdf_half(5, 5) == 1.0 and binomial_cdf_half(-1, 5) == 0.0
    exact = sum(math.comb(200, i) for i in range(61)) / 2**200
    assert binomial_cdf_half(60, 200) == pytest.approx(exact, rel=1e-9)


def test_features_are_stable_hashed_words_and_length():
    f = text_features("Thank you! Thank you?")
    assert len(f) == N_FEATURES
    bag, words, bangs, questions = f[:HASH_DIM], f[HASH_DIM], f[HASH_DIM + 1], f[HASH_DIM + 2]
    assert math.sqrt(sum(b * b for b in bag)) == pytest.approx(1.0)
    # "thank" and "you" twice each: two buckets of 1/sqrt(2) (zlib.crc32, so the same everywhere).
    assert sorted(b for b in bag if b)[-2:] == pytest.approx([2**-0.5, 2**-0.5])
    assert (words, bangs, questions) == (pytest.approx(math.log1p(4)), 1.0, 1.0)
    assert text_features("THANK you")[:HASH_DIM] == text_features("thank YOU")[:HASH_DIM]
    assert text_features("") == [0.0] * N_FEATURES


def test_detection_is_deterministic_and_the_report_is_json():
    votes = everyone("ABCP", 60, 4)
    first, second = detect_poisoning(votes), detect_poisoning(list(votes))
    assert first == second
    payload = json.loads(json.dumps(first.to_json(), allow_nan=False))
    assert payload["flagged"] == list(first.flagged)
    assert payload["p_values"]["P"]["C"] == first.p_values["P"]["C"]
    assert payload["min_votes"] == 20 and payload["alpha"] == 1e-3


def test_bad_input_names_the_problem():
    good = ratings("A", 3, 0)
    with pytest.raises(ValueError, match="vote 3 .*desirable=None"):
        detect_poisoning([*good, Judgement("A", "rating", "q", "text", None, None)])
    with pytest.raises(ValueError, match="vote 0 .*rejected=None"):
        detect_poisoning([Judgement("A", "pair", "q", "text", None, None)])
    with pytest.raises(ValueError, match="valid kinds: 'rating', 'pair'"):
        detect_poisoning([Judgement("A", "stars", "q", "text", None, True)])
    with pytest.raises(ValueError, match="min_votes must be at least 2"):
        detect_poisoning(good, min_votes=1)
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        detect_poisoning(good, alpha=0.0)

"""A fairness term for any reward: penalise completions whose reward depends on a demographic group.

``rlft audit bias`` measures disparity after the fact; this term acts on it while the policy
learns. For each sample whose prompt names a group of one attribute of the bias templates
(``gender``: female ``She``, ``The woman`` ... / male ``He``, ``The man`` ...), the inner reward
is also computed on the counterfactual samples — the same prompt and completion with the group's
terms swapped for every other group's — and the spread of those rewards is subtracted::

    r_i' = r(p_i, c_i) - weight * (max_g r(swap_g(p_i), swap_g(c_i)) - min_g r(swap_g(p_i), swap_g(c_i)))

A completion that would be scored the same whoever the prompt is about pays nothing; one that is
rewarded only because of the group (the doctor for him, the nurse for her, from a reward model
that learned a stereotype) pays the gap. The penalty differs between completions of one prompt,
so it survives the per-prompt baselines of GRPO and RLOO (a per-group constant would not: a
baseline removes it). Prompts that name no group, or several, are left alone. Logged as
``reward/fairness_gap`` (the mean counterfactual spread, before weighting).

A recipe::

    reward:
      type: fairness
      attribute: gender            # an attribute of the shipped (or 'templates:') bias templates
      weight: 1.0
      reward: {type: python, function: my_rewards:score}   # the reward being made fair

Terms are swapped by position: the i-th term of one group becomes the i-th term of another
(``She`` <-> ``He``, ``My sister`` <-> ``My brother``), so write the groups' terms in matching
order when extending the templates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rlft.rewards.base import RewardOutput, context_rows, score


def counterfactual_gaps(scores_per_group: Sequence[Sequence[float]]) -> list[float]:
    """Per sample, the largest minus the smallest reward over its counterfactual versions.

    ``scores_per_group[g][i]`` is sample i's reward with its group terms swapped for group g's
    (NaN where sample i names no single group: its gap is 0).
    """
    gaps = []
    for column in zip(*scores_per_group, strict=True):
        finite = [v for v in column if v == v]
        gaps.append(max(finite) - min(finite) if len(finite) > 1 else 0.0)
    return gaps


class GroupSwapper:
    """Finds which group a text names and rewrites it as if it named another group."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = {g: list(terms) for g, terms in groups.items()}
        self._patterns = {
            g: re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + r")\b",
                          re.IGNORECASE)  # fmt: skip
            for g, terms in self.groups.items()
        }

    def group_of(self, text: str) -> str | None:
        """The one group whose terms ``text`` mentions; None for none or several."""
        found = [g for g, pattern in self._patterns.items() if pattern.search(text)]
        return found[0] if len(found) == 1 else None

    def swap(self, text: str, source: str, target: str) -> str:
        """``text`` with each of ``source``'s terms replaced by ``target``'s term at the same position."""
        lowered = [t.lower() for t in self.groups[source]]
        replacements = self.groups[target]

        def replace(match: re.Match[str]) -> str:
            word = match.group(0)
            new = replacements[lowered.index(word.lower()) % len(replacements)]
            return new[0].lower() + new[1:] if word[:1].islower() else new

        return self._patterns[source].sub(replace, text)


class FairnessPenalty:
    """``reward`` minus ``weight`` times each sample's counterfactual reward gap across groups."""

    name = "fairness"

    def __init__(self, reward: Any, groups: dict[str, list[str]], weight: float = 1.0) -> None:
        self.reward = reward
        self.weight = weight
        self.swapper = GroupSwapper(groups)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> RewardOutput:
        inner = score(self.reward, prompts, completions, **context)
        sources = [self.swapper.group_of(p) for p in prompts]
        rows = [i for i, g in enumerate(sources) if g is not None]
        per_group = []
        for target in self.swapper.groups:
            # A sample's own group is the sample itself: its reward is already in `inner`.
            column = [r if g == target else float("nan") for r, g in zip(inner.rewards, sources, strict=True)]
            swapped = [i for i in rows if sources[i] != target]
            if swapped:
                values = score(
                    self.reward,
                    [self.swapper.swap(prompts[i], sources[i], target) for i in swapped],
                    [self.swapper.swap(completions[i], sources[i], target) for i in swapped],
                    **context_rows(context, swapped, len(prompts)),
                ).rewards
                for i, value in zip(swapped, values, strict=True):
                    column[i] = value
            per_group.append(column)
        gaps = counterfactual_gaps(per_group)
        shaped = [r - self.weight * gap for r, gap in zip(inner.rewards, gaps, strict=True)]
        components = dict(inner.components) or {"unshaped": inner.rewards}
        components["fairness_gap"] = gaps
        return RewardOutput(shaped, components)

"""Bias audit: a deliberately biased reward is flagged, an unbiased one is not; CLI + card."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlft.responsible.bias import Attribute, audit, bootstrap_ci, fill, load_templates

FEMALE = ("The woman", "My sister", "She")
SMALL = Attribute(
    "gender",
    {"female": list(FEMALE), "male": ["The man", "My brother", "He"]},
    [f"{{term}} {verb}" for verb in ("said", "went to", "is", "likes", "wrote", "saw", "found", "made",
                                      "asked", "became", "bought", "met")],
    [],
)


def _uniform(prompt: str, completion: str) -> float:
    return int(hashlib.sha256(f"{prompt}|{completion}".encode()).hexdigest()[:8], 16) / 16**8


def biased_reward(prompts, completions, **_):
    """Noise, plus 0.5 whenever the prompt is about a woman."""
    return [_uniform(p, c) + 0.5 * p.startswith(FEMALE) for p, c in zip(prompts, completions, strict=True)]


TERMS = (*FEMALE, "The man", "My brother", "He")


def unbiased_reward(prompts, completions, **_):
    """Noise that depends on the template only, never on the group term or on what the policy
    wrote (which differs between groups, so noise over it would differ by chance)."""
    def template(prompt: str) -> str:
        return next(prompt.replace(t, "{term}", 1) for t in TERMS if prompt.startswith(t))

    return [_uniform(template(p), "") for p in prompts]


@pytest.fixture(scope="module")
def policy(tiny_run: Path):
    from rlft.models.loading import load_policy

    return load_policy(str(tiny_run / "final_model"))


def _reward_row(result: dict) -> dict:
    (row,) = [r for r in result["disparities"] if r["measure"] == "reward"]
    return row


def test_biased_reward_is_detected_with_a_ci_excluding_zero(policy):
    row = _reward_row(audit({"final": policy}, {"gender": SMALL}, biased_reward, samples=1, max_new_tokens=2))
    assert row["significant"] and row["ci_low"] > 0.2
    assert row["difference"] == pytest.approx(0.5, abs=0.2)


def test_unbiased_reward_is_not_flagged(policy):
    row = _reward_row(audit({"final": policy}, {"gender": SMALL}, unbiased_reward, samples=1, max_new_tokens=2))
    assert not row["significant"] and row["ci_low"] <= 0 <= row["ci_high"]


def test_bootstrap_ci_hand_values():
    assert bootstrap_ci(np.full(10, 0.3)) == pytest.approx((0.3, 0.3))
    low, high = bootstrap_ci(np.array([-1.0, 1.0] * 20))
    assert low < 0 < high and high - low < 1


def test_templates_ship_five_attributes_and_are_extendable(tmp_path: Path):
    shipped = load_templates()
    assert set(shipped) >= {"gender", "ethnicity", "religion", "age", "nationality"}
    extra = tmp_path / "extra.yaml"
    extra.write_text("disability:\n  groups: {disabled: [The blind man], abled: [The man]}\n"
                     "  templates: ['{term} works as a']\n  continuations: [' teacher']\n")
    assert "disability" in load_templates(extra)
    extra.write_text("broken:\n  groups: {a: [x], b: [y]}\n  templates: ['no slot']\n")
    with pytest.raises(Exception, match="term"):
        load_templates(extra)
    assert fill("After that, {term} left", "The woman") == "After that, the woman left"


def test_cli_audits_base_and_final_and_the_card_shows_it(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    templates = tmp_path / "t.yaml"
    templates.write_text("gender:\n  groups: {female: [She, The woman], male: [He, The man]}\n"
                         "  templates: ['{term} is', '{term} works as a', '{term} said']\n"
                         "  continuations: [' kind', ' a nurse']\n")
    cmd = [sys.executable, "-m", "rlft.cli.main", "audit", "bias", str(run), "--templates", str(templates),
           "--attributes", "gender", "--samples", "1", "--max-new-tokens", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads((run / "bias_audit.json").read_text())
    assert {r["model"] for r in result["disparities"]} == {"base", "final"}
    assert {r["measure"] for r in result["disparities"]} == {"logprob", "sentiment"}
    assert set(result["group_means"]["final"]["gender"]["logprob"]) == {"female", "male"}
    card = subprocess.run([sys.executable, "-m", "rlft.cli.main", "card", str(run)], capture_output=True, text=True)
    assert card.returncode == 0, card.stderr
    md = (run / "model_card.md").read_text()
    assert "| final | gender | logprob | female - male |" in md and "Not run" not in md

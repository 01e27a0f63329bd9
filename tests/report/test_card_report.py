"""`rlft card` and `rlft report` on a real (tiny) run, and the per-token values they show."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlft.report.report import token_views


def _rlft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True, timeout=120)


def _images_are_valid_pngs(page: str) -> int:
    import base64

    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    return len(images)


def test_card_is_filled_from_the_run(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "privacy.json").write_text(json.dumps({"counts": {"EMAIL": 3, "PHONE": 1}}))
    out = _rlft("card", str(run))
    assert out.returncode == 0, out.stderr
    md = (run / "model_card.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    for needle in ("## Model details", "GRPO", "algorithm.kl_coef | 0.04", "## Reward definition", "## KL budget",
                   "## Data provenance", "| EMAIL | 3 |", f"{summary['final_accuracy']:.1%}",
                   "## Bias audit", "Not run", "## Limitations", "## Intended use", "train.steps | 6"):
        assert needle in md, needle
    page = (run / "model_card.html").read_text()
    assert _images_are_valid_pngs(page) >= 4  # learning curves


def test_report_has_curves_samples_and_token_view(tiny_run: Path, tmp_path: Path):
    out_file = tmp_path / "report.html"
    out = _rlft("report", str(tiny_run), "-o", str(out_file), "--prompts", "2")
    assert out.returncode == 0, out.stderr
    page = out_file.read_text()
    assert _images_are_valid_pngs(page) == 6  # reward, accuracy, KL, entropy, length, groups without signal
    samples = [json.loads(line) for line in (tiny_run / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"] in page and "step 3" in page and "step 6" in page
    assert page.count('class="completion"') == 2 * 4  # 2 prompts x group size 4
    assert "logprob change" in page
    from rlft.report.perf import perf_figures

    figures = perf_figures([json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()])
    assert f"completion tokens/s (median step)</td><td>{figures['tokens_per_s']:.4g}<" in page
    assert "GPU peak memory" not in page  # a CPU run has no GPU figures


def test_token_values_match_a_direct_computation(tiny_run: Path):
    """logprob change is log p_final - log p_base of each token, computed here token by token."""
    from rlft.models.loading import load_policy

    views = token_views(tiny_run, n_prompts=1)
    final, tokenizer = load_policy(str(tiny_run / "final_model"))
    base, _ = load_policy(str(tiny_run / "base_model"))
    view = views[0]
    ids = tokenizer(view.prompt).input_ids
    # The view stores each token decoded; encoding it again gives back its id.
    token_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in view.tokens]
    if any(len(t) != 1 for t in token_ids):
        pytest.skip("a token does not round-trip through decode/encode")
    sequence = torch.tensor([ids + [t[0] for t in token_ids]])
    with torch.no_grad():
        lp_final = torch.log_softmax(final(sequence).logits[0], -1)
        lp_base = torch.log_softmax(base(sequence).logits[0], -1)
    for k, (tok,) in enumerate(token_ids):
        position = len(ids) + k - 1  # logits at position i predict token i + 1
        expected = (lp_final[position, tok] - lp_base[position, tok]).item()
        assert view.logprob_change[k] == pytest.approx(expected, abs=1e-4)
    group = views[:4]
    rewards = torch.tensor([v.reward for v in group])
    if rewards.std() > 0:
        expected_adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        assert [v.advantage[0] for v in group] == pytest.approx(expected_adv.tolist(), abs=1e-3)
    else:
        assert all(a == 0 for v in group for a in v.advantage)


def test_card_on_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path: Path):
    out = _rlft("card", str(tmp_path))
    assert out.returncode == 2 and "not a run folder" in out.stderr

"""``rlft report RUN``: one HTML page that shows what a run did and what the policy learned.

Learning curves come from ``metrics.jsonl`` and ``evals.jsonl``; sample completions from early
and late in training from ``samples.jsonl``. The per-token view loads ``base_model/`` (the
reference of the KL penalty) and ``final_model/``, samples G completions of a few held-out
prompts from the final policy, and colours each completion token by

    advantage    the GRPO group-normalised advantage of its completion (outcome reward, so the
                 same on every token of a completion)
    KL           the per-token KL estimate (the recipe's estimator) of final vs base policy
    logprob change   log p_final(token) - log p_base(token)

so a reader sees which tokens the policy now prefers, and whether those completions were rewarded.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.errors import RlftError
from rlft.responsible.document import Document

CURVES = [
    ("reward/mean", "mean reward (train)"),
    ("eval/accuracy", "held-out accuracy"),
    ("policy/kl", "KL to reference"),
    ("policy/entropy", "entropy (nats/token)"),
    ("completions/mean_length", "completion length (tokens)"),
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def check_run_folder(run: Path) -> None:
    if not (run / "config.yaml").is_file():
        raise RlftError(f"{run} is not a run folder (no config.yaml). Give the folder a training run wrote.")
    if not (run / "metrics.jsonl").is_file():
        raise RlftError(f"{run} has no metrics.jsonl yet: the run has not finished an RL step.")


def curve_series(run: Path) -> dict[str, tuple[list[float], list[float]]]:
    """metric -> (steps, values). Held-out accuracy starts at step 0 with the base policy's."""
    metrics = read_jsonl(run / "metrics.jsonl")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key, _ in CURVES:
        points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
        if key == "eval/accuracy":
            base = read_json(run / "base_eval.json") or {}
            evals = read_jsonl(run / "evals.jsonl")
            points = [(0, base["eval/accuracy"])] if "eval/accuracy" in base else []
            points += [(e["step"], e["eval/accuracy"]) for e in evals]
        if points:
            series[key] = ([p[0] for p in points], [p[1] for p in points])
    return series


def plot_png(steps: list[float], values: list[float], title: str) -> bytes:
    """A small line plot as PNG bytes (matplotlib, imported here so it stays optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(4.8, 3.0), dpi=100)
    ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("RL step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def learning_curves(run: Path) -> list[tuple[str, bytes]]:
    """(title, PNG) for each curve the run has data for."""
    titles = dict(CURVES)
    return [(titles[k], plot_png(s, v, titles[k])) for k, (s, v) in curve_series(run).items()]


@dataclass
class TokenView:
    """One completion with per-token values, each (T,) long."""

    prompt: str
    completion: str
    reward: float
    tokens: list[str]
    advantage: list[float]
    kl: list[float]
    logprob_change: list[float]


def token_views(run: Path, n_prompts: int = 4, seed: int = 0) -> list[TokenView]:
    """Sample ``group_size`` completions of ``n_prompts`` held-out prompts from the final policy
    and score each token under the final and the base policy (see the module docstring)."""
    import torch
    import yaml

    from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
    from rlft.algorithms.kl import KL_ESTIMATORS
    from rlft.config import config_from_dict
    from rlft.evaluation import decode_completions
    from rlft.models.loading import load_policy
    from rlft.rollout.sampling import encode_prompts, sample, sequence_logprobs
    from rlft.tasks import build_task

    for name in ("base_model", "final_model"):
        if not (run / name / "config.json").exists():
            raise RlftError(f"{run / name} is missing; the per-token view needs a finished run.")
    # Read only the fields needed from the raw recipe, so runs written by older versions still work.
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    algo, sampling = recipe.get("algorithm", {}), recipe.get("rollout", {})
    from rlft.responsible.privacy import private_task

    task = private_task(
        build_task(config_from_dict({"task": recipe.get("task", {})}).task),
        bool(recipe.get("privacy", {}).get("scrub_pii", True)),
    )
    policy, tokenizer = load_policy(str(run / "final_model"))
    base, _ = load_policy(str(run / "base_model"))
    policy.eval()
    G, temperature = int(algo.get("group_size", 8)), float(sampling.get("temperature", 1.0))
    estimator = algo.get("advantage_estimator") or algo.get("name", "grpo")
    problems = [p for p in task.eval_problems[:n_prompts] for _ in range(G)]
    ids, mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    rollout = sample(
        policy, ids, mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=int(sampling.get("max_new_tokens", 8)), temperature=temperature,
        top_p=float(sampling.get("top_p", 1.0)),
        generator=torch.Generator().manual_seed(seed),
    )
    completions = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    rewards = torch.tensor(task.reward(completions, problems), dtype=torch.float32)  # (B,)
    last = (rollout.completion_mask.sum(-1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(rollout.completion_mask)
    token_rewards[torch.arange(len(problems)), last] = rewards
    advantages, _ = ADVANTAGE_ESTIMATORS[estimator](
        token_rewards, rollout.completion_mask, values=None, group_size=G,
        scale_rewards=bool(algo.get("scale_rewards", True)),
    )  # (B, T)
    with torch.inference_mode():
        logprobs, _ = sequence_logprobs(policy, rollout, temperature)  # (B, T)
        base_logprobs, _ = sequence_logprobs(base, rollout, temperature)  # (B, T)
    kl = KL_ESTIMATORS[algo.get("kl_estimator", "k3")](logprobs, base_logprobs)  # (B, T)
    views = []
    for i, problem in enumerate(problems):
        n = int(rollout.completion_mask[i].sum())
        token_ids = rollout.completion_ids[i, :n].tolist()
        views.append(TokenView(
            prompt=problem.prompt, completion=completions[i], reward=float(rewards[i]),
            tokens=[tokenizer.decode([t]) for t in token_ids],
            advantage=advantages[i, :n].tolist(), kl=kl[i, :n].tolist(),
            logprob_change=(logprobs[i, :n] - base_logprobs[i, :n]).tolist(),
        ))
    return views


def _visible(text: str) -> str:
    """Control and other unprintable characters as escapes (``\\x1e``), so no glyph is a blank box."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _percent(value: Any) -> Any:
    return f"{value:.1%}" if isinstance(value, (int, float)) else value


def _colour(value: float, scale: float) -> str:
    """Green for positive, red for negative; opacity grows with |value| / scale."""
    alpha = min(abs(value) / scale, 1.0) * 0.85 if scale > 0 else 0.0
    rgb = "40,160,60" if value >= 0 else "210,50,50"
    return f"rgba({rgb},{alpha:.2f})"


def token_view_html(views: list[TokenView]) -> str:
    scales = {
        name: max((abs(x) for v in views for x in getattr(v, name)), default=0.0)
        for name in ("advantage", "kl", "logprob_change")
    }
    labels = {"advantage": "advantage", "kl": "KL to base", "logprob_change": "logprob change"}
    parts = ['<p class="legend">Green: positive, red: negative; stronger colour, larger magnitude '
             f"(full colour at |advantage| {scales['advantage']:.3g}, KL {scales['kl']:.3g}, "
             f"|logprob change| {scales['logprob_change']:.3g}). Hover a token for its values.</p>"]
    for view in views:
        rows = []
        for name, label in labels.items():
            toks = "".join(
                f'<span class="tok" style="background:{_colour(val, scales[name])}" '
                f'title="advantage {a:+.3f} | KL {k:.3f} | logprob change {d:+.3f}">'
                f"{html.escape(_visible(tok)).replace(' ', '&middot;') or '&#8709;'}</span>"
                for tok, val, a, k, d in zip(view.tokens, getattr(view, name), view.advantage, view.kl,
                                             view.logprob_change, strict=True)
            )
            rows.append(f'<div class="tokens"><span class="label">{label}</span>'
                        f"{html.escape(view.prompt)}{toks}</div>")
        parts.append(f'<div class="completion"><b>{html.escape(view.prompt)}</b> &rarr; '
                     f"{html.escape(repr(view.completion))} (reward {view.reward:g})" + "".join(rows) + "</div>")
    return "\n".join(parts)


def build_report(run: Path, n_prompts: int = 4, per_token: bool = True) -> Document:
    check_run_folder(run)
    summary = read_json(run / "summary.json") or {}
    doc = Document(f"Run report: {run.name}")
    overview = doc.section("Overview")
    overview.table(["", "value"], [
        ["run folder", str(run)], ["algorithm", summary.get("algorithm", "?")],
        ["RL steps", summary.get("steps", len(read_jsonl(run / "metrics.jsonl")))],
        ["held-out accuracy before RL", _percent(summary.get("base_accuracy"))],
        ["held-out accuracy after RL", _percent(summary.get("final_accuracy"))],
        ["wall time (s)", summary.get("seconds")],
    ])
    curves = doc.section("Learning curves")
    for title, png in learning_curves(run):
        curves.image(title, png)
    samples = read_jsonl(run / "samples.jsonl")
    section = doc.section("Sample completions, early vs late")
    if samples:
        steps = sorted({s["step"] for s in samples})
        early, late = steps[0], steps[-1]
        by_prompt = {s["prompt"]: s for s in samples if s["step"] == late}
        rows = [[s["prompt"], s.get("answer", ""), s["completion"], s["reward"],
                 by_prompt.get(s["prompt"], {}).get("completion", ""), by_prompt.get(s["prompt"], {}).get("reward", "")]
                for s in samples if s["step"] == early]
        section.text(f"Held-out prompts, greedy completions at step {early} and at step {late}.")
        section.table(["prompt", "answer", f"step {early}", "reward", f"step {late}", "reward"], rows)
    else:
        section.text("No samples.jsonl in this run.")
    if per_token:
        views = token_views(run, n_prompts)
        section = doc.section("Per-token view: what the policy learned to do differently")
        section.text(
            f"{len(views)} completions sampled from final_model for held-out prompts; each completion "
            "is shown three times, its tokens coloured by GRPO advantage, by the per-token KL estimate "
            "against base_model (the KL reference), and by log p_final - log p_base."
        )
        fallback = "\n".join(
            f"- `{v.prompt}` -> `{v.completion}` reward {v.reward:g}; logprob change per token: "
            + ", ".join(f"{t!r} {d:+.2f}" for t, d in zip(v.tokens, v.logprob_change, strict=True))
            for v in views
        )
        section.raw_html(token_view_html(views), fallback)
    return doc


def write_report(run: Path, out: Path | None = None, n_prompts: int = 4) -> Path:
    out = out or run / "report.html"
    out.write_text(build_report(run, n_prompts).html())
    return out

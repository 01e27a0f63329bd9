"""``rlft audit bias``: counterfactual bias audit of a policy, before and after RL.

For each attribute (gender, ethnicity, religion, age, nationality; see
``rlft/rewards/templates/bias_templates.yaml``, loaded by ``rlft.rewards.bias_templates``) every
template is filled with the terms of each group, so the prompts of one template differ only in
the demographic term. Per template and group we measure

    logprob    mean per-token log-probability of each fixed continuation (" kind", " lazy", ...)
    sentiment  VADER compound score (-1..1) of sampled completions
    reward     a user-supplied reward of sampled completions (``--reward module:function``)

averaged over the group's terms (and continuations or samples). A disparity between groups a and
b is the mean over templates of (value_a - value_b); its 95% confidence interval is a percentile
bootstrap over templates (the templates are the independent units; terms within a template are
not). With few templates the interval is wide, and with many group pairs some intervals exclude
zero by chance (no multiple-comparison correction): read them as a screen, not a proof.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlft.errors import RlftError
from rlft.rewards.bias_templates import TEMPLATES_FILE, Attribute, load_templates  # noqa: F401 (re-exported)


def fill(template: str, term: str) -> str:
    """The prompt; a term placed mid-sentence starts lower-case ("After that, the woman")."""
    if not template.startswith("{term}") and term[:1].isupper() and not term[1:2].isupper():
        term = term[0].lower() + term[1:]
    return template.replace("{term}", term)


def continuation_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str]) -> np.ndarray:
    """Mean per-token log-probability of each continuation after its prompt, (N,)."""
    import torch

    from rlft.models.tokens import encode_prompts
    from rlft.rollout.sampling import sequence_logprobs
    from rlft.types import Rollout

    out = []
    for start in range(0, len(prompts), 64):
        chunk_p, chunk_c = prompts[start : start + 64], continuations[start : start + 64]
        prompt_ids, prompt_mask = encode_prompts(tokenizer, chunk_p)
        encoded = [tokenizer(c, add_special_tokens=False).input_ids for c in chunk_c]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(encoded), width)
        for i, e in enumerate(encoded):
            ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1.0
        rollout = Rollout(prompt_ids, prompt_mask, ids, mask, torch.zeros_like(mask))
        with torch.inference_mode():
            logprobs, _ = sequence_logprobs(model, rollout)  # (B, T), 0 where masked
        out.append((logprobs.sum(-1) / mask.sum(-1)).numpy())
    return np.concatenate(out)


def sample_completions(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, seed: int) -> list[str]:
    import torch

    from rlft.models.tokens import decode_completions, encode_prompts
    from rlft.rollout.sampling import sample

    ids, mask = encode_prompts(tokenizer, prompts)
    rollout = sample(model, ids, mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     max_new_tokens=max_new_tokens, generator=torch.Generator().manual_seed(seed))
    return decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)


def sentiment_scores(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment of each text (offline lexicon)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise RlftError("The sentiment measure needs vaderSentiment: pip install 'rlft[responsible]'.") from None
    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


RewardFn = Callable[..., Any]


def measure(model: Any, tokenizer: Any, attribute: Attribute, reward: RewardFn | None = None,
            samples: int = 2, max_new_tokens: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """measure name -> (templates, groups) array of group means per template."""
    groups = list(attribute.groups)
    cells = [(t, g, fill(template, term)) for t, template in enumerate(attribute.templates)
             for g, group in enumerate(groups) for term in attribute.groups[group]]

    def per_cell(values: np.ndarray, repeat: int) -> np.ndarray:
        table = np.zeros((len(attribute.templates), len(groups)))
        counts = np.zeros_like(table)
        for k, (t, g, _) in enumerate(cells):
            table[t, g] += values[k * repeat : (k + 1) * repeat].sum()
            counts[t, g] += repeat
        return table / counts

    results: dict[str, np.ndarray] = {}
    if attribute.continuations:
        prompts = [p for _, _, p in cells for _ in attribute.continuations]
        conts = [c for _ in cells for c in attribute.continuations]
        results["logprob"] = per_cell(continuation_logprobs(model, tokenizer, prompts, conts), len(attribute.continuations))
    prompts = [p for _, _, p in cells for _ in range(samples)]
    completions = sample_completions(model, tokenizer, prompts, max_new_tokens, seed)
    results["sentiment"] = per_cell(np.array(sentiment_scores(completions)), samples)
    if reward is not None:
        from rlft.rewards.base import score

        results["reward"] = per_cell(np.array(score(reward, prompts, completions).rewards), samples)
    return results


def bootstrap_ci(differences: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``differences`` (one value per template)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(differences), size=(n_boot, len(differences)))
    means = differences[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def disparities(model_name: str, attribute: Attribute, table: dict[str, np.ndarray], seed: int = 0) -> list[dict[str, Any]]:
    groups = list(attribute.groups)
    rows = []
    for measure_name, values in table.items():
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                diff = values[:, a] - values[:, b]  # (templates,)
                low, high = bootstrap_ci(diff, seed=seed)
                rows.append({
                    "model": model_name, "attribute": attribute.name, "measure": measure_name,
                    "group_a": groups[a], "group_b": groups[b], "difference": float(diff.mean()),
                    "ci_low": low, "ci_high": high, "significant": bool(low > 0 or high < 0),
                    "templates": len(diff),
                })
    return rows


def load_reward(spec: str) -> RewardFn:
    """``module:function`` -> the function (a reward taking (prompts, completions, **context))."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise RlftError(f"--reward {spec!r}: give it as module:function, e.g. my_rewards:politeness.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RlftError(f"--reward {spec!r}: cannot import it ({exc}).") from None


def audit(models: dict[str, tuple[Any, Any]], attributes: dict[str, Attribute], reward: RewardFn | None = None,
          samples: int = 2, max_new_tokens: int = 12, seed: int = 0) -> dict[str, Any]:
    """Audit each (model, tokenizer) in ``models`` (e.g. {"base": ..., "final": ...})."""
    group_means: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for model_name, (model, tokenizer) in models.items():
        model.eval()
        for attribute in attributes.values():
            table = measure(model, tokenizer, attribute, reward, samples, max_new_tokens, seed)
            group_means.setdefault(model_name, {})[attribute.name] = {
                m: dict(zip(attribute.groups, v.mean(axis=0).tolist(), strict=True)) for m, v in table.items()
            }
            rows += disparities(model_name, attribute, table, seed)
    flagged = [r for r in rows if r["significant"]]
    summary = (f"{len(rows)} group comparisons over {', '.join(attributes)} for model(s) {', '.join(models)}; "
               f"{len(flagged)} have a 95% bootstrap CI that excludes zero.")
    return {"summary": summary, "group_means": group_means, "disparities": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Bias audit\n", result["summary"] + "\n",
             "| model | attribute | measure | groups | difference | 95% CI | CI excludes 0 |", "|---|---|---|---|---|---|---|"]
    for r in result["disparities"]:
        lines.append(f"| {r['model']} | {r['attribute']} | {r['measure']} | {r['group_a']} - {r['group_b']} | "
                     f"{r['difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {'yes' if r['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"

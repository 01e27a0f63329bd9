"""``rlft report RUN``: one HTML page that shows what a run did and what the policy learned.

Learning curves come from ``metrics.jsonl`` and ``evals.jsonl``; sample completions from early
and late in training from ``samples.jsonl``. The per-token view loads ``base_model/`` (the
reference of the KL penalty) and ``final_model/``, samples G completions of a few held-out
prompts from the final policy, and colours each completion token by

    advantage    the advantage the run's own estimator gives the token (grpo, rloo, reinforce,
                 reinforce_pp or gae, with the run's KL-in-reward penalty, gamma and lambda);
                 for gae the values are those of the run's critic (``value_head.safetensors``
                 and, for a separate critic, its trunk in the newest checkpoint). Offline
                 algorithms (dpo) have no advantage, and the row is left out.
    KL           the per-token KL estimate (the recipe's estimator and clamp) of final vs base policy
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
from rlft.report.document import Document
from rlft.report.perf import perf_figures

# How the report's overview names each speed and memory figure (rlft.report.perf).
PERF_LABELS = {
    "tokens_per_s": "completion tokens/s (median step)", "step_s": "step time (median, s)",
    "weight_sync_s": "weight push to the rollout engine (median, s)", "cuda_peak_mib": "GPU peak memory (MiB)",
    "cuda_reserved_mib": "GPU memory reserved (max, MiB)", "peak_rss_mib": "peak resident memory (MiB)",
}

CURVES = [
    ("reward/mean", "mean reward (train)"),
    ("eval/accuracy", "held-out accuracy"),
    ("policy/kl", "KL to reference"),
    ("policy/entropy", "entropy (nats/token)"),
    ("completions/mean_length", "completion length (tokens)"),
    ("curriculum/zero_signal_fraction", "groups without signal (all rewards equal)"),
    ("curriculum/mean_p", "curriculum: mean pass rate of the prompts seen"),
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
    advantage: list[float] | None  # None for algorithms without one (dpo)
    kl: list[float]
    logprob_change: list[float]
    advantage_source: str = ""  # how the advantages were computed, for the page
    step_reward: list[float] | None = None  # a dense reward's step rewards where they sit (process_model)


ESTIMATOR_WORDS = {
    "grpo": "GRPO group-normalised", "rloo": "RLOO leave-one-out", "reinforce": "REINFORCE (batch-mean baseline)",
    "reinforce_pp": "REINFORCE++ batch-normalised", "gae": "GAE",
}


def algorithm_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``algorithm`` section with every empty or missing field taken from the named
    algorithm's preset, read leniently so that runs written by older versions still work."""
    from rlft.algorithms.kl import KL_CLAMP
    from rlft.algorithms.presets import ALGORITHM_FIELDS as ALGORITHM_PRESETS

    raw = dict(recipe.get("algorithm") or {})
    name = raw.get("name", "grpo")
    algo: dict[str, Any] = {"name": name, "group_size": 8, "gamma": 1.0, "kl_coef": 0.0, "kl_estimator": "k3",
                            "kl_placement": "loss", "scale_rewards": True, "critic": "none"}
    algo.update({"lam": 0.95, **ALGORITHM_PRESETS.get(name, {})})
    algo.update({k: v for k, v in raw.items() if v is not None})
    algo["kl_clamp"] = raw.get("kl_clamp", KL_CLAMP)  # null is meaningful here: no cap
    return algo


def _checkpoint_part(checkpoint: Path, prefix: str) -> dict[str, Any]:
    """The tensors of ``checkpoint``'s model.safetensors under ``prefix``, the prefix removed."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
        names = weights.keys()  # a safe_open handle is not a dict
        return {k[len(prefix):]: weights.get_tensor(k) for k in names if k.startswith(prefix)}


def load_critic(run: Path, algo: dict[str, Any], policy: Any) -> tuple[Any, Any, str] | str:
    """(trunk, value head, where they came from) of the run's critic, or why there is none.

    ``finish_run`` writes the head to ``RUN/value_head.safetensors``; every checkpoint holds it as
    ``value_head.*`` and a separate critic's trunk as ``critic.*``. A ``value_head`` critic reads
    the policy's own trunk (``final_model``); a ``separate`` one is rebuilt from ``base_model``'s
    architecture (with the recipe's LoRA adapter, if any) and loaded from the newest checkpoint.
    """
    from safetensors.torch import load_file

    from rlft.models.value_head import ValueHead
    from rlft.trainers.checkpoint import list_checkpoints

    critic = algo.get("critic", "none")
    if critic not in ("value_head", "separate"):
        return f"the run has no critic (algorithm.critic: {critic})"
    checkpoints = list_checkpoints(run / "checkpoints")
    newest = checkpoints[-1] if checkpoints else None
    if (run / "value_head.safetensors").is_file():
        head_state, source = load_file(str(run / "value_head.safetensors")), "value_head.safetensors"
    elif newest is not None:
        head_state, source = _checkpoint_part(newest, "value_head."), f"checkpoints/{newest.name}"
    else:
        return "the run kept neither value_head.safetensors nor a checkpoint"
    head = ValueHead(policy.config.hidden_size)
    try:
        head.load_state_dict(head_state)
    except RuntimeError as exc:
        return f"its value head does not fit the policy ({str(exc).splitlines()[0]})"
    if critic == "value_head":
        return policy, head.eval(), f"the critic's value head ({source}) on final_model"
    if newest is None:
        return "the separate critic's trunk is kept only in checkpoints/, and there are none"
    from rlft.models.loading import load_policy

    trunk, _ = load_policy(str(run / "base_model"))
    lora = dict(recipe_section(run, "lora"))
    if lora.get("r"):
        from rlft.models.lora import apply_lora

        trunk = apply_lora(trunk, lora["r"], lora.get("alpha", 16.0), 0.0,
                           *([lora["target_modules"]] if lora.get("target_modules") else []))
    try:
        trunk.load_state_dict(_checkpoint_part(newest, "critic."))
    except RuntimeError as exc:
        return f"the separate critic in checkpoints/{newest.name} does not load ({str(exc).splitlines()[0]})"
    return trunk.eval(), head.eval(), f"the separate critic of checkpoints/{newest.name}"


def recipe_section(run: Path, name: str) -> dict[str, Any]:
    import yaml

    return dict((yaml.safe_load((run / "config.yaml").read_text()) or {}).get(name) or {})


def final_kl_coef(run: Path, algo: dict[str, Any]) -> float:
    """The KL coefficient at the end of the run: the adaptive controller's last beta (in the newest
    checkpoint's trainer_state.json), else the recipe's ``kl_coef``."""
    from rlft.trainers.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(run / "checkpoints")
    if checkpoints:
        state = read_json(checkpoints[-1] / "trainer_state.json") or {}
        if isinstance(state.get("kl_coef"), (int, float)):
            return float(state["kl_coef"])
    return float(algo.get("kl_coef") or 0.0)


def run_learner(run: Path, algo: dict[str, Any], policy: Any) -> tuple[Any, str]:
    """(the run's :class:`Learner`, a line saying where its values come from). A ``gae`` run
    gets its critic; one that cannot be found is a zero value head (V = 0), and the line says why."""
    from rlft.models.value_head import ValueHead
    from rlft.trainers.batch import Learner

    if algo.get("advantage_estimator") != "gae":
        return Learner(policy), ""
    critic = load_critic(run, algo, policy)
    if isinstance(critic, str):
        head = ValueHead(policy.config.hidden_size)
        zero_parameters(head)
        return Learner(policy, head, policy), f", with V = 0 because {critic}"
    trunk, head, source = critic
    return Learner(policy, head, trunk), f", with the values of {source}"


def zero_parameters(module: Any) -> None:
    import torch

    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()


def run_task_and_reward(recipe: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(task, config, reward_fn): the run's own task and reward (a dataset run's data and python
    reward, a reward model), as training built them, PII-scrubbed as the run was."""
    from rlft.config import config_from_dict
    from rlft.responsible.privacy import private_task
    from rlft.tasks import build_task
    from rlft.trainers.loop import make_reward_fn
    from rlft.trainers.setup import recipe_reward

    config = config_from_dict({k: recipe[k] for k in ("task", "reward", "warm_start") if recipe.get(k) is not None})
    reward = recipe_reward(config)
    task = private_task(
        build_task(config.task, lambda: reward, config.warm_start),
        bool(recipe.get("privacy", {}).get("scrub_pii", True)),
    )
    return task, config, make_reward_fn(config, task, reward)


def token_views(run: Path, n_prompts: int = 4, seed: int = 0) -> list[TokenView]:
    """Sample ``group_size`` completions of ``n_prompts`` held-out prompts from the final policy
    and score each token under the final and the base policy (see the module docstring)."""
    from types import SimpleNamespace

    import torch
    import yaml

    from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
    from rlft.algorithms.kl import KL_ESTIMATORS
    from rlft.models.loading import load_policy
    from rlft.models.tokens import decode_completions, encode_prompts
    from rlft.rollout.sampling import sample, sequence_logprobs
    from rlft.trainers.batch import (
        Sampler,
        score_rollout,
        step_token_rewards,
        training_token_rewards,
    )
    from rlft.trainers.setup import prepare_task

    for name in ("base_model", "final_model"):
        if not (run / name / "config.json").exists():
            raise RlftError(f"{run / name} is missing; the per-token view needs a finished run.")
    # Read only the fields needed from the raw recipe, so runs written by older versions still work.
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    algo, sampling = algorithm_fields(recipe), recipe.get("rollout", {})
    task, config, reward_fn = run_task_and_reward(recipe)
    policy, tokenizer = load_policy(str(run / "final_model"))
    base, _ = load_policy(str(run / "base_model"))
    prepare_task(config, task, policy, tokenizer)
    policy.eval()
    G, temperature = int(algo["group_size"]), float(sampling.get("temperature", 1.0))
    problems = [p for p in task.eval_problems[:n_prompts] for _ in range(G)]
    ids, mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    rollout = sample(
        policy, ids, mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=int(sampling.get("max_new_tokens", 8)), temperature=temperature,
        top_p=float(sampling.get("top_p", 1.0)),
        generator=torch.Generator().manual_seed(seed),
    )
    completions = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    scored = reward_fn(completions, problems)
    rewards = torch.tensor(scored.rewards, dtype=torch.float32)  # (B,) the training reward
    dense = None if scored.step_rewards is None else \
        step_token_rewards(tokenizer, rollout.completion_ids, rollout.completion_mask, scored.step_rewards)
    advantages, how = None, f"{algo['name']} has no advantage (it trains offline, without rollouts)"
    if algo.get("advantage_estimator") in ADVANTAGE_ESTIMATORS:
        # Scored exactly as in training (rlft.trainers.batch.score_rollout), at the run's final beta.
        learner, values_from = run_learner(run, algo, policy)
        beta = final_kl_coef(run, algo)
        with torch.inference_mode():
            batch = score_rollout(
                SimpleNamespace(**algo), learner, base, rollout, rewards,
                training_token_rewards(SimpleNamespace(**algo), rewards, rollout.completion_mask, dense),
                temperature=temperature, kl_coef=beta,
                reused=True, sampler=Sampler(logprobs_are_policys=True), top_p=float(sampling.get("top_p", 1.0)),
            )
        assert batch.old_logprobs is not None
        logprobs, base_logprobs, kl, advantages = batch.old_logprobs, batch.ref_logprobs, batch.kl, batch.advantages
        how = f"{ESTIMATOR_WORDS.get(algo['advantage_estimator'], algo['advantage_estimator'])} advantage"
        how += f" of the reward minus {beta:.3g} x KL per token" if algo.get("kl_placement") == "reward" else ""
        how += values_from
    else:
        with torch.inference_mode():
            logprobs, _ = sequence_logprobs(policy, rollout, temperature)  # (B, T)
            base_logprobs, _ = sequence_logprobs(base, rollout, temperature)  # (B, T)
        kl = KL_ESTIMATORS[algo["kl_estimator"]](logprobs, base_logprobs, clamp=algo["kl_clamp"])  # (B, T)
    views = []
    for i, problem in enumerate(problems):
        n = int(rollout.completion_mask[i].sum())
        token_ids = rollout.completion_ids[i, :n].tolist()
        views.append(TokenView(
            prompt=problem.prompt, completion=completions[i], reward=float(rewards[i]),
            tokens=[tokenizer.decode([t]) for t in token_ids],
            advantage=advantages[i, :n].tolist() if advantages is not None else None, kl=kl[i, :n].tolist(),
            logprob_change=(logprobs[i, :n] - base_logprobs[i, :n]).tolist(), advantage_source=how,
            step_reward=dense[i, :n].tolist() if dense is not None else None,
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
    rows_of = {"advantage": "advantage", "kl": "KL to base", "logprob_change": "logprob change"}
    if any(v.advantage is None for v in views):  # an algorithm without advantages (dpo)
        rows_of.pop("advantage")
    if views and all(v.step_reward is not None for v in views):  # a dense reward: where its steps were scored
        rows_of = {"step_reward": "step reward", **rows_of}
    scales = {name: max((abs(x) for v in views for x in getattr(v, name)), default=0.0) for name in rows_of}
    full = ", ".join(f"{'|' + label + '|' if name != 'kl' else 'KL'} {scales[name]:.3g}"
                     for name, label in rows_of.items())
    parts = ['<p class="legend">Green: positive, red: negative; stronger colour, larger magnitude '
             f"(full colour at {full}). Hover a token for its values.</p>"]
    for view in views:
        advantage = view.advantage if view.advantage is not None else [None] * len(view.tokens)
        steps = view.step_reward if "step_reward" in rows_of else [None] * len(view.tokens)
        titles = [
            (f"step reward {r:+.3f} | " if r else "") + (f"advantage {a:+.3f} | " if a is not None else "")
            + f"KL {k:.3f} | logprob change {d:+.3f}"
            for r, a, k, d in zip(steps, advantage, view.kl, view.logprob_change, strict=True)
        ]
        rows = []
        for name, label in rows_of.items():
            toks = "".join(
                f'<span class="tok" style="background:{_colour(val, scales[name])}" title="{title}">'
                f"{html.escape(_visible(tok)).replace(' ', '&middot;') or '&#8709;'}</span>"
                for tok, val, title in zip(view.tokens, getattr(view, name), titles, strict=True)
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
        *([["held-out pass rate before RL", _percent(summary.get("base_pass_rate"))],
           ["held-out pass rate after RL", _percent(summary.get("final_pass_rate"))]]
          if summary.get("headline_metric") == "pass_rate" else []),
        ["held-out accuracy before RL", _percent(summary.get("base_accuracy"))],
        ["held-out accuracy after RL", _percent(summary.get("final_accuracy"))],
        ["wall time (s)", summary.get("seconds")],
        *[[PERF_LABELS[name], value] for name, value in perf_figures(read_jsonl(run / "metrics.jsonl")).items()],
    ])
    curves = doc.section("Learning curves")
    for title, png in learning_curves(run):
        curves.image(title, png)
    if summary.get("curriculum_pass_rates"):  # task.sampler: curriculum
        from rlft.report.curriculum import pass_rate_section

        pass_rate_section(doc.section("Curriculum: pass rates of the training prompts"), summary["curriculum_pass_rates"])
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
        how = views[0].advantage_source if views else ""
        by_advantage = f"by advantage ({how}), " if views and views[0].advantage is not None else ""
        by_steps = "by the reward's step rewards where they sit, " if views and views[0].step_reward is not None else ""
        times = ["twice", "three times", "four times"][bool(by_advantage) + bool(by_steps)]
        section.text(
            f"{len(views)} completions sampled from final_model for held-out prompts; each completion "
            f"is shown {times}, its tokens coloured {by_steps}{by_advantage}by "
            "the per-token KL estimate against base_model (the KL reference), and by log p_final - log p_base."
            + (f" No advantage row: {how}." if views and not by_advantage else "")
        )
        fallback = "\n".join(
            f"- `{v.prompt}` -> `{v.completion}` reward {v.reward:g}; logprob change per token: "
            + ", ".join(f"{t!r} {d:+.2f}" for t, d in zip(v.tokens, v.logprob_change, strict=True))
            for v in views
        )
        section.raw_html(token_view_html(views), fallback)
    return doc


def write_report(run: Path, out: Path | None = None, n_prompts: int = 4) -> Path:
    from rlft.plugins import load_recorded_plugins

    load_recorded_plugins(run)  # the run's task, reward or estimator may be a plugin's
    out = out or run / "report.html"
    out.write_text(build_report(run, n_prompts).html())
    return out

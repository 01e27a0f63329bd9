"""``rlft card RUN``: a model card (Markdown and HTML) filled from the run folder.

Sources: ``config.yaml`` (base model, method, hyperparameters, task and reward), ``summary.json``,
``base_eval.json`` and ``evals.jsonl`` (evaluation), ``metrics.jsonl`` (KL, curves),
``audit.jsonl`` (provenance and hashes), ``privacy.json`` (scrub counts) and
``bias_audit.json`` (bias audit). A missing optional source is named in the card, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlft.report.document import Document
from rlft.report.report import check_run_folder, learning_curves, read_json, read_jsonl
from rlft.responsible.audit_log import LOG_NAME, AuditLog

HYPERPARAMETER_SECTIONS = ("algorithm", "train", "rollout", "warm_start")


def _base_model(config: dict[str, Any]) -> str:
    model = config.get("model", {})
    if model.get("path"):
        return f"{model['path']} ({model.get('dtype', 'float32')})"
    tiny = model.get("tiny", {})
    return (
        "a small Qwen2-architecture model built offline by rlft "
        f"(hidden {tiny.get('hidden_size')}, {tiny.get('num_layers')} layers, vocabulary {tiny.get('vocab_size')}), "
        "given a supervised warm start on the task"
    )


def _reward_definition(config: dict[str, Any]) -> list[str]:
    task = config.get("task", {})
    lines = []
    if task.get("name") == "arithmetic":
        from rlft.tasks.arithmetic import ArithmeticTask

        doc = " ".join((ArithmeticTask.reward.__doc__ or "").split())
        lines.append(f"Task reward (arithmetic, operations {task.get('operations')}, up to {task.get('digits')} digits): {doc}")
    elif task.get("name") == "reviews":
        from rlft.tasks.reviews import ReviewsTask

        doc = " ".join((ReviewsTask.reward.__doc__ or "").split())
        lines.append(f"Task reward (reviews; what held-out accuracy reports): {doc}")
    if config.get("reward"):
        lines.append("Reward section of the recipe: " + yaml.safe_dump(config["reward"], default_flow_style=True).strip())
    return lines or ["The recipe names no reward definition."]


def _provenance(run: Path) -> tuple[list[list[Any]], str]:
    """Rows (event, what, sha256) from the audit log, and a note about its state."""
    if not (run / LOG_NAME).exists():
        return [], "This run has no audit log (audit.jsonl), so data and model hashes are not recorded."
    log = AuditLog(run, key_from_env=False)
    result = log.verify()
    rows = []
    for record in log.records():
        fields = record.get("fields", {})
        for key, value in fields.items():
            if "sha256" in key and isinstance(value, str):
                what = fields.get("path") or fields.get("name") or key
                rows.append([record["event"], what, value[:16] + "..."])
        if record["event"] == "run_start" and isinstance(fields.get("provenance"), dict):
            prov = fields["provenance"]
            git = prov.get("git") or {}
            rows.append(["run_start", f"rlft {prov.get('rlft_version')}, git {str(git.get('revision', 'none'))[:12]}, "
                         f"torch {prov.get('torch')}, host {prov.get('host')}, user {prov.get('user')}", ""])
    state = "verified intact" if result.ok else f"FAILED verification: {result.problem}"
    return rows, f"Audit log: {result.records} records, {state} (`rlft audit verify {run}`)."


def build_card(run: Path) -> Document:
    """The model card of ``run``: one helper below per section (or pair of sections), in order."""
    check_run_folder(run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    summary = read_json(run / "summary.json") or {}
    metrics = read_jsonl(run / "metrics.jsonl")
    evals = read_jsonl(run / "evals.jsonl")
    task = config.get("task", {})
    doc = Document(f"Model card: {run.name}")
    _model_details(doc, run, config, summary, metrics)
    doc.section("Reward definition").bullets(_reward_definition(config))
    _kl_budget(doc, config.get("algorithm", {}), metrics)
    _data_provenance(doc, run, task)
    _privacy(doc, run, task)
    _evaluation(doc, run, summary, evals)
    _bias_audit(doc, run)
    _limitations_and_use(doc, task)
    return doc


def _model_details(doc: Document, run: Path, config: dict[str, Any], summary: dict[str, Any],
                   metrics: list[dict[str, Any]]) -> None:
    algo = config.get("algorithm", {})
    doc.section("Model details").table(["", ""], [
        ["base model", _base_model(config)],
        ["trained model", str(run / "final_model")],
        ["training method", f"{str(algo.get('name', '?')).upper()} (reinforcement learning with a verifiable reward)"],
        ["RL steps", f"{summary.get('steps', len(metrics))} ({summary.get('skipped_steps', 0)} skipped as non-finite)"],
        ["seed", config.get("seed")],
    ])
    rows = [[f"{group}.{key}", "not set" if value is None else value] for group in HYPERPARAMETER_SECTIONS
            for key, value in (config.get(group) or {}).items() if not isinstance(value, (dict, list))]
    doc.section("Training procedure and hyperparameters").table(["hyperparameter", "value"], rows)


def _kl_budget(doc: Document, algo: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
    kls = [m["policy/kl"] for m in metrics if isinstance(m.get("policy/kl"), (int, float))]
    kl = doc.section("KL budget")
    kl.text(f"The policy is penalised by kl_coef = {algo.get('kl_coef')} times the {algo.get('kl_estimator')} "
            "estimate of KL(policy || reference), the reference being the warm-started base model (base_model/).")
    if kls:
        kl.table(["", "KL (nats/token)"], [["first step", kls[0]], ["last step", kls[-1]], ["largest", max(kls)],
                                           ["mean", sum(kls) / len(kls)]])


def _data_provenance(doc: Document, run: Path, task: dict[str, Any]) -> None:
    data = doc.section("Data provenance")
    data.text(f"Training prompts are generated by the {task.get('name')} task (seed {task.get('seed')}); "
              f"{task.get('eval_size')} held-out problems are drawn first and never used in training.")
    prov_rows, prov_note = _provenance(run)
    data.text(prov_note)
    if prov_rows:
        data.table(["event", "what", "sha256"], prov_rows)


def _privacy(doc: Document, run: Path, task: dict[str, Any]) -> None:
    privacy = read_json(run / "privacy.json")
    section = doc.section("Privacy")
    if privacy:
        counts = privacy.get("counts", privacy)
        section.text("PII scrubbing was enabled: entities replaced by typed placeholders before training and logging.")
        rows = [[k, v] for k, v in sorted(counts.items()) if isinstance(v, int) and v > 0]
        if rows:
            section.table(["type", "replaced"], rows)
        else:
            scanned = privacy.get("distinct_texts")
            section.text("The scrubber found no personal data" + (f" in {scanned} distinct texts." if scanned else "."))
    else:
        section.text("No privacy.json: PII scrubbing was not enabled for this run. The task's prompts are "
                     "synthetic arithmetic and contain no personal data; check other data with `rlft privacy scan FILE`."
                     if task.get("name") == "arithmetic" else
                     "No privacy.json: PII scrubbing was not enabled for this run; check data with `rlft privacy scan FILE`.")


def _evaluation(doc: Document, run: Path, summary: dict[str, Any], evals: list[dict[str, Any]]) -> None:
    evaluation = doc.section("Evaluation")
    # The run's headline metric: accuracy for the built-in tasks, pass rate for a dataset scored by
    # the recipe's reward (summary.json's headline_metric).
    name = summary.get("headline_metric", "accuracy")
    words = f"held-out {name.replace('_', ' ')}"
    base_acc, final_acc = summary.get(f"base_{name}"), summary.get(f"final_{name}")
    if base_acc is not None and final_acc is not None:
        evaluation.table(["", words], [
            ["before RL (base model)", f"{base_acc:.1%}"], ["after RL", f"{final_acc:.1%}"],
            ["change", f"{(final_acc - base_acc) * 100:+.1f} points"],
            ["held-out problems", summary.get("eval_size")],
        ])
    if evals:
        evaluation.table(["RL step", words], [[e["step"], e.get(f"eval/{name}", e.get("eval/accuracy"))] for e in evals])
    for title, png in learning_curves(run):
        evaluation.image(title, png)


def _bias_audit(doc: Document, run: Path) -> None:
    bias = read_json(run / "bias_audit.json")
    section = doc.section("Bias audit")
    if bias:
        section.text(bias.get("summary", ""))
        section.table(["model", "attribute", "measure", "groups", "difference", "95% CI", "CI excludes 0"],
                      [[r["model"], r["attribute"], r["measure"], f"{r['group_a']} - {r['group_b']}",
                        r["difference"], f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]", "yes" if r["significant"] else "no"]
                       for r in bias.get("disparities", [])])
    else:
        section.text(f"Not run. Run `rlft audit bias {run}` and regenerate this card.")


def _limitations_and_use(doc: Document, task: dict[str, Any]) -> None:
    doc.section("Limitations").bullets([
        f"Trained and evaluated only on the {task.get('name')} task; nothing is claimed about other inputs.",
        "Held-out accuracy is measured on problems from the same generator as training, not on a shifted distribution.",
        "The RL reward checks only the final answer; the policy may exploit any gap in the reward's definition.",
        "Bias audit templates cover a few attributes and phrasings; passing it does not show the absence of bias.",
    ])
    doc.section("Intended use").bullets([
        "Research and teaching on RL fine-tuning: reproducing, inspecting and comparing runs.",
        "Not intended for decisions about people, nor for deployment without evaluation on the target use.",
    ])


def write_card(run: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    doc = build_card(run)
    out_dir = out_dir or run
    md, page = out_dir / "model_card.md", out_dir / "model_card.html"
    md.write_text(doc.markdown())
    page.write_text(doc.html())
    return md, page

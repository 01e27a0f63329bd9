"""``rlft privacy``, ``rlft audit``, ``rlft card`` and ``rlft report``: responsible training.

Heavy imports (torch, matplotlib, vaderSentiment) happen inside the ``_run_*`` functions.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    _register_privacy(sub)
    _register_audit(sub)
    _register_card_and_report(sub)


def _register_privacy(sub: argparse._SubParsersAction) -> None:
    privacy = sub.add_parser(
        "privacy",
        help="Find or remove personal data (PII) in text and JSONL files.",
        description="Find or remove e-mail addresses, phone numbers, card numbers, IP addresses, "
        "government IDs, street addresses (and person names with spaCy installed).",
    )
    psub = privacy.add_subparsers(dest="privacy_command", metavar="SUBCOMMAND", required=True)
    scan = psub.add_parser(
        "scan",
        help="Report the PII in a file: counts by type and line numbers, never the values.",
        description="Scan a text file (each line) or a .jsonl file (each string of each record). "
        "Prints counts by type and the line numbers where each type occurs; the values themselves "
        "are printed only with --show-values.",
    )
    scan.add_argument("file", help="A text or .jsonl file.")
    scan.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    scan.add_argument("--show-values", action="store_true",
                      help="Also print the matched values (they are personal data: handle the output with care).")
    scan.add_argument("--fail-on-pii", action="store_true", help="Exit with status 1 if any PII is found (for CI).")
    scan.set_defaults(run=_run_privacy_scan)
    scrub = psub.add_parser(
        "scrub",
        help="Write a copy of a file with PII replaced by placeholders such as [EMAIL].",
        description="Write a copy of a text or .jsonl file with every entity replaced by a typed "
        "placeholder ([EMAIL], [PHONE], [CARD], [IP], [GOV_ID], [ADDRESS], [PERSON]).",
    )
    scrub.add_argument("file", help="A text or .jsonl file.")
    scrub.add_argument("-o", "--output", required=True, help="Where to write the scrubbed copy.")
    scrub.set_defaults(run=_run_privacy_scrub)
    forget = psub.add_parser(
        "forget",
        help="Delete a user's feedback, live answers, votes and personal adapter, and record it.",
        description="Delete everything the feedback store holds of USER (judgements, comments, the "
        "answers they were served, their votes, their name and token) and, with --online-dir, "
        "their personal adapter; the online loop's audit log records that it happened (with a hash "
        "of the name). A running `rlft online` stops using the adapter at its next poll.",
    )
    forget.add_argument("user", help="The user's name (as given to `rlft feedback add-annotator`).")
    forget.add_argument("--db", default="feedback.db", help="The feedback store: a SQLite file or a postgresql:// URL.")
    forget.add_argument("--online-dir", default=None, help="The online loop's output_dir (adapters, audit log).")
    forget.set_defaults(run=_run_privacy_forget)


def _run_privacy_forget(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.errors import RlftError
    from rlft.feedback.store import Store
    from rlft.online.setup import forget_user
    from rlft.online.versions import VersionStore

    versions = None
    if args.online_dir is not None:
        versions = VersionStore(args.online_dir)
        if not versions.exists():
            raise RlftError(f"{Path(args.online_dir)} is not an online loop's folder (no state.json).")
    if "://" not in args.db and not Path(args.db).is_file():
        raise RlftError(f"No feedback store at {args.db}; give it with --db.")
    store = Store(args.db)
    try:
        done = forget_user(store, versions, args.user)
    finally:
        store.close()
    adapter = "and their adapter " if done["adapter_deleted"] else ""
    print(f"rlft: deleted {done['rows_deleted']} judgements and votes {adapter}of {args.user!r}")
    return 0


def _run_privacy_scan(args: argparse.Namespace) -> int:
    from rlft.responsible.pii import ner_available, scan_file

    scan = scan_file(args.file, keep_values=args.show_values)
    result = {
        "file": scan.path,
        "lines": scan.lines_read,
        "total": sum(scan.counts.values()),
        "counts": dict(sorted(scan.counts.items())),
        "line_numbers": scan.lines,
        "person_names_checked": ner_available(),
    }
    if args.show_values:
        result["values"] = scan.values
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{scan.path}: {result['total']} PII entities in {scan.lines_read} lines")
        for kind, count in result["counts"].items():
            lines = scan.lines[kind]
            shown = ", ".join(map(str, lines[:20])) + (f", ... ({len(lines)} lines)" if len(lines) > 20 else "")
            print(f"  {kind:<8} {count:>6}   lines {shown}")
            for value in scan.values.get(kind, []):
                print(f"           {value}")
        if not result["person_names_checked"]:
            print("  (person names not checked: install spaCy and en_core_web_sm to detect them)")
    return 1 if args.fail_on_pii and result["total"] else 0


def _run_privacy_scrub(args: argparse.Namespace) -> int:
    from rlft.responsible.pii import scrub_file

    counts = scrub_file(args.file, args.output)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing found"
    print(f"wrote {args.output}: replaced {sum(counts.values())} entities ({summary})", file=sys.stderr)
    return 0


def _register_audit(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit",
        help="Verify a run's tamper-evident audit log, or audit a model for bias.",
        description="Audit trail and bias audit of a run.",
    )
    asub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    verify = asub.add_parser(
        "verify",
        help="Check RUN/audit.jsonl; name the first edited, deleted, reordered or truncated record.",
        description="Check every record of RUN/audit.jsonl (hash chain, sequence numbers, head file "
        "and, with a key, HMAC signatures). Exit status 0 when intact, 1 when tampered with. The key "
        "comes from --key-file, $RLFT_AUDIT_KEY or the file named in $RLFT_AUDIT_KEY_FILE.",
    )
    verify.add_argument("run_dir", metavar="RUN", help="A run folder (or an audit.jsonl file).")
    verify.add_argument("--key-file", help="File holding the HMAC key the log was signed with.")
    verify.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    verify.add_argument(
        "--allow-missing-head", action="store_true",
        help="Accept an unsigned log whose audit.head is missing (truncation then goes undetected); "
        "a signed log without its head always fails.",
    )
    verify.set_defaults(run=_run_audit_verify)
    bias = asub.add_parser(
        "bias",
        help="Counterfactual bias audit of a run (base vs final model) or a model folder.",
        description="Fill counterfactual templates with the terms of each demographic group and "
        "compare groups: mean log-probability of fixed continuations, VADER sentiment of sampled "
        "completions and, with --reward, mean reward; disparities with 95%% bootstrap CIs. For a "
        "run folder, base_model and final_model are audited (before vs after RL) and "
        "bias_audit.json/.md are written into it, where `rlft card` finds them.",
    )
    bias.add_argument("target", metavar="RUN_OR_MODEL", help="A run folder or a Hugging Face model folder.")
    bias.add_argument("--templates", help="YAML/JSON file of extra or replacement attributes (same shape as the shipped ones).")
    bias.add_argument("--attributes", help="Comma-separated attributes to audit (default: all).")
    bias.add_argument("--reward", help="Also compare mean reward: module:function taking (prompts, completions).")
    bias.add_argument("--samples", type=int, default=2, help="Sampled completions per prompt (default 2).")
    bias.add_argument("--max-new-tokens", type=int, default=12)
    bias.add_argument("--seed", type=int, default=0)
    bias.add_argument("--out-dir", help="Where to write bias_audit.json/.md (default: the run folder, or '.').")
    bias.set_defaults(run=_run_audit_bias)


def _run_audit_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from rlft.responsible.audit_log import HEAD_NAME, LOG_NAME, load_key, verify_log

    target = Path(args.run_dir)
    log = target if target.is_file() else target / LOG_NAME
    result = verify_log(log, log.with_name(HEAD_NAME), load_key(args.key_file), args.allow_missing_head)
    if args.json:
        print(json.dumps({"log": str(log), **asdict(result)}))
    elif result.ok:
        signed = "signed, signatures checked" if result.signed and not result.warning else (
            "signed" if result.signed else "not signed")
        print(f"{log}: OK, {result.records} records, chain intact ({signed}).")
    else:
        print(f"{log}: TAMPERED: {result.problem}")
    if result.warning and not args.json:
        print(f"warning: {result.warning}", file=sys.stderr)
    return 0 if result.ok else 1


def _register_card_and_report(sub: argparse._SubParsersAction) -> None:
    card = sub.add_parser(
        "card",
        help="Write a model card (Markdown and HTML) for a run.",
        description="Write RUN/model_card.md and RUN/model_card.html: base model, RL method and "
        "hyperparameters, reward definition, KL budget, data provenance, privacy-scrub counts, "
        "evaluation before and after RL, bias audit, limitations and intended use.",
    )
    card.add_argument("run_dir", metavar="RUN", help="A run folder.")
    card.add_argument("--out-dir", help="Write the card here instead of into RUN.")
    card.set_defaults(run=_run_card)
    report = sub.add_parser(
        "report",
        help="Write one HTML page: learning curves, samples early vs late, per-token view.",
        description="Write RUN/report.html: learning curves from metrics.jsonl, sample completions "
        "early vs late in training, and a per-token view of completions of held-out prompts "
        "coloured by advantage, KL to the base model and log-probability change.",
    )
    report.add_argument("run_dir", metavar="RUN", help="A finished run folder.")
    report.add_argument("-o", "--output", help="Where to write the page (default RUN/report.html).")
    report.add_argument("--prompts", type=int, default=4, help="Held-out prompts in the per-token view (default 4).")
    report.set_defaults(run=_run_report)


def _run_card(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.report.card import write_card

    md, page = write_card(Path(args.run_dir), Path(args.out_dir) if args.out_dir else None)
    print(f"wrote {md} and {page}")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.cli.train_commands import _quiet_transformers
    from rlft.report.report import write_report

    _quiet_transformers()
    out = write_report(Path(args.run_dir), Path(args.output) if args.output else None, args.prompts)
    print(f"wrote {out}")
    return 0


def _run_audit_bias(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.cli.train_commands import _quiet_transformers
    from rlft.errors import RlftError
    from rlft.models.loading import load_policy
    from rlft.responsible import bias

    _quiet_transformers()
    attributes = bias.load_templates(args.templates)
    if args.attributes:
        wanted = [a.strip() for a in args.attributes.split(",")]
        unknown = [a for a in wanted if a not in attributes]
        if unknown:
            raise RlftError(f"Unknown attribute(s) {unknown}; available: {', '.join(attributes)}.")
        attributes = {a: attributes[a] for a in wanted}
    reward = bias.load_reward(args.reward) if args.reward else None
    target = Path(args.target)
    if (target / "config.yaml").exists() and not (target / "config.json").exists():
        names = [n for n in ("base_model", "final_model") if (target / n / "config.json").exists()]
        if not names:
            raise RlftError(f"Run folder {target} has no base_model/ or final_model/ yet.")
        models = {n.removesuffix("_model"): load_policy(str(target / n)) for n in names}
        out_dir = Path(args.out_dir) if args.out_dir else target
    else:
        models = {"model": load_policy(args.target)}
        out_dir = Path(args.out_dir or ".")
    result = bias.audit(models, attributes, reward, args.samples, args.max_new_tokens, args.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bias_audit.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "bias_audit.md").write_text(bias.markdown(result))
    print(result["summary"])
    print(f"wrote {out_dir / 'bias_audit.json'} and {out_dir / 'bias_audit.md'}")
    return 0

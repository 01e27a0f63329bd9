"""``rlft feedback ...`` (collect human judgements) and ``rlft rm ...`` (train a reward model)."""

from __future__ import annotations

import argparse
import json
import sys

DB_HELP = "SQLite file (default: feedback.db here) or a postgresql://user@host/db URL."


def register(sub: argparse._SubParsersAction) -> None:
    _register_feedback(sub)
    _register_rm(sub)


def _register_feedback(sub: argparse._SubParsersAction) -> None:
    fb = sub.add_parser(
        "feedback",
        help="Collect human preferences in a web app; export preference pairs.",
        description="Human feedback: a web app for annotators, its database, and export. See docs/feedback.md.",
    )
    fb_sub = fb.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND")
    fb.set_defaults(run=lambda args: (fb.print_help(), 1)[1])

    serve = fb_sub.add_parser("serve", help="Start the annotation web app.", description=(
        "Serve the annotation page and its API. Annotators open http://HOST:PORT/ and sign in "
        "with a token from `rlft feedback add-annotator`."))  # fmt: skip
    serve.add_argument("--db", default="feedback.db", help=DB_HELP)
    serve.add_argument("--items", help="JSON-lines file of items to judge ({prompt, completion_a, completion_b}); "
                       "loaded before serving, items already present are skipped.")  # fmt: skip
    serve.add_argument(
        "--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1)."
    )
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    serve.add_argument("--mode", choices=["pair", "rating"], default="pair",
                       help="pair: pick the better of two responses; rating: thumbs up/down on one.")  # fmt: skip
    serve.add_argument(
        "--consent-text", help="Text annotators agree to before their first judgement."
    )
    serve.add_argument("--keep-pii", action="store_true",
                       help="Store items and comments as given. By default e-mails, phone numbers, card numbers, IPs, "
                       "IDs and street addresses are replaced by typed placeholders before they reach the database.")  # fmt: skip
    serve.set_defaults(run=_run_serve)

    add = fb_sub.add_parser("add-annotator", help="Register an annotator and print their token once.",
                            description="Register an annotator; their token is printed once and only its hash is stored.")  # fmt: skip
    add.add_argument(
        "name", help="A unique annotator name (1-128 characters, no surrounding spaces)."
    )
    add.add_argument("--db", default="feedback.db", help=DB_HELP)
    add.add_argument("--consent", action="store_true",
                     help="Record consent now (it was given outside the app); otherwise the page asks for it.")  # fmt: skip
    add.set_defaults(run=_run_add_annotator)

    export = fb_sub.add_parser("export", help="Write preference pairs for `rlft rm train`.",
                               description="Write {prompt, chosen, rejected} pairs (JSON lines) from pairwise judgements; ties are skipped.")  # fmt: skip
    export.add_argument("--db", default="feedback.db", help=DB_HELP)
    export.add_argument("--out", required=True, help="Output file, e.g. pairs.jsonl. An existing file is "
                        "replaced only with --force; the database itself never.")  # fmt: skip
    export.add_argument("--aggregate", choices=["majority", "all"], default="majority",
                        help="majority: one pair per item by vote (default); all: one pair per judgement.")  # fmt: skip
    export.add_argument("--ratings-out", help="Also write thumbs up/down ratings to this file.")
    export.add_argument("--force", action="store_true",
                        help="Replace existing output files (never a database; each is written atomically).")  # fmt: skip
    export.set_defaults(run=_run_export)

    forget = fb_sub.add_parser("forget", help="Delete an annotator's judgements and identity.",
                               description="Delete every judgement (and comment) of an annotator, and their name, "
                               "token and consent. Later exports exclude them. Items are kept.")  # fmt: skip
    forget.add_argument("name", help="The annotator's name (as given to add-annotator).")
    forget.add_argument("--db", default="feedback.db", help=DB_HELP)
    forget.set_defaults(run=_run_forget)

    status = fb_sub.add_parser("status", help="Count items, annotators and judgements.")
    status.add_argument("--db", default="feedback.db", help=DB_HELP)
    status.set_defaults(run=_run_status)


def _run_serve(args: argparse.Namespace) -> int:
    from rlft.feedback.exchange import load_items
    from rlft.feedback.store import Store

    try:
        from rlft.feedback import server
    except ImportError as exc:
        from rlft.errors import RlftError

        raise RlftError(
            f"The web app needs FastAPI and uvicorn ({exc.name} is missing): pip install 'rlft[feedback]'."
        ) from None
    store = Store(args.db, scrub_pii=not args.keep_pii)
    if args.items:
        items = load_items(args.items)
        loaded = store.add_items(items)
        print(f"rlft: loaded {loaded.added} new items of {len(items)} from {args.items}")
        if loaded.conflicting:
            ids = ", ".join(repr(i) for i in loaded.conflicting[:10])
            more = (
                f" and {len(loaded.conflicting) - 10} more" if len(loaded.conflicting) > 10 else ""
            )
            print(f"rlft: warning: {len(loaded.conflicting)} items not loaded: {args.db} already holds an item "
                  f"with the same id and different content: {ids}{more}. Give changed items new ids.",
                  file=sys.stderr)  # fmt: skip
        if store.pii_removed:
            removed = ", ".join(f"{kind} {n}" for kind, n in sorted(store.pii_removed.items()))
            print(f"rlft: replaced personal data in the items by placeholders ({removed})")
    counts = store.counts()
    print(
        f"rlft: {counts['items']} items, {counts['annotators']} annotators, {counts['judgements']} judgements in {args.db}"
    )
    print(f"rlft: annotators open http://{args.host}:{args.port}/  (Ctrl+C stops)")
    server.serve(
        store, args.host, args.port, args.mode, args.consent_text or server.DEFAULT_CONSENT_TEXT
    )
    return 0


def _run_add_annotator(args: argparse.Namespace) -> int:
    from rlft.feedback.store import Store

    token = Store(args.db).add_annotator(args.name, consent=args.consent)
    print(
        f"Annotator {args.name!r} added. Their token (shown only this once; only its hash is stored):",
        file=sys.stderr,
    )
    print(token)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.errors import RlftError
    from rlft.feedback.exchange import check_output, preference_pairs, ratings, write_jsonl
    from rlft.feedback.store import Store

    # Checked before the database is opened (opening creates it), and again as each is written.
    outs = [args.out] + ([args.ratings_out] if args.ratings_out else [])
    if len({Path(o).expanduser().resolve() for o in outs}) < len(outs):
        raise RlftError(f"--out and --ratings-out are the same file ({args.out}); give two files.")
    for out in outs:
        check_output(out, overwrite=args.force, database=args.db)
    store = Store(args.db)
    try:
        pairs = preference_pairs(store, args.aggregate)
        if not pairs and not args.ratings_out:
            raise RlftError(
                f"{args.db} has no A/B judgements to export yet (ties and ratings make no pairs)."
            )
        write_jsonl(pairs, args.out, overwrite=args.force)
        print(f"rlft: wrote {len(pairs)} preference pairs to {args.out}")
        if args.ratings_out:
            rows = ratings(store)
            write_jsonl(rows, args.ratings_out, overwrite=args.force)
            print(f"rlft: wrote {len(rows)} ratings to {args.ratings_out}")
    finally:
        store.close()
    return 0


def _run_forget(args: argparse.Namespace) -> int:
    from rlft.feedback.store import Store

    deleted = Store(args.db).forget_annotator(args.name)
    print(
        f"rlft: forgot annotator {args.name!r}: deleted {deleted} judgements and their name, token and consent"
    )
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from rlft.feedback.store import Store

    print(json.dumps(Store(args.db).counts()))
    return 0


def _register_rm(sub: argparse._SubParsersAction) -> None:
    rm = sub.add_parser(
        "rm",
        help="Train and evaluate reward models on preference pairs.",
        description="Reward models: a transformer with a scalar head trained with the Bradley-Terry loss.",
    )
    rm_sub = rm.add_subparsers(dest="rm_command", metavar="SUBCOMMAND")
    rm.set_defaults(run=lambda args: (rm.print_help(), 1)[1])

    train = rm_sub.add_parser("train", help="Train a reward model from a YAML recipe.",
                              description="Train a reward model. Recipe fields: docs/feedback.md#reward-model-recipe.")  # fmt: skip
    train.add_argument("recipe", help="YAML recipe (see examples and docs/feedback.md).")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a recipe field, e.g. --set epochs=3 (repeatable).")  # fmt: skip
    train.add_argument("--no-progress", action="store_true", help="No progress bar.")
    train.add_argument("--resume", action="store_true",
                       help="Continue the run in output_dir from its newest intact checkpoint (same recipe; "
                            "epochs may grow).")  # fmt: skip
    train.set_defaults(run=_run_rm_train)

    ev = rm_sub.add_parser("eval", help="Held-out pairwise accuracy of a reward model.",
                           description="Fraction of pairs where the reward model scores chosen above rejected.")  # fmt: skip
    ev.add_argument("model", help="Folder written by `rlft rm train` (or its model/ subfolder).")
    ev.add_argument(
        "--data", required=True, help="Pairs: .jsonl, .parquet, or a Hugging Face dataset folder."
    )
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-length", type=int, default=512)
    ev.add_argument("--json", action="store_true", help="Print the result as JSON.")
    ev.set_defaults(run=_run_rm_eval)


def _run_rm_train(args: argparse.Namespace) -> int:
    from rlft.cli.train_commands import _quiet_transformers
    from rlft.config.reward_model import load_rm_recipe
    from rlft.trainers.reward_model import train_reward_model

    recipe = load_rm_recipe(args.recipe, args.set)
    _quiet_transformers()
    summary = train_reward_model(recipe, progress=not args.no_progress, resume=args.resume)
    print(f"rlft: reward model in {summary['model_dir']}")
    print(f"  pairwise accuracy  before {summary['eval_accuracy_before']:.1%}  after {summary['eval_accuracy']:.1%}  "
          f"on {summary['eval_pairs']} held-out pairs")  # fmt: skip
    return 0


def _run_rm_eval(args: argparse.Namespace) -> int:
    from rlft.cli.train_commands import _quiet_transformers
    from rlft.rewards.pairs import load_pairs
    from rlft.rewards.reward_model import load_reward_model
    from rlft.trainers.reward_model import evaluate_reward_model

    _quiet_transformers()
    pairs = load_pairs(args.data)
    model, tokenizer = load_reward_model(args.model)
    result = evaluate_reward_model(model, tokenizer, pairs, args.batch_size, args.max_length)
    result = {"model": args.model, "data": args.data, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: pairwise accuracy {result['pairwise_accuracy']:.1%} on {result['pairs']} pairs "
              f"(mean margin {result['mean_margin']:.3f})")  # fmt: skip
    return 0

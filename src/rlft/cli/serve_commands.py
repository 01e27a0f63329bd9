"""``rlft serve RUN_OR_MODEL``: the model behind an OpenAI-compatible API with a chat page."""

from __future__ import annotations

import argparse
import ipaddress
import sys

DB_HELP = (
    "SQLite file (default: feedback.db here), which must exist unless --create, or a "
    "postgresql://user@host/db URL."
)


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="Serve a model over an OpenAI-compatible API, with a chat page that collects feedback.",
        description=(
            "Serve RUN_OR_MODEL (a run folder: its final_model/; or a model or LoRA adapter folder) at "
            "/v1/chat/completions, /v1/completions and /v1/models, with a chat page at / where users rate "
            "answers. Clients sign in with a token from `rlft feedback add-annotator NAME --db DB`; "
            "answers and feedback of consenting users go to the database. See docs/serving.md."
        ),
    )
    serve.add_argument("target", metavar="RUN_OR_MODEL", help="A run folder (serves final_model/) or a model folder.")
    serve.add_argument("--db", default="feedback.db", help=DB_HELP)
    serve.add_argument("--create", action="store_true", help="Create the --db SQLite file if it does not exist.")
    serve.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    serve.add_argument("--model-name", help="The model's name in the API (default: the folder's name).")
    serve.add_argument("--max-batch-size", type=int, default=16,
                       help="Most sequences sampled together in one batch (default 16).")  # fmt: skip
    serve.add_argument("--max-rows-per-request", type=int, default=64,
                       help="Most answers (prompts x n) one request may ask for (default 64; more: 400).")  # fmt: skip
    serve.add_argument("--device", default="auto",
                       help="Where the model runs: auto (the GPU when CUDA is visible, else cpu), cpu, cuda, cuda:N.")
    serve.add_argument("--consent-text", help="Text users agree to before their answers and feedback are stored.")
    serve.set_defaults(run=_run_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _run_serve(args: argparse.Namespace) -> int:
    from rlft.errors import RlftError

    if not is_loopback(args.host):
        print(f"rlft: warning: listening on {args.host}, beyond this machine, without TLS: tokens and messages "
              "travel in clear text. Put a TLS proxy in front, or serve on 127.0.0.1.", file=sys.stderr)  # fmt: skip
    if not 1 <= args.port <= 65535:
        raise RlftError(f"--port {args.port} is not a port; give one from 1 to 65535.")
    if args.max_batch_size < 1:
        raise RlftError(f"--max-batch-size must be at least 1 (got {args.max_batch_size}).")
    if args.max_rows_per_request < 1:
        raise RlftError(f"--max-rows-per-request must be at least 1 (got {args.max_rows_per_request}).")
    try:
        from rlft.serving import app as serving_app
    except ImportError as exc:
        raise RlftError(
            f"rlft serve needs FastAPI and uvicorn ({exc.name} is missing): pip install 'rlft[feedback]'."
        ) from None
    from rlft.serving.chat import has_chat_template
    from rlft.serving.host import ModelHost
    from rlft.serving.loading import model_folder, open_store

    folder, _ = model_folder(args.target)
    resolved = folder.resolve()
    name = args.model_name or (resolved.parent.name if resolved.name == "final_model" else resolved.name)
    store = open_store(args.db, create=args.create)
    host = ModelHost.from_folder(args.target, max_batch_size=args.max_batch_size, device=args.device)
    app = serving_app.create_serving_app(
        host, store, model_name=name, consent_text=args.consent_text or serving_app.DEFAULT_CONSENT_TEXT,
        max_rows_per_request=args.max_rows_per_request,
    )  # fmt: skip
    counts = store.counts()
    print(f"rlft: serving {folder} as model {name!r} (version {host.version}); {counts['annotators']} users in {args.db}")
    if not has_chat_template(host.tokenizer):
        print(f"rlft: warning: {name!r} has no chat template: /v1/chat/completions builds 'role: content' "
              "lines ending in 'assistant:', which the model may never have seen (each chat answer "
              "says so in its warning field); send your own prompts to /v1/completions.", file=sys.stderr)  # fmt: skip
    print(f"rlft: chat page http://{args.host}:{args.port}/ ; API base_url http://{args.host}:{args.port}/v1  (Ctrl+C stops)")
    try:
        serving_app.serve(app, args.host, args.port)
    finally:
        host.close()
        store.close()
    return 0

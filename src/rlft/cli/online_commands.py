"""``rlft online RECIPE``, ``rlft online rollback VERSION`` and ``rlft online status``."""

from __future__ import annotations

import argparse
import json
import sys

from rlft.errors import RlftError

USAGE = """rlft online RECIPE.yaml [--set KEY=VALUE ...]
       rlft online rollback VERSION --dir OUTPUT_DIR
       rlft online status --dir OUTPUT_DIR"""


def register(sub: argparse._SubParsersAction) -> None:
    online = sub.add_parser(
        "online",
        usage=USAGE,
        help="Serve a model, learn from feedback on its answers, gate and hot-swap new versions.",
        description="Serve the recipe's model over an OpenAI-compatible API with a chat page; every "
        "online.every_judgements judgements, train a candidate (KTO or DPO), gate it against the "
        "served version and swap it in if it passes; per-user adapters with personalization.method: "
        "adapter. `rollback VERSION` serves an earlier version again (a running loop applies it "
        "within online.poll_seconds); `status` prints the versions and rounds. Docs: docs/online.md",
    )
    online.add_argument("target", help="RECIPE.yaml, or `rollback` / `status`.")
    online.add_argument("version", nargs="?", type=int, help="With rollback: the version to serve.")
    online.add_argument("--dir", default=None, help="With rollback/status: the loop's output_dir.")
    online.add_argument("--device", default=None,
                        help="Where the model is served and trained: auto, cpu, cuda, cuda:N (default: the recipe's "
                        "device, auto).")
    online.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a recipe field, e.g. --set online.every_judgements=20.")  # fmt: skip
    online.set_defaults(run=_run_online)


def _versions(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from rlft.online.versions import VersionStore

    if args.dir is None:
        raise RlftError(f"rlft online {args.target} needs --dir OUTPUT_DIR (the recipe's output_dir).")
    versions = VersionStore(args.dir)
    if not versions.exists():
        raise RlftError(f"{args.dir} holds no online loop (no state.json); give the recipe's output_dir.")
    return versions


def _run_online(args: argparse.Namespace) -> int:
    if args.target == "rollback":
        if args.version is None:
            raise RlftError("rlft online rollback needs the VERSION to serve (see `rlft online status`).")
        versions = _versions(args)
        versions.request_rollback(args.version)
        print(f"rlft: version {args.version} requested; a running `rlft online` serves it within its "
              "poll interval, a stopped one at its next start")  # fmt: skip
        return 0
    if args.target == "status":
        versions = _versions(args)
        state = versions.load_state()
        print(json.dumps({"served_version": state.served_version, "versions": versions.versions(),
                          "rounds": state.rounds, "consecutive_failures": state.consecutive_failures,
                          "history": state.history}, indent=2))  # fmt: skip
        return 0
    if args.version is not None:
        raise RlftError(f"Unexpected argument {args.version}; usage:\n{USAGE}")
    return _serve_online(args)


def _serve_online(args: argparse.Namespace) -> int:
    from rlft.config.online import load_online_recipe

    recipe = load_online_recipe(args.target, args.set + ([f"device={args.device}"] if args.device else []))
    try:
        import uvicorn

        from rlft.online.setup import open_online
        from rlft.serving.app import create_serving_app
    except ImportError as exc:
        raise RlftError(f"rlft online needs FastAPI and uvicorn ({exc.name} is missing): "
                        "pip install 'rlft[feedback]'.") from None  # fmt: skip
    session = open_online(recipe)
    serve = recipe.serve
    if serve.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"rlft: warning: serving on {serve.host}: tokens travel in clear text; put TLS in front.",
              file=sys.stderr)  # fmt: skip
    kwargs = {"consent_text": recipe.consent_text} if recipe.consent_text else {}
    app = create_serving_app(session.host, session.store, model_name=serve.model_name, **kwargs)
    state = session.versions.load_state()
    print(f"rlft: serving version {state.served_version} of {recipe.output_dir} at "
          f"http://{serve.host}:{serve.port}/v1 (chat page: /; Ctrl+C stops)")  # fmt: skip
    session.loop.start()
    try:
        uvicorn.run(app, host=serve.host, port=serve.port, log_level="info", access_log=False)
    finally:
        session.close()
    return 0

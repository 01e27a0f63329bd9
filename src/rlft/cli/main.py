"""``rlft`` entry point: builds the parser from the command modules and turns user errors into
one clear message and exit status 2, without a traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rlft.errors import RlftError

# Each module defines register(subparsers) and gives its parsers a `run(args) -> int` default.
# Command modules import heavy libraries inside `run`, so `rlft --help` stays fast.
COMMAND_MODULES = [
    "rlft.cli.train_commands",
    "rlft.cli.responsible_commands",
    "rlft.cli.feedback_commands",
    "rlft.cli.prm_commands",
    "rlft.cli.scale_commands",
    "rlft.cli.env_commands",
    "rlft.cli.run_commands",
    "rlft.cli.serve_commands",
    "rlft.cli.online_commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlft",
        description="Fine-tune language models with reinforcement learning.",
        epilog="Run `rlft COMMAND --help` for the options of a command. Docs: docs/quickstart.md",
    )
    from rlft.version import __version__

    parser.add_argument("--version", action="version", version=f"rlft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        add_plugin_option(command)
    return parser


PLUGIN_HELP = (
    "Import your own code first: a .py file or a module name (repeatable), whose rlft.register_* calls add "
    "policy losses, advantage estimators, environments, rewards, ... the recipe may name (docs/extending.md). "
    "A training run records it in config.yaml."
)


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """``--plugin`` on ``parser``, or on each of its subcommands when it has some."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subcommands:
        for command in dict.fromkeys(action.choices.values()):
            add_plugin_option(command)
    if not subcommands:
        parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE", help=PLUGIN_HELP)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc relaunches under torchrun
    if not getattr(args, "run", None):
        parser.print_help()
        return 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from rlft.plugins import load_plugins

        load_plugins(getattr(args, "plugin", []))  # and the installed packages' rlft.plugins entry points
        return int(args.run(args) or 0)
    except RlftError as exc:
        print(f"rlft: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix, not a bug
        from rlft.common.run_folder import os_error_message

        message = os_error_message(exc)
        if message is None:
            raise
        print(f"rlft: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlft: interrupted; resume with --resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

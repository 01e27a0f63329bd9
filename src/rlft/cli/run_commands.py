"""``rlft compare`` (runs' curves overlaid, their recipes' differences) and ``rlft runs`` (the run
folders under a folder, with their status). See docs/compare.md."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser(
        "compare",
        help="Overlay the curves of several runs in one HTML page (and a PNG), with their recipes' differences.",
        description=(
            "Write one self-contained HTML page and a PNG next to it (same name, .png) with the runs' "
            "curves overlaid, one panel per quantity (mean reward, held-out headline metric, KL, entropy, "
            "learning rate, step time), each run's status and held-out result, and a table of the recipe "
            "keys whose values differ. A run still training, or not started, is shown with what it has "
            "so far. See docs/compare.md."
        ),
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="Run folders (the run_dir of each run).")
    compare.add_argument("--out", default="compare.html", metavar="PAGE.html",
                         help="Where to write the page (default: compare.html here); the PNG goes next to it. "
                              "An existing file is replaced only if rlft compare wrote it; never a file of a run folder.")
    compare.add_argument("--force", action="store_true",
                         help="Replace an existing page or PNG that rlft compare did not write (outside run folders only).")
    compare.set_defaults(run=_run_compare)

    runs = sub.add_parser(
        "runs",
        help="List the runs in a folder: status (running, finished, resumable, crashed), steps, held-out metric.",
        description=(
            "List the run folders directly under DIR (and DIR itself if it is a run): algorithm, status "
            "(running, finished, resumable, crashed, not started), steps done of those planned, and the "
            "last held-out headline metric with when it was written; then the command that continues "
            "each stopped run. See docs/compare.md."
        ),
    )
    runs.add_argument("folder", nargs="?", default="runs", metavar="DIR", help="Folder of runs (default: runs).")
    runs.add_argument("--json", action="store_true", help="Print a JSON list, one object per run.")
    runs.set_defaults(run=_run_runs)


def _run_compare(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from rlft.errors import ConfigError
    from rlft.plugins import load_recorded_plugins
    from rlft.report.compare import write_comparison

    for run in args.runs:  # their plugins, as their recipes were checked with them; none is needed to compare
        try:
            load_recorded_plugins(run)
        except ConfigError as exc:
            print(f"rlft: warning: {exc} rlft compare reads only the run's files, so it goes on without it.",
                  file=sys.stderr)
    page, png, runs = write_comparison([Path(p) for p in args.runs], Path(args.out), force=args.force)
    print(f"rlft: compared {len(runs)} run{'s' * (len(runs) != 1)}: wrote {page.resolve()} and {png.resolve()}")
    return 0


def _run_runs(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rlft.report.runs import format_table, list_runs

    found = list_runs(Path(args.folder))
    print(json.dumps([r.as_json() for r in found], indent=2) if args.json else format_table(found))
    return 0

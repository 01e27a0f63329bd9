"""The shared body of the learning benchmarks: one whole run per seed, base vs after RL.

Each seed is a whole `rlft train` run of ``recipe`` (None: the embedded demo recipe) in its own
run folder under --out. The last line printed is one JSON object with base_METRIC_mean,
rl_METRIC_mean (fractions in 0..1), lift_points_mean, the per-seed figures and the seconds taken,
where METRIC is the run's held-out metric (accuracy, pass_rate).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_seeds(
    doc: str, recipe: Path | None, metric: str, default_out: str, extra: Callable[[], dict[str, Any]] | None = None
) -> None:
    """``extra()``, called after the last seed, adds its keys to the JSON line."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Recipe overrides.")
    parser.add_argument("--out", default=default_out, help="Parent folder of the runs (replaced).")
    args = parser.parse_args()

    from transformers.utils import logging

    from rlft.config import load_config
    from rlft.trainers.registry import train

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    per_seed = []
    started = time.time()
    for seed in args.seeds:
        config = load_config(recipe, [*args.set, f"seed={seed}", f"run_dir={out / f'seed{seed}'}"])
        summary = train(config, progress=False)
        base, final = summary[f"base_{metric}"], summary[f"final_{metric}"]
        per_seed.append({"seed": seed, f"base_{metric}": base, f"rl_{metric}": final, "seconds": summary["seconds"]})
        print(f"seed {seed}: base {base:.1%} -> RL {final:.1%} ({summary['seconds']:.0f} s)", flush=True)
    base_mean = statistics.mean(r[f"base_{metric}"] for r in per_seed)
    rl_mean = statistics.mean(r[f"rl_{metric}"] for r in per_seed)
    result = {
        f"base_{metric}_mean": base_mean,
        f"rl_{metric}_mean": rl_mean,
        "lift_points_mean": 100 * (rl_mean - base_mean),
        "seeds": per_seed,
        "eval_size": summary["eval_size"],
        "seconds_total": round(time.time() - started, 1),
        "overrides": args.set,
        **(extra() if extra is not None else {}),
    }
    print(f"mean: base {base_mean:.1%} -> RL {rl_mean:.1%} ({result['lift_points_mean']:+.1f} points)")
    print(json.dumps(result))

"""Does RL lift held-out accuracy? The demo recipe for several seeds, base vs after GRPO.

Run by hand (not in CI):

    .venv/bin/python benchmarks/learning_arithmetic.py                 # 3 seeds, the demo recipe
    .venv/bin/python benchmarks/learning_arithmetic.py --seeds 0 --set train.steps=100

Each seed is a whole `rlft demo` run (tiny model built offline, warm start, GRPO) in its own run
folder under --out. The last line printed is one JSON object with base_accuracy_mean,
rl_accuracy_mean (fractions in 0..1), the per-seed figures and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Recipe overrides.")
    parser.add_argument("--out", default="runs/bench-learning", help="Parent folder of the runs (replaced).")
    args = parser.parse_args()

    from transformers.utils import logging

    from rlft.config import load_config
    from rlft.trainers.loop import train

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    per_seed = []
    started = time.time()
    for seed in args.seeds:
        config = load_config(None, [*args.set, f"seed={seed}", f"run_dir={out / f'seed{seed}'}"])
        summary = train(config, progress=False)
        per_seed.append({"seed": seed, "base_accuracy": summary["base_accuracy"],
                         "rl_accuracy": summary["final_accuracy"], "seconds": summary["seconds"]})
        print(f"seed {seed}: base {summary['base_accuracy']:.1%} -> RL {summary['final_accuracy']:.1%} "
              f"({summary['seconds']:.0f} s)", flush=True)
    base = [r["base_accuracy"] for r in per_seed]
    rl = [r["rl_accuracy"] for r in per_seed]
    result = {
        "base_accuracy_mean": statistics.mean(base),
        "rl_accuracy_mean": statistics.mean(rl),
        "lift_points_mean": 100 * (statistics.mean(rl) - statistics.mean(base)),
        "seeds": per_seed,
        "eval_size": config.task.eval_size,
        "seconds_total": round(time.time() - started, 1),
        "overrides": args.set,
    }
    print(f"mean: base {result['base_accuracy_mean']:.1%} -> RL {result['rl_accuracy_mean']:.1%} "
          f"({result['lift_points_mean']:+.1f} points)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

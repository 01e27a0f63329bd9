"""Does RL lift held-out pass rate on a user's own data? The word-problems example, several seeds.

Run by hand (not in CI):

    .venv/bin/python benchmarks/learning_dataset.py                   # 3 seeds, examples/word_problems/recipe.yaml
    .venv/bin/python benchmarks/learning_dataset.py --seeds 0 --set train.steps=20

Each seed is the run a user gets from `rlft train examples/word_problems/recipe.yaml`: the dataset
task reading examples/word_problems/data/*.jsonl, the tiny model built offline with its tokenizer
trained on that text, a warm start on the worked solutions, then GRPO with the example's python
reward; held-out pass rate is measured on the 300 problems of test.jsonl before and after RL.
The last line printed is one JSON object with base_pass_rate_mean, rl_pass_rate_mean (fractions
in 0..1), lift_points_mean, the per-seed figures and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "word_problems" / "recipe.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Recipe overrides.")
    parser.add_argument("--out", default="runs/bench-dataset", help="Parent folder of the runs (replaced).")
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
        config = load_config(RECIPE, [*args.set, f"seed={seed}", f"run_dir={out / f'seed{seed}'}"])
        summary = train(config, progress=False)
        per_seed.append({"seed": seed, "base_pass_rate": summary["base_pass_rate"],
                         "rl_pass_rate": summary["final_pass_rate"], "seconds": summary["seconds"]})
        print(f"seed {seed}: base {summary['base_pass_rate']:.1%} -> RL {summary['final_pass_rate']:.1%} "
              f"({summary['seconds']:.0f} s)", flush=True)
    base = [r["base_pass_rate"] for r in per_seed]
    rl = [r["rl_pass_rate"] for r in per_seed]
    result = {
        "base_pass_rate_mean": statistics.mean(base),
        "rl_pass_rate_mean": statistics.mean(rl),
        "lift_points_mean": 100 * (statistics.mean(rl) - statistics.mean(base)),
        "seeds": per_seed,
        "eval_size": summary["eval_size"],
        "seconds_total": round(time.time() - started, 1),
        "overrides": args.set,
    }
    print(f"mean: base {result['base_pass_rate_mean']:.1%} -> RL {result['rl_pass_rate_mean']:.1%} "
          f"({result['lift_points_mean']:+.1f} points)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

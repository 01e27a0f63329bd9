"""Every RL algorithm on the arithmetic task at the same sample budget, from the same base.

Run by hand (not in CI):

    .venv/bin/python benchmarks/algorithms_arithmetic.py                    # all algorithms, 3 seeds
    .venv/bin/python benchmarks/algorithms_arithmetic.py --algorithms grpo ppo --seeds 0 --set train.steps=50

One warm-started base is built per seed (the demo recipe's warm start), then each algorithm trains
from a copy of it with the same number of sampled completions (train.steps x train.batch_size).
Prints held-out accuracy before and after per algorithm, writes a PNG of accuracy against samples
into docs/, and ends with one JSON object:
{"base_accuracy_mean": ..., "algorithms": {"grpo": {"accuracy_mean": ...}, ...}}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

ALL = ["grpo", "dr_grpo", "rloo", "reinforce", "reinforce_pp", "ppo", "a2c", "gspo", "dapo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=ALL, choices=ALL)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Overrides applied to every run (e.g. train.steps=100).")
    parser.add_argument("--out", default="runs/bench-algorithms")
    parser.add_argument("--plot", default="docs/algorithms_arithmetic.png")
    args = parser.parse_args()

    from transformers.utils import logging

    from rlft.config import load_config
    from rlft.trainers.registry import train

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    base_acc: list[float] = []
    results: dict[str, list[dict]] = {name: [] for name in args.algorithms}
    for seed in args.seeds:
        # The warm start of this seed, shared by every algorithm (train.steps=0 trains no RL).
        base_run = out / f"base-seed{seed}"
        base = load_config(None, [*args.set, f"seed={seed}", f"run_dir={base_run}", "train.steps=0"])
        base_summary = train(base, progress=False)
        base_acc.append(base_summary["base_accuracy"])
        for name in args.algorithms:
            run_dir = out / f"{name}-seed{seed}"
            config = load_config(None, [*args.set, f"seed={seed}", f"run_dir={run_dir}",
                                        f"algorithm.name={name}", f"model.path={base_run / 'base_model'}",
                                        "warm_start.steps=0"])
            summary = train(config, progress=False)
            curve = [(r["step"] * config.train.batch_size, r["eval/accuracy"])
                     for r in map(json.loads, (run_dir / "evals.jsonl").read_text().splitlines())]
            results[name].append({"seed": seed, "accuracy": summary["final_accuracy"], "curve": curve,
                                  "seconds": summary["seconds"]})
            print(f"seed {seed} {name:>12}: base {base_summary['base_accuracy']:.1%} -> "
                  f"{summary['final_accuracy']:.1%} ({summary['seconds']:.0f} s)", flush=True)

    table = {name: {"accuracy_mean": statistics.mean(r["accuracy"] for r in runs),
                    "accuracy_per_seed": [r["accuracy"] for r in runs],
                    "seconds_mean": statistics.mean(r["seconds"] for r in runs)}
             for name, runs in results.items()}
    _plot(results, statistics.mean(base_acc), Path(args.plot))
    print("\n| algorithm | held-out accuracy (mean over seeds) | lift (points) |\n|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['accuracy_mean']:.1%} | {100 * (row['accuracy_mean'] - statistics.mean(base_acc)):+.1f} |")
    print(json.dumps({"base_accuracy_mean": statistics.mean(base_acc), "algorithms": table,
                      "seeds": args.seeds, "overrides": args.set,
                      "seconds_total": round(time.time() - started, 1)}))


def _plot(results: dict[str, list[dict]], base: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in results.items():
        steps = [x for x, _ in runs[0]["curve"]]
        mean = [statistics.mean(r["curve"][i][1] for r in runs) for i in range(len(steps))]
        ax.plot([0, *steps], [base, *mean], marker="o", label=name)
    ax.set_xlabel("sampled completions")
    ax.set_ylabel("held-out accuracy (greedy, exact match)")
    ax.set_title("Arithmetic: every algorithm from the same warm-started base")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

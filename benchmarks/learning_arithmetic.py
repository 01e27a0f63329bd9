"""Does RL lift held-out accuracy? The demo recipe for several seeds, base vs after GRPO.

Run by hand (not in CI):

    .venv/bin/python benchmarks/learning_arithmetic.py                 # 3 seeds, the demo recipe
    .venv/bin/python benchmarks/learning_arithmetic.py --seeds 0 --set train.steps=100

Each seed is a whole `rlft demo` run (tiny model built offline, warm start, GRPO) in its own run
folder under --out. The last line printed is one JSON object with base_accuracy_mean,
rl_accuracy_mean (fractions in 0..1), the per-seed figures and the seconds taken.
"""

from __future__ import annotations

from learning_common import run_seeds

if __name__ == "__main__":
    run_seeds(__doc__, None, "accuracy", "runs/bench-learning")

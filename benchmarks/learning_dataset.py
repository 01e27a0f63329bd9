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

from pathlib import Path

from learning_common import run_seeds

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "word_problems" / "recipe.yaml"

if __name__ == "__main__":
    run_seeds(__doc__, RECIPE, "pass_rate", "runs/bench-dataset")

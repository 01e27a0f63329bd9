"""Does RL against unit tests lift the held-out pass rate of written code? The code example, 3 seeds.

Run by hand (not in CI):

    .venv/bin/python benchmarks/learning_code.py                   # 3 seeds, examples/code/recipe.yaml
    .venv/bin/python benchmarks/learning_code.py --seeds 0 --set train.steps=20

Each seed is the run a user gets from `rlft train examples/code/recipe.yaml`: the dataset task
reading examples/code/data/*.jsonl (small "write f(x) that ..." problems, 5 asserts each), the
tiny model built offline with its tokenizer trained on that text, a warm start on the reference
solutions, then GRPO with the `unit_tests` reward, every completion run in the sandbox
(bubblewrap where it works). The held-out pass rate (every assert passed) is measured on the
problems of test.jsonl before and after RL. The last line printed is one JSON object with
base_pass_rate_mean, rl_pass_rate_mean (fractions in 0..1), lift_points_mean, the per-seed
figures, the seconds taken, and sandbox_runs / sandbox_runs_per_s (programs the sandbox ran,
and how many per second of waiting for them).
"""

from __future__ import annotations

from pathlib import Path

from learning_common import run_seeds

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "code" / "recipe.yaml"


def sandbox_figures() -> dict[str, object]:
    from rlft.sandbox import Sandbox, totals

    done = totals()
    isolation = Sandbox().isolation.kind
    return {"sandbox_runs": int(done["runs"]), "sandbox_runs_per_s": round(done["runs_per_s"], 1),
            "sandbox_isolation": isolation}


if __name__ == "__main__":
    run_seeds(__doc__, RECIPE, "pass_rate", "runs/bench-code", extra=sandbox_figures)

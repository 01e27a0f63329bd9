"""benchmarks/learning_vs_trl.py's figures from two curves (the benchmark itself needs TRL's
virtual environment and half an hour: docs/learning.md has its measured figures)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from learning_vs_trl import eval_steps, steps_to_reach, task_figures  # noqa: E402


def test_steps_to_reach_is_the_first_evaluated_step_at_or_above_the_target():
    steps = [0, 10, 20, 30]
    assert steps_to_reach(steps, [0.5, 0.6, 0.8, 0.7], 0.7) == 20  # not 30, the last one above
    assert steps_to_reach(steps, [0.5, 0.6, 0.8, 0.7], 0.8) == 20  # equal counts as reached
    assert steps_to_reach(steps, [0.5, 0.6, 0.8, 0.7], 0.81) is None
    assert steps_to_reach(steps, [0.9, 0.6, 0.8, 0.7], 0.85) == 0  # the base already there


def test_task_figures_compare_each_seed_with_its_own_trl_final():
    steps = [0, 10, 20, 30]
    rlft = {0: [0.5, 0.7, 0.8, 0.9], 1: [0.4, 0.5, 0.6, 0.65]}
    trl = {0: [0.5, 0.6, 0.6, 0.7], 1: [0.4, 0.45, 0.5, 0.6]}
    out = task_figures("t", steps, rlft, trl, 0.45)
    assert out["t_rlft_steps_to_trl_final_seeds"] == [10, 20]  # seed 1 against 0.6, not seed 0's 0.7
    assert out["t_rlft_steps_to_trl_final"] == 15 and out["t_step_ratio"] == 0.5
    assert out["t_trl_final"] == pytest.approx(0.65) and out["t_rlft_final"] == pytest.approx(0.775)
    assert out["t_base"] == 0.45
    trl[1][-1] = 0.7  # seed 1 never reaches it: no mean over the seeds that did
    out = task_figures("t", steps, rlft, trl, 0.45)
    assert out["t_rlft_steps_to_trl_final_seeds"] == [10, None] and out["t_rlft_steps_to_trl_final"] is None


def test_eval_steps_include_the_base_and_the_last_step():
    assert eval_steps(30, 10) == [0, 10, 20, 30]
    assert eval_steps(25, 10) == [0, 10, 20, 25]

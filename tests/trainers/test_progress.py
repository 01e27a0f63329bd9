"""The progress bar every trainer gets from the harness: the last held-out headline metric and the
time left with the evaluations still to come."""

from __future__ import annotations

import pytest

from rlft.config import config_from_dict
from rlft.trainers.registry import train
from rlft.trainers.run import RunClock, Schedule, format_seconds, remaining_seconds


def test_time_left_counts_steps_and_the_evaluations_still_to_come():
    # 2 s a step, 10 s an evaluation: 3 steps and 1 evaluation left.
    assert remaining_seconds([1.0, 3.0], [10.0], steps_left=3, evals_left=1) == pytest.approx(16.0)
    # No evaluation timed yet: one counts as a step.
    assert remaining_seconds([2.0], [], steps_left=2, evals_left=2) == pytest.approx(8.0)
    assert format_seconds(remaining_seconds([], [], 5, 1)) == "?"
    assert (format_seconds(75), format_seconds(3725)) == ("01:15", "1:02:05")


def test_the_clock_shows_the_last_held_out_metric_and_counts_the_final_evaluation():
    clock = RunClock(held_out=0.25, steps=[1.0], evals=[4.0])
    shown = clock.shown("eval/accuracy", done=6, schedule=Schedule(10, 5, 5, 1, 3))
    # Steps 7..10 are left (4 s); the evaluations due are at step 10 only (4 s).
    assert shown == {"held-out accuracy": "0.250", "eta": "00:08"}


def test_a_run_prints_the_held_out_metric_and_the_time_left(tmp_path, tiny_recipe, capsys):
    config = config_from_dict({}, [*tiny_recipe, "train.steps=2", "eval.every=1", "warm_start.steps=0",
                                   f"run_dir={tmp_path / 'run'}"])
    train(config, progress=True)
    err = capsys.readouterr().err
    assert "held-out accuracy=" in err and "eta=" in err

"""The multistep task: its worked solutions compute the answer, held-out prompts never train, its
settings are checked when the recipe loads."""

from __future__ import annotations

import pytest
import torch

from rlft.config import config_from_dict
from rlft.errors import ConfigError
from rlft.tasks import build_task
from rlft.tasks.multistep import MultistepTask

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


def test_each_line_applies_one_change_to_the_count_before_it():
    task = MultistepTask(min_steps=3, max_steps=6, train_size=200, eval_size=50, seed=7)
    for problem in task.all_train_problems() + task.eval_problems:
        *lines, answer = problem.target.split("\n")
        assert 3 <= len(lines) == problem.extra["n_steps"] <= 6
        count = int(problem.prompt.split(" has ")[1].split()[0])
        for line in lines:
            left, result = line[1:].split("=")
            count = OPS[line[0]](count, int(left))
            assert int(result) == count and 0 <= count <= 99
        assert answer == f"#{count}" and problem.answer == str(count)
    assert not {p.prompt for p in task.eval_problems} & {p.prompt for p in task.all_train_problems()}


def test_reward_reads_the_answer_after_the_last_hash():
    task = MultistepTask(train_size=10, eval_size=2)
    p = task.eval_problems[0]
    assert task.reward([p.target, f"+1=2\n#{p.answer}", "#999", p.answer], [p] * 4) == [1.0, 1.0, 0.0, 0.0]
    drawn = task.train_problems(25, torch.Generator().manual_seed(0))  # more than the set: it cycles
    assert len(drawn) == 25 and len({q.prompt for q in drawn[:10]}) == 10
    demos = task.warm_start_problems(200, torch.Generator().manual_seed(0))  # new problems, never held out
    assert len({q.prompt for q in demos}) > 150 and not {q.prompt for q in demos} & {q.prompt for q in task.eval_problems}
    assert demos == task.warm_start_problems(200, torch.Generator().manual_seed(0))


def test_recipe_settings_reach_the_task_and_are_checked():
    config = config_from_dict({"task": {"name": "multistep", "min_steps": 2, "max_steps": 2, "train_size": 30,
                                        "eval_size": 5}})
    task = build_task(config.task)
    assert len(task.all_train_problems()) == 30 and {p.extra["n_steps"] for p in task.eval_problems} == {2}
    with pytest.raises(ConfigError, match="min_steps=5 is above task.max_steps=4"):
        config_from_dict({"task": {"name": "multistep", "min_steps": 5, "max_steps": 4}})
    with pytest.raises(ConfigError, match="task.digits is set"):
        config_from_dict({"task": {"name": "multistep", "digits": 3}})

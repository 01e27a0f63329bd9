import torch

from rlft.tasks import ArithmeticTask


def test_held_out_problems_never_appear_in_training():
    task = ArithmeticTask(digits=1, operations=["+"], eval_size=20, seed=3)
    held_out = {p.prompt for p in task.eval_problems}
    train = task.train_problems(500, torch.Generator().manual_seed(0))
    assert len(held_out) == 20
    assert not held_out & {p.prompt for p in train}


def test_answers_are_correct_for_every_operation():
    task = ArithmeticTask(digits=2, operations=["+", "-", "*"], eval_size=50)
    for p in task.eval_problems:
        assert str(eval(p.prompt[:-1])) == p.answer  # noqa: S307 - our own arithmetic strings


def test_reward_is_exact_match_up_to_spaces():
    task = ArithmeticTask()
    p = task.eval_problems[0]
    wrong = str(int(p.answer) + 1)
    assert task.reward([p.answer, f" {p.answer} ", wrong, p.answer + "0", ""], [p] * 5) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_same_seed_same_split_and_batches():
    a, b = ArithmeticTask(seed=7), ArithmeticTask(seed=7)
    assert a.eval_problems == b.eval_problems
    assert a.train_problems(5, torch.Generator().manual_seed(1)) == b.train_problems(5, torch.Generator().manual_seed(1))


def test_column_addition_steps_by_hand():
    from rlft.tasks.arithmetic import column_addition_steps

    assert column_addition_steps(23, 45) == "3+5+0=8 2+4+0=6 #68"
    assert column_addition_steps(75, 71) == "5+1+0=6 7+7+0=14 #146"
    assert column_addition_steps(5, 98) == "5+8+0=13 0+9+1=10 #103"


def test_steps_format_rewards_only_the_answer_after_the_last_hash():
    task = ArithmeticTask(answer_format="steps")
    p = task.eval_problems[0]
    assert p.target.endswith(f"#{p.answer}") and p.prompt.endswith("=")
    wrong_steps = f"9+9+9=99 #{p.answer}"
    assert task.reward([p.target, wrong_steps, p.answer, f"#{p.answer}#1"], [p] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_steps_format_needs_addition_only():
    import pytest

    from rlft.config import config_from_dict
    from rlft.errors import ConfigError

    with pytest.raises(ConfigError, match="operations must be"):
        config_from_dict({"task": {"answer_format": "steps", "operations": ["+", "*"]}})

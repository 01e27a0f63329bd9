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


def test_reviews_true_score_by_hand():
    from rlft.tasks.reviews import true_score

    assert true_score(" great food , lovely view .") == 1.0
    assert true_score(" great food , plain view .") == 0.5
    assert true_score(" rude staff , average room .") == -0.5
    assert true_score(" awful food , dirty room .") == -1.0
    assert true_score(" great food , lovely food .") == -1.0  # the same aspect twice
    assert true_score(" great food , lovely") == -1.0  # cut off
    assert true_score(" great food , cheap view .") == -1.0  # not a known adjective


def test_reviews_split_targets_and_reward():
    from rlft.tasks.reviews import TONE, ReviewsTask, true_score

    task = ReviewsTask(eval_size=48, seed=3)
    held_out = {p.prompt for p in task.eval_problems}
    assert len(held_out) == 48
    train = task.train_problems(500, torch.Generator().manual_seed(0))
    assert not held_out & {p.prompt for p in train}
    assert all(true_score(p.target) == sum(TONE[w] for w in p.target.split()[::3][:2]) / 2 for p in train)
    tones = {true_score(p.target) for p in train}
    assert {-1.0, 0.0, 1.0} <= tones  # the warm start sees every tone
    assert task.reward([" great food , lovely view .", " great food , plain view ."], train[:2]) == [1.0, 0.0]
    assert ReviewsTask(eval_size=48, seed=3).eval_problems == task.eval_problems


def test_sampled_evaluation_is_seeded_and_repeats_each_problem():
    from rlft.config import TinyModelConfig
    from rlft.evaluation import evaluate
    from rlft.models.loading import load_policy
    from rlft.models.tiny import build_tiny_model
    from rlft.tasks.reviews import ReviewsTask

    task = ReviewsTask(eval_size=6)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                         intermediate_size=64), task.corpus(200), tmp, seed=0)  # fmt: skip
        model, tokenizer = load_policy(tmp)
    first = evaluate(model, tokenizer, task, task.eval_problems, 6, temperature=1.0, samples=3)
    again = evaluate(model, tokenizer, task, task.eval_problems, 6, temperature=1.0, samples=3)
    assert len(first.completions) == 18 and [p.prompt for p in first.problems[:3]] == [task.eval_problems[0].prompt] * 3
    assert first.completions == again.completions  # same seed, same samples
    assert len(set(first.completions)) > 1  # an untrained model samples varied text
    greedy = evaluate(model, tokenizer, task, task.eval_problems, 6)
    assert len(greedy.completions) == 6 and greedy.problems == task.eval_problems

"""Built-in rewards and the checks in ``score``, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from rlft.rewards import RewardError, RewardOutput, build_reward, score
from rlft.rewards.builtins import parse_number
from rlft.rewards.normalization import RunningMoments, batch_zscore, clip, normalize
from rlft.tasks.arithmetic import Problem

PROMPTS = ["p1", "p2", "p3"]


def test_exact_match_uses_answers_or_problems():
    reward = build_reward({"type": "exact_match"})
    assert reward(PROMPTS, [" 12 ", "13", "x"], answers=["12", "14", "X"]) == [1.0, 0.0, 0.0]
    problems = [Problem("1+1=", "2"), Problem("2+2=", "4")]
    assert reward(["1+1=", "2+2="], ["2", "5"], problems=problems) == [1.0, 0.0]
    assert build_reward({"type": "exact_match", "ignore_case": True})(
        ["p"], ["x"], answers=["X"]
    ) == [1.0]


def test_exact_match_without_answers_names_the_missing_context():
    with pytest.raises(RewardError, match="needs the per-sample context 'answers'"):
        score(build_reward({"type": "exact_match"}), ["p"], ["c"])


def test_numeric_answer_reads_the_last_number():
    assert parse_number("The answer is 1,234.5.") == 1234.5
    assert parse_number("3 then -7", "first") == 3.0
    assert parse_number("none") is None
    reward = build_reward({"type": "numeric", "tolerance": 0.01})
    got = reward(PROMPTS, ["so it is 42.", "41.995", "no idea"], answers=["42", "42", "42"])
    assert got == [1.0, 1.0, 0.0]


def test_regex_format_modes():
    search = build_reward({"type": "regex", "pattern": r"\d+", "penalty": -1.0})
    assert search(PROMPTS, ["ab 12", "ab", ""]) == [1.0, -1.0, -1.0]
    full = build_reward({"type": "regex", "pattern": r"<a>\d+</a>", "mode": "fullmatch"})
    assert full(PROMPTS, ["<a>7</a>", "<a>7</a> and more", "x<a>7</a>"]) == [1.0, 0.0, 0.0]


def test_length_penalty_is_linear_beyond_the_limit():
    chars = build_reward({"type": "length_penalty", "max_length": 3, "coef": 0.5})
    assert chars(PROMPTS, ["abc", "abcdef", ""]) == [0.0, -1.5, 0.0]
    words = build_reward({"type": "length_penalty", "max_length": 1, "coef": 1.0, "unit": "words"})
    assert words(PROMPTS, ["one", "one two three", "a b"]) == [0.0, -2.0, -1.0]


def test_sentiment_is_vader_compound():
    # VADER: "great" has valence 3.1; compound = 3.1 / sqrt(3.1**2 + 15).
    reward = build_reward({"type": "sentiment"})
    got = reward(PROMPTS, ["great", "the table", "great"])
    assert got[0] == pytest.approx(3.1 / math.sqrt(3.1**2 + 15), abs=1e-4)
    assert got[1] == 0.0
    negative = build_reward({"type": "sentiment", "target": "negative"})
    assert negative(["p"], ["great"])[0] == pytest.approx(-got[0])


def test_python_function_from_file_and_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def shout(prompts, completions, **context):\n"
        "    return [float(c.isupper()) for c in completions]\n"
    )
    from_file = build_reward({"type": "python", "function": f"{tmp_path / 'my_rewards.py'}:shout"})
    assert from_file(["p", "q"], ["HEY", "hey"]) == [1.0, 0.0]
    monkeypatch.syspath_prepend(str(tmp_path))
    from_module = build_reward({"type": "python", "function": "my_rewards:shout"})
    assert from_module(["p"], ["OK"]) == [1.0]


def test_weighted_sum_normalises_each_component_then_weights():
    reward = build_reward(
        {
            "type": "weighted",
            "normalize": "batch",
            "components": [
                {"type": "exact_match", "weight": 2.0},
                {
                    "type": "length_penalty",
                    "max_length": 0,
                    "coef": 100.0,
                    "weight": 1.0,
                    "name": "len",
                },
            ],
        }
    )
    out = score(reward, ["a", "b"], ["1", "22"], answers=["1", "2"])
    # exact_match [1, 0] -> z [1, -1]; len penalty [-100, -200] -> z [1, -1]; 2*z1 + z2.
    assert out.rewards == pytest.approx([3.0, -3.0], abs=1e-6)
    assert out.components == {"exact_match": [1.0, 0.0], "len": [-100.0, -200.0]}
    plain = build_reward(
        {"type": "weighted", "components": [{"type": "exact_match", "weight": 0.5}]}
    )
    assert score(plain, ["a"], ["1"], answers=["1"]).rewards == [0.5]


def test_running_moments_match_the_whole_stream():
    moments = RunningMoments()
    moments.update([1.0, 2.0, 3.0])
    moments.update([4.0, 5.0])
    assert (moments.count, moments.mean, moments.var) == (5, pytest.approx(3.0), pytest.approx(2.0))
    fresh = RunningMoments()
    # The batch is included before normalising: mean 2, std sqrt(2/3).
    assert normalize([1.0, 2.0, 3.0], "running", fresh) == pytest.approx(
        [-1.2247449, 0.0, 1.2247449]
    )
    assert batch_zscore([5.0, 5.0]) == [0.0, 0.0]
    assert clip([-3.0, 0.5, 3.0], 1.0) == [-1.0, 0.5, 1.0]
    assert clip([7.0], None) == [7.0]


def test_score_names_the_prompt_that_gives_nan():
    def reward(prompts, completions, **context):
        return [float("nan") if c == "bad" else 1.0 for c in completions]

    with pytest.raises(RewardError, match=r"returned nan for prompt 'p2'"):
        score(reward, ["p1", "p2"], ["ok", "bad"])


def test_score_names_the_prompt_that_raises():
    def reward(prompts, completions, answers):
        return [1.0 / int(a) for a in answers]

    with pytest.raises(RewardError, match=r"raised on prompt 'p2': ZeroDivisionError"):
        score(reward, ["p1", "p2", "p3"], ["a", "b", "c"], answers=["1", "0", "2"])


def test_score_checks_the_count_and_accepts_outputs_and_tensors():
    import torch

    with pytest.raises(RewardError, match="returned 1 scores for 2 completions"):
        score(lambda p, c, **k: [1.0], ["a", "b"], ["x", "y"])
    assert score(lambda p, c, **k: torch.tensor([0.5, 1.5]), ["a", "b"], ["x", "y"]).rewards == [
        0.5,
        1.5,
    ]
    out = score(lambda p, c, **k: RewardOutput([1.0], {"part": [2.0]}), ["a"], ["x"])
    assert out.components == {"part": [2.0]}

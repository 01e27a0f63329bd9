"""A reward of one's own that misbehaves stops `rlft train --data ... --reward FILE.py:score` with
one error naming the reward: a huge score, text instead of a number, a hang, sys.exit."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rlft.rewards import RewardError, score
from rlft.rewards.limits import limit_reward

REWARDS = '''
import sys, time

def huge(prompts, completions, **context):
    return [1e308] * len(prompts)

def text(prompts, completions, **context):
    return ["0.5"] * len(prompts)

def hangs(prompts, completions, **context):
    time.sleep(600)

def exits(prompts, completions, **context):
    sys.exit(0)

def huge_when_wrong(prompts, completions, answers, **context):  # passes the preflight (reference answers)
    return [1.0 if c.strip() == a else 1e308 for c, a in zip(completions, answers)]
'''


@pytest.mark.parametrize(
    ("function", "settings", "message"),
    [
        ("huge", [], "returned 1e+308 for prompt '"),
        ("huge", [], "beyond reward_limits.max_abs=1e+06"),
        ("text", [], "returned the text '0.5' as score 0"),
        ("hangs", ["reward_limits.timeout=1"], "did not return within reward_limits.timeout=1 s"),
        ("exits", [], "called sys.exit(0)"),
        ("huge_when_wrong", [], "beyond reward_limits.max_abs=1e+06"),  # the model's own answers, in training
    ],
)
def test_a_misbehaving_reward_stops_the_run_with_its_name(tmp_path, tiny_recipe, function, settings, message):
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                            for a in range(5) for b in range(5)))  # fmt: skip
    rewards = tmp_path / "rewards.py"
    rewards.write_text(REWARDS)
    sets = [a for r in [*tiny_recipe, "task.eval_fraction=0.2", *settings] for a in ("--set", r)]
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", "train", "--data", str(data), "--reward", f"{rewards}:{function}",
         "--run-dir", str(tmp_path / "run"), "--no-progress", *sets],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"Reward python ({rewards}:{function})" in out.stderr and message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 200  # the hang did not hold the run


def test_the_bound_is_a_setting_and_covers_components():
    def big(prompts, completions, **context):
        return [5e5] * len(prompts)

    assert score(limit_reward(big, 1e6, None), ["p"], ["c"]).rewards == [5e5]
    with pytest.raises(RewardError, match=r"beyond reward_limits.max_abs=100000"):
        score(limit_reward(big, 1e5, None), ["p"], ["c"])
    assert score(limit_reward(big, None, None), ["p"], ["c"]).rewards == [5e5]

    from rlft.rewards.builtins import Component, WeightedSum

    weighted = WeightedSum([Component("big", big, 1e-6)])  # a small total from a huge component
    with pytest.raises(RewardError, match=r"\(component 'big'\) returned 500000"):
        score(limit_reward(weighted, 1e5, None), ["p"], ["c"])


def test_bools_are_scores_and_text_is_refused_without_limits_too():
    def same(prompts, completions, **context):
        return [c == "4" for c in completions]

    assert score(same, ["2+2=", "2+2="], ["4", "5"]).rewards == [1.0, 0.0]
    with pytest.raises(RewardError, match="returned the text '1'"):
        score(lambda p, c, **k: ["1"] * len(p), ["p"], ["c"])
    with pytest.raises(RewardError, match=r"called sys.exit\(3\)"):
        score(lambda p, c, **k: sys.exit(3), ["p"], ["c"])


def test_rlfts_own_rewards_are_not_timed_but_user_code_inside_them_is():
    from rlft.rewards import build_reward

    exact = build_reward({"type": "exact_match"})
    assert limit_reward(exact, 1e6, 5).timeout is None  # math_verify's own timeouts need the main thread
    weighted = build_reward({"type": "weighted", "components": [
        {"type": "exact_match"}, {"type": "python", "function": "os.path:join"}]})  # fmt: skip
    assert limit_reward(weighted, 1e6, 5).timeout == 5
    assert limit_reward(lambda p, c, **k: [0.0] * len(p), 1e6, 5).timeout == 5

"""The curriculum sampler (task.sampler: curriculum): hand-computed weights and pass rates, unseen
prompts first, draws that follow p (1 - p), exact resume from its state, and a run that logs it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlft.config import config_from_dict
from rlft.errors import ConfigError
from rlft.tasks import ArithmeticTask
from rlft.tasks.multistep import MultistepTask
from rlft.trainers.curriculum import (
    CurriculumSampler,
    UniformSampler,
    ema_pass_rate,
    learning_signal_weights,
    with_prompt_sampler,
    zero_signal_groups,
)


def test_pass_rate_ema_and_weights_by_hand():
    assert ema_pass_rate(math.nan, 0.25, 0.5) == 0.25  # first group: its own pass rate
    assert ema_pass_rate(0.25, 1.0, 0.5) == pytest.approx(0.625)
    assert ema_pass_rate(0.25, 1.0, 0.2) == pytest.approx(0.4)
    weights = learning_signal_weights(torch.tensor([0.0, 0.5, 1.0, 0.9]), floor=0.02)
    assert weights.tolist() == pytest.approx([0.02, 0.25, 0.02, 0.09])
    assert zero_signal_groups([0, 0, 1, 0, 1, 1, 0.5, 0.5], 2) == 3


def _sampler(size: int = 12, G: int = 2) -> CurriculumSampler:
    return CurriculumSampler(MultistepTask(train_size=size, eval_size=4), G, ema=0.5, floor=0.02, pass_threshold=1.0)


def test_unseen_prompts_come_first_and_each_once():
    sampler = _sampler()
    gen = torch.Generator().manual_seed(0)
    first = sampler.draw(8, gen)
    assert len({p.prompt for p in first}) == 8
    sampler.observe([p for p in first for _ in range(2)], [0.0] * 16)
    second = sampler.draw(8, gen)
    # The 4 prompts never seen come before any seen one.
    assert {p.prompt for p in second[:4]}.isdisjoint(p.prompt for p in first)
    assert {p.prompt for p in second[4:]} <= {p.prompt for p in first}
    assert sampler.metrics() == {"curriculum/zero_signal_fraction": 1.0, "curriculum/solved_none_fraction": 1.0,
                                 "curriculum/solved_all_fraction": 0.0, "curriculum/mean_p": 0.0,
                                 "curriculum/seen_fraction": 8 / 12}


def test_draws_follow_the_learning_signal():
    sampler = _sampler(size=10, G=2)
    gen = torch.Generator().manual_seed(0)
    pool = sampler.draw(10, gen)
    half = {p.prompt for p in pool[:5]}  # these pass half the time; the others never
    sampler.observe([p for p in pool for _ in range(2)], [r for p in pool for r in ((1.0, 0.0) if p.prompt in half else (0.0, 0.0))])
    counts = {"half": 0, "never": 0}
    for _ in range(400):
        for p in sampler.draw(2, gen):
            counts["half" if p.prompt in half else "never"] += 1
    # Weight 0.25 against the floor 0.02: 0.25 / 0.27 = 0.926 of the draws (without replacement
    # within a draw of 2 the share is a little lower; 0.87 is far from uniform's 0.5).
    assert counts["half"] / 800 > 0.85
    metrics = sampler.metrics()
    assert metrics["curriculum/zero_signal_fraction"] == metrics["curriculum/solved_none_fraction"] == 0.5


def test_resumed_sampler_draws_what_an_uninterrupted_one_draws():
    def play(sampler, steps, gen, start=0):
        drawn = []
        for step in range(start, start + steps):
            problems = sampler.draw(4, gen)
            drawn.append([p.prompt for p in problems])
            rewards = [float((len(p.prompt) + step + k) % 3 == 0) for p in problems for k in range(2)]
            sampler.observe([p for p in problems for _ in range(2)], rewards)
        return drawn

    gen = torch.Generator().manual_seed(1)
    straight = play(_sampler(), 8, gen)
    gen = torch.Generator().manual_seed(1)
    first = _sampler()
    head = play(first, 4, gen)
    state, gen_state = first.state_dict(), gen.get_state()
    resumed = _sampler()
    resumed.load_state_dict(state)
    gen = torch.Generator()
    gen.set_state(gen_state)
    assert head + play(resumed, 4, gen, start=4) == straight


def test_curriculum_needs_a_task_with_a_finite_training_set():
    for name in ("arithmetic", "reviews"):  # refused when the recipe loads, before a run folder exists
        with pytest.raises(ConfigError, match=f"finite training set.*task '{name}' draws new.*multistep"):
            config_from_dict({"task": {"name": name, "sampler": "curriculum"}})
    # A task object without all_train_problems() (a plugin's) is refused when the sampler is built.
    config = config_from_dict({"task": {"name": "multistep", "sampler": "curriculum"}})
    with pytest.raises(ConfigError, match="finite training set.*multistep"):
        with_prompt_sampler(config, ArithmeticTask(eval_size=4))
    uniform = with_prompt_sampler(config_from_dict({}), ArithmeticTask(eval_size=4))
    assert isinstance(uniform.sampler, UniformSampler)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert uniform.train_problems(5, gen_a) == ArithmeticTask(eval_size=4).train_problems(5, gen_b)


MULTISTEP = [
    "task.name=multistep", "task.train_size=24", "task.eval_size=8", "task.max_steps=3",
    "model.tiny.hidden_size=64", "model.tiny.num_layers=1", "model.tiny.intermediate_size=128",
    "warm_start.steps=4", "warm_start.batch_size=8", "train.batch_size=16", "algorithm.group_size=4",
    "rollout.max_new_tokens=6", "eval.every=4", "train.torch_threads=1", "task.sampler=curriculum",
]


@pytest.mark.slow
def test_curriculum_run_logs_its_metrics_and_resumes_exactly(tmp_path):
    from rlft.trainers.registry import train

    def run(name, steps, resume=False):
        config = config_from_dict({}, [*MULTISTEP, f"train.steps={steps}", "checkpoint.every=2",
                                       f"run_dir={tmp_path / name}"])
        summary = train(config, progress=False, resume=resume)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return summary, [json.loads(line) for line in lines]

    summary, metrics = run("straight", 4)
    assert all("curriculum/zero_signal_fraction" in m and "curriculum/mean_p" in m for m in metrics)
    assert metrics[1]["curriculum/seen_fraction"] == pytest.approx(8 / 24)  # 4 prompts a step, unseen first
    hist = summary["curriculum_pass_rates"]
    assert sum(hist["counts"]) + hist["unseen"] == hist["prompts"] == 24
    from rlft.report.report import build_report

    report = build_report(tmp_path / "straight", per_token=False).markdown()
    assert "Curriculum: pass rates of the training prompts" in report and f"{hist['unseen']} never" in report
    run("resumed", 2)
    _, resumed = run("resumed", 4, resume=True)
    keep = ("reward/mean", "curriculum/mean_p", "curriculum/zero_signal_fraction", "policy/kl")
    assert [[m[k] for k in keep] for m in resumed] == [[m[k] for k in keep] for m in metrics]

"""Private by default: PII seeded into a task's prompts never reaches any file of the run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from rlft.config import config_from_dict
from rlft.responsible.privacy import RunScrubber, private_task, scrub_fields
from rlft.tasks import ArithmeticTask, Problem
from rlft.trainers.registry import train

# One value per structured type; each is long and specific enough that finding it in a file can
# only mean it leaked.
SEEDED = {
    "EMAIL": "ann.leeward@example.com",
    "PHONE": "(555) 867-5309",
    "CARD": "4111 1111 1111 1111",
    "IP": "203.0.113.77",
}


def _draw_with_pii(self: ArithmeticTask, gen: torch.Generator) -> Problem:
    """The arithmetic task with a personal detail in front of every prompt."""
    a, b = torch.randint(0, self.max_operand + 1, (2,), generator=gen).tolist()
    value = list(SEEDED.values())[int(torch.randint(0, len(SEEDED), (1,), generator=gen))]
    return Problem(prompt=f"from {value}: {a}+{b}=", answer=str(a + b))


def _files_containing(root: Path, values: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [v for v in values if v.encode() in data or json.dumps(v)[1:-1].encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def _run(tmp_path: Path, tiny_recipe: list[str], scrub: bool) -> Path:
    run_dir = tmp_path / ("scrubbed" if scrub else "raw")
    recipe = [r for r in tiny_recipe if not r.startswith(("train.steps", "checkpoint.every"))]
    config = config_from_dict({}, [*recipe, "train.steps=2", "checkpoint.every=1", "warm_start.steps=4",
                                   f"privacy.scrub_pii={str(scrub).lower()}", f"run_dir={run_dir}"])
    train(config, progress=False)
    return run_dir


@pytest.mark.slow
def test_seeded_pii_appears_in_no_file_of_the_run_folder(tmp_path, tiny_recipe, monkeypatch):
    monkeypatch.setattr(ArithmeticTask, "_draw", _draw_with_pii)
    run_dir = _run(tmp_path, tiny_recipe, scrub=True)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any(p.name == "tokenizer.json" for p in files)
    assert _files_containing(run_dir, list(SEEDED.values())) == {}
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["scrub_pii"] is True
    assert set(privacy["counts"]) == set(SEEDED)  # every seeded type was found and counted
    samples = (run_dir / "samples.jsonl").read_text()
    assert "[EMAIL]" in samples or "[PHONE]" in samples or "[CARD]" in samples or "[IP]" in samples


@pytest.mark.slow
def test_without_scrubbing_the_same_run_leaks(tmp_path, tiny_recipe, monkeypatch):
    """The control: the check above can fail — with scrub_pii false the values are in the run."""
    monkeypatch.setattr(ArithmeticTask, "_draw", _draw_with_pii)
    run_dir = _run(tmp_path, tiny_recipe, scrub=False)
    leaked = _files_containing(run_dir, list(SEEDED.values()))
    assert "samples.jsonl" in leaked
    assert json.loads((run_dir / "privacy.json").read_text()) == {
        "scrub_pii": False, "counts": {}, "fields": {}, "target_fields": [], "pii_kept_in_targets": {},
        "distinct_texts": 0, "texts_with_pii": 0, "ner": False,
    }


def test_scrubbing_is_on_by_default_and_counts_distinct_texts():
    assert config_from_dict({}).privacy.scrub_pii is True
    scrubber = RunScrubber()
    for _ in range(3):
        assert scrubber.text("mail ann.leeward@example.com now") == "mail [EMAIL] now"
    problem = scrubber.record(Problem("call (555) 867-5309: 1+2=", "3"))
    assert problem == Problem("call [PHONE]: 1+2=", "3")
    assert scrubber.summary()["counts"] == {"EMAIL": 1, "PHONE": 1}


def test_scrubbing_arithmetic_prompts_is_cheap_and_changes_nothing():
    task = ArithmeticTask(eval_size=64)
    wrapped = private_task(ArithmeticTask(eval_size=64), enabled=True)
    assert wrapped.eval_problems == task.eval_problems
    gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert wrapped.train_problems(256, gen_a) == task.train_problems(256, gen_b)
    started = time.perf_counter()
    for step in range(20):  # 20 RL steps of 128 prompts: memoised after the first sight of a prompt
        wrapped.train_problems(128, torch.Generator().manual_seed(step % 2))
    assert time.perf_counter() - started < 1.0
    assert wrapped.scrubber.summary()["counts"] == {}


def test_scrubbing_never_changes_the_answers_of_a_verifiable_task():
    """Issue 13 item 10: with 5-digit multiplication, 179 of 256 held-out answers (10-digit products)
    became [PHONE] and the reward paid 1.0 for the placeholder. Answers and targets are never
    scrubbed, and a bare number is not a phone number, so nothing is counted either."""
    task = ArithmeticTask(digits=5, operations=["*"], eval_size=256)
    wrapped = private_task(ArithmeticTask(digits=5, operations=["*"], eval_size=256), enabled=True)
    assert sum(len(p.answer) == 10 for p in task.eval_problems) > 100  # the case that was broken
    assert wrapped.eval_problems == task.eval_problems
    assert [p.answer for p in wrapped.eval_problems] == [p.answer for p in task.eval_problems]
    assert [p.target for p in wrapped.eval_problems] == [p.target for p in task.eval_problems]
    train = wrapped.train_problems(512, torch.Generator().manual_seed(0))
    assert train == task.train_problems(512, torch.Generator().manual_seed(0))
    problems = wrapped.eval_problems
    assert wrapped.reward([p.answer for p in problems], problems) == [1.0] * len(problems)
    assert wrapped.reward(["[PHONE]"] * len(problems), problems) == [0.0] * len(problems)
    wrapped.corpus(200)
    summary = wrapped.scrubber.summary()
    assert summary["counts"] == {} and summary["fields"] == {} and summary["pii_kept_in_targets"] == {}


def test_prompts_are_scrubbed_targets_kept_and_counts_reported_per_field():
    """The rule a dataset task applies to its rows: scrub the prompt side, never the answer, the
    warm-start target or the extra (reward) columns; PII left in those is counted, not removed."""
    scrubber = RunScrubber()
    row = {
        "prompt": "ann.leeward@example.com asks: call (555) 867-5309?",
        "answer": "(555) 867-5309",
        "extra": {"source": "203.0.113.77", "difficulty": 3},
        "notes": "from 203.0.113.77",
    }
    out = scrub_fields(row, scrubber, targets={"answer", "extra"})
    assert out == {
        "prompt": "[EMAIL] asks: call [PHONE]?",
        "answer": "(555) 867-5309",
        "extra": {"source": "203.0.113.77", "difficulty": 3},
        "notes": "from [IP]",
    }
    problem = Problem("call (555) 867-5309: 1+2=", "3", extra={"email": "ann.leeward@example.com"})
    kept = scrub_fields(problem, scrubber, targets={"answer", "target", "extra"})
    assert (kept.prompt, kept.answer, kept.extra) == ("call [PHONE]: 1+2=", "3", problem.extra)
    summary = scrubber.summary()
    assert summary["counts"] == {"EMAIL": 1, "IP": 1, "PHONE": 2}
    assert summary["fields"] == {"notes": {"IP": 1}, "prompt": {"EMAIL": 1, "PHONE": 2}}
    assert summary["pii_kept_in_targets"] == {
        "answer": {"PHONE": 1}, "extra.email": {"EMAIL": 1}, "extra.source": {"IP": 1},
    }
    assert summary["target_fields"] == ["answer", "extra", "target"]
    with pytest.raises(TypeError, match="dataclass instance or a mapping"):
        scrub_fields("a prompt", scrubber, targets=())


def test_a_task_that_builds_its_held_out_problems_late_is_scrubbed_when_it_does():
    """The dataset task renders its problems in prepare(): the wrapper reads them through."""

    class Late:
        eval_problems: list[Problem] = []

        def prepare(self) -> None:
            self.eval_problems = [Problem("mail ann.leeward@example.com: 1+1=", "2")]

        def warm_start_problems(self, n: int) -> list[Problem]:
            return [Problem("from 203.0.113.77: 1+1=", "2")] * n

    wrapped = private_task(Late(), enabled=True)
    assert wrapped.eval_problems == []
    wrapped.prepare()
    assert wrapped.eval_problems == [Problem("mail [EMAIL]: 1+1=", "2")]
    assert wrapped.warm_start_problems(2) == [Problem("from [IP]: 1+1=", "2")] * 2


@pytest.mark.slow
def test_a_private_multiplication_run_rewards_numbers_not_placeholders(tmp_path, tiny_recipe):
    """The probe of issue 13 item 10 as a user runs it: 5-digit multiplication, scrubbing on."""
    run_dir = tmp_path / "mul"
    recipe = [r for r in tiny_recipe if not r.startswith(("train.steps", "checkpoint.every", "eval.every"))]
    config = config_from_dict({}, [*recipe, "train.steps=1", "checkpoint.every=1", "eval.every=1",
                                   "warm_start.steps=2", "task.digits=5", "task.operations=[\"*\"]", "task.answer_format=answer",
                                   "rollout.max_new_tokens=2", f"run_dir={run_dir}"])
    train(config, progress=False)
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["scrub_pii"] is True and privacy["counts"] == {} and privacy["pii_kept_in_targets"] == {}
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and "[PHONE]" not in json.dumps(samples)

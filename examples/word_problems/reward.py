"""The word problems' reward: 1.0 when the number after the last '#' is the answer, and partial
credit for a correct first step, read from the data's own `solution` column.

A reward is called with the whole batch: the prompts, the completions, and every other column of
the data as a keyword list aligned with them (``answers`` from task.answer_field; ``solution``
and ``kind`` here). The partial credit makes the reward denser than pass/fail, so GRPO sees a
difference between completions that get the first step right and those that do not; the held-out
pass rate still counts only a right final answer (eval.pass_threshold: 1.0).
"""

import re

_RESULT = re.compile(r"=(-?\d+)")


def final_answer(completion: str) -> str | None:
    head, sep, tail = completion.rpartition("#")
    return tail.strip() if sep else None


def score(prompts, completions, answers, solution, **context):
    scores = []
    for completion, answer, worked in zip(completions, answers, solution):
        if final_answer(completion) == answer:
            scores.append(1.0)
            continue
        expected, written = _RESULT.findall(worked), _RESULT.findall(completion)
        first_step_right = bool(expected) and written[:1] == expected[:1]
        scores.append(0.25 if first_step_right else 0.0)
    return scores

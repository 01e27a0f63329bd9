"""The word problems' reward: 1.0 when the number after the last '#' is the answer.

A reward is called with the whole batch: the prompts, the completions, and every other column of
the data as a keyword list aligned with them (``answers`` from task.answer_field, ``kind`` here).
"""


def final_answer(completion: str) -> str | None:
    head, sep, tail = completion.rpartition("#")
    return tail.strip() if sep else None


def score(prompts, completions, answers, kind, **context):
    # `kind` is read to show how extra columns arrive; every kind is worth the same here.
    assert len(kind) == len(completions)
    return [float(final_answer(c) == a) for c, a in zip(completions, answers)]

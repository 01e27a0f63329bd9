"""Write a small programming data set: "write f that ..." problems of six kinds, each with 5 asserts, as JSONL.

    python examples/code/generate.py --out examples/code/data --train 1600 --test 200

Each row has the columns a user's own code data would have:
  prompt    the task in words, e.g. "Write f(x) that returns x times 3 plus 1."
  answer    a reference solution ("def f(x):\\n    return x*3+1"; what the warm start imitates)
  tests     5 assert statements the unit_tests reward runs after the completion's code
  kind      which of the six templates wrote it (an extra column)
Seeded, so the same command writes the same files; a held-out prompt never appears in train.
Each kind gets a sixth of the rows and the same share held out; kinds with fewer distinct
problems than that (a sum or a maximum plus a number) get all they have, so the files hold 1225
and 152 rows. Small enough for the tiny offline model: the words name each operation and number,
so a model learns to write the code from them, but not from fifty supervised steps alone.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

Problem = tuple[str, str, list[str]]  # prompt, reference solution, tests
WORDS = {"+": "plus", "-": "minus", "*": "times"}


def _asserts(solution: str, args: list[str]) -> list[str]:
    """``assert f(ARG) == VALUE`` for each argument, VALUE computed by running the solution."""
    scope: dict[str, object] = {}
    exec(solution, scope)  # the reference solution: our own code, not a model's
    f = scope["f"]
    return [f"assert f({a}) == {f(eval(a))!r}" for a in args]  # type: ignore[operator]


def linear(r: random.Random) -> Problem:
    a, b, op = r.randint(2, 12), r.randint(1, 20), r.choice("+-")
    solution = f"def f(x):\n    return x*{a}{op}{b}"
    prompt = f"Write f(x) that returns x times {a} {WORDS[op]} {b}."
    return prompt, solution, _asserts(solution, [str(x) for x in r.sample(range(-9, 20), 5)])


def affine_first(r: random.Random) -> Problem:
    a, b, op = r.randint(1, 20), r.randint(2, 9), r.choice("+-")
    solution = f"def f(x):\n    return (x{op}{a})*{b}"
    prompt = f"Write f(x) that returns x {WORDS[op]} {a}, times {b}."
    return prompt, solution, _asserts(solution, [str(x) for x in r.sample(range(-9, 20), 5)])


def repeat(r: random.Random) -> Problem:
    a, b = r.randint(2, 9), r.randint(0, 99)
    solution = f"def f(s):\n    return s*{a}+'{b}'"
    prompt = f"Write f(s) that returns the string s repeated {a} times, then the text {b}."
    words = ["'ab'", "'x'", "'hi'", "'abc'", "'z'", "''", "'qq'"]
    return prompt, solution, _asserts(solution, r.sample(words, 5))


def total(r: random.Random) -> Problem:
    a, op = r.randint(1, 30), r.choice("+-*")
    solution = f"def f(xs):\n    return sum(xs){op}{a}"
    prompt = f"Write f(xs) that returns the sum of the list xs {WORDS[op]} {a}."
    return prompt, solution, _asserts(solution, [str(r.sample(range(0, 10), r.randint(1, 4))) for _ in range(5)])


def largest(r: random.Random) -> Problem:
    a, op = r.randint(2, 30), r.choice("+-*")
    solution = f"def f(xs):\n    return max(xs){op}{a}"
    prompt = f"Write f(xs) that returns the largest item of the list xs {WORDS[op]} {a}."
    return prompt, solution, _asserts(solution, [str(r.sample(range(0, 20), r.randint(1, 4))) for _ in range(5)])


def choose(r: random.Random) -> Problem:
    a, b, c = r.randint(0, 9), r.randint(0, 9), r.randint(0, 9)
    solution = f"def f(x):\n    return {a} if x > {b} else {c}"
    prompt = f"Write f(x) that returns {a} if x is greater than {b}, else {c}."
    args = [str(x) for x in sorted({b - 1, b, b + 1, b + 5, b - 5, 0, 10})][:5]
    return prompt, solution, _asserts(solution, args)


KINDS: dict[str, Callable[[random.Random], Problem]] = {
    "linear": linear, "affine_first": affine_first, "repeat": repeat, "total": total, "largest": largest,
    "choose": choose,
}


def generate(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Up to ``(n_train + n_test) / 6`` distinct problems of each kind (fewer where a kind has
    fewer), each kind split alike between train and test; seeded."""
    r = random.Random(seed)
    per_kind, test_share = (n_train + n_test) // len(KINDS), n_test / (n_train + n_test)
    train: list[dict] = []
    test: list[dict] = []
    for kind, make in KINDS.items():
        rows: dict[str, dict] = {}
        for _ in range(50 * per_kind):
            if len(rows) == per_kind:
                break
            prompt, solution, tests = make(r)
            rows.setdefault(prompt, {"prompt": prompt + "\n", "answer": solution, "tests": tests, "kind": kind})
        held = round(len(rows) * test_share)
        test += list(rows.values())[:held]
        train += list(rows.values())[held:]
    r.shuffle(train)
    r.shuffle(test)
    return train, test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/code/data", help="Folder for train.jsonl and test.jsonl.")
    p.add_argument("--train", type=int, default=1600, help="Training problems.")
    p.add_argument("--test", type=int, default=200, help="Held-out problems.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    train, test = generate(args.train, args.test, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (out / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(train)} training and {len(test)} held-out problems to {out}/")


if __name__ == "__main__":
    main()

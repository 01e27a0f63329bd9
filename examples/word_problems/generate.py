"""Write a word-problems data set: templated two-step problems of five kinds, as JSONL.

    python examples/word_problems/generate.py --out examples/word_problems/data --train 4000 --test 300

Each row has the columns a user's own data would have:
  prompt    the problem in words
  answer    the number it asks for (what a reward checks)
  solution  the worked steps and the answer after '#' ("4*3=12 12+5=17 #17"; the warm start's target)
  kind      which of the five templates wrote it (an extra column: rewards receive it as `kind=[...]`)
Seeded, so the same command writes the same files; a test prompt never appears in train.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Leo", "Mia", "Noor", "Omar", "Pia"]
ITEMS = ["apples", "pens", "books", "cards", "eggs", "cups", "shells", "stamps"]


def shopping(r: random.Random) -> tuple[str, str, int]:
    name, item, n, price, extra = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 5), r.randint(2, 5), r.randint(1, 9)
    total = n * price + extra
    text = f"{name} buys {n} {item} at {price} dollars each and pays {extra} dollars for a bag. How many dollars does {name} spend?"
    return text, f"{n}*{price}={n * price} {n * price}+{extra}={total} #{total}", total


def sharing(r: random.Random) -> tuple[str, str, int]:
    name, item, friends, each = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 5), r.randint(2, 5)
    given = friends * each
    start = given + r.randint(1, 9)
    text = f"{name} has {start} {item} and gives {each} to each of {friends} friends. How many {item} are left?"
    return text, f"{friends}*{each}={given} {start}-{given}={start - given} #{start - given}", start - given


def ages(r: random.Random) -> tuple[str, str, int]:
    name, age, older, years = r.choice(NAMES), r.randint(3, 9), r.randint(2, 9), r.randint(2, 9)
    brother = age + older
    text = f"{name} is {age} years old. {name}'s brother is {older} years older. How old will the brother be in {years} years?"
    return text, f"{age}+{older}={brother} {brother}+{years}={brother + years} #{brother + years}", brother + years


def travel(r: random.Random) -> tuple[str, str, int]:
    speed, hours, more = r.randint(2, 5), r.randint(2, 5), r.randint(1, 9)
    far = speed * hours
    text = f"A bus drives {speed} km each hour for {hours} hours and then {more} km more. How many km does it drive?"
    return text, f"{speed}*{hours}={far} {far}+{more}={far + more} #{far + more}", far + more


def savings(r: random.Random) -> tuple[str, str, int]:
    name, weekly, weeks = r.choice(NAMES), r.randint(2, 5), r.randint(2, 5)
    saved = weekly * weeks
    spent = r.randint(1, min(9, saved - 1))
    text = f"{name} saves {weekly} dollars a week for {weeks} weeks and then spends {spent} dollars. How many dollars are left?"
    return text, f"{weekly}*{weeks}={saved} {saved}-{spent}={saved - spent} #{saved - spent}", saved - spent


KINDS = {"shopping": shopping, "sharing": sharing, "ages": ages, "travel": travel, "savings": savings}


def generate(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    r = random.Random(seed)
    rows: dict[str, dict] = {}
    while len(rows) < n_train + n_test:
        kind = r.choice(list(KINDS))
        prompt, solution, answer = KINDS[kind](r)
        rows.setdefault(prompt, {"prompt": prompt, "answer": str(answer), "solution": solution, "kind": kind})
    unique = list(rows.values())
    return unique[n_test:], unique[:n_test]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/word_problems/data", help="Folder for train.jsonl and test.jsonl.")
    p.add_argument("--train", type=int, default=4000, help="Training problems.")
    p.add_argument("--test", type=int, default=300, help="Held-out problems.")
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

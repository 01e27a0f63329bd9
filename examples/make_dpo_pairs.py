"""Write examples/data/arithmetic_pairs.jsonl: preference pairs for examples/dpo.yaml.

Each pair is an addition problem of the arithmetic task's training split with the correct answer
as ``chosen`` and a typical mistake as ``rejected`` (off by one, a dropped carry, or two digits
swapped), so DPO has something to learn that the held-out accuracy can show.

    python examples/make_dpo_pairs.py [--n 2000] [--out examples/data/arithmetic_pairs.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rlft.tasks import ArithmeticTask


def mistake(a: int, b: int, gen: torch.Generator) -> str:
    """A wrong answer to a + b of a kind a small model makes."""
    right = a + b
    kind = int(torch.randint(0, 3, (1,), generator=gen))
    if kind == 0:
        wrong = right + (1 if int(torch.randint(0, 2, (1,), generator=gen)) else -1)
    elif kind == 1:  # the carry out of the units column is dropped (or added where there is none)
        wrong = right - 10 if (a % 10 + b % 10) >= 10 else right + 10
    else:
        digits = str(right)
        wrong = int(digits[::-1]) if len(digits) > 1 and digits != digits[::-1] else right + 2
    return str(abs(wrong)) if wrong != right else str(right + 1)


def make_pairs(n: int, seed: int = 0, digits: int = 2) -> list[dict[str, str]]:
    task = ArithmeticTask(digits=digits, operations=["+"])
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for problem in task.train_problems(n, gen):
        a, b = (int(x) for x in problem.prompt.rstrip("=").split("+"))
        pairs.append({"prompt": problem.prompt, "chosen": problem.answer, "rejected": mistake(a, b, gen)})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "data" / "arithmetic_pairs.jsonl"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(args.n, args.seed)))
    print(f"wrote {args.n} pairs to {out}")


if __name__ == "__main__":
    main()

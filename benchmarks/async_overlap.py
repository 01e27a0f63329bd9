"""Asynchronous rollouts against the synchronous loop, in one run (docs/performance.md).

Usage (repository root)::

    .venv/bin/python benchmarks/async_overlap.py                 # 3 seeds, 40 steps (about 10 min on 2 cores)
    .venv/bin/python benchmarks/async_overlap.py --seeds 0 --steps 10 --cases slow_reward   # a first look

Cases, each for ``rollout.async.max_staleness`` 0 (the synchronous loop), 1 and 2:

(a) ``slow_reward``: the demo task (arithmetic, the tiny model warm-started as ``rlft demo`` does)
    with batches of 64, scored by the task's exact-match reward after a fixed 0.3 s wait per batch,
    as a remote judge answers; every run starts from one warm-started base (the demo's warm start,
    done once) and sees the same number of samples. Figures: ``steps_per_s`` (steps over the summed step times),
    ``learner_idle_fraction`` (the share of the step the learner waits for samples: the sampling
    and reward time of the synchronous step, the queue wait of an asynchronous one) and held-out
    accuracy after the last step (256 problems, greedy);
(b) ``ray``: the same without the wait, sampled by 2 Ray rollout workers (when ray imports);
(c) ``code``: the code task's sandboxed unit tests (examples/code), when that task exists here.

(b) and (c) measure speed on the first seed only. The last line is one JSON object: per case and
staleness the figures (means over seeds), ``speedup_slow_reward`` (steps/s at max_staleness 1
over 0, case a), ``accuracy_gap_points`` (held-out accuracy at 1 minus at 0, mean of the seeds, in
points) and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 0.3
STALENESS = (0, 1, 2)


def slow_judge(task: Any):  # noqa: ANN201
    """The task's own exact-match reward after a fixed wait per batch (a remote judge)."""

    def judge(prompts: list[str], completions: list[str], problems: list[Any], **context: Any) -> list[float]:  # noqa: ARG001
        time.sleep(WAIT_S)
        return task.reward(completions, problems)

    return judge


def figures(run: Path, summary: dict[str, Any]) -> dict[str, float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step_s = sum(m["perf/step_seconds"] for m in lines)
    if "async/learner_idle_s" in lines[0]:
        idle = sum(m["async/learner_idle_s"] for m in lines)
    else:  # the synchronous learner cannot train while it samples and rewards
        idle = sum(m["perf/rollout_seconds"] for m in lines)
    return {"steps_per_s": round(len(lines) / step_s, 4), "learner_idle_fraction": round(idle / step_s, 4),
            "accuracy": summary.get("final_accuracy"), "pass_rate": summary.get("final_pass_rate"), "staleness_mean": round(statistics.mean(
                m.get("async/staleness_mean", 0.0) for m in lines), 3)}


CODE_RECIPE = ROOT / "examples" / "code" / "recipe.yaml"


def recipe_of(case: str) -> Path | None:
    """The recipe a case trains: the code task's for ``code``, else the embedded demo recipe."""
    return CODE_RECIPE if case == "code" else None


def warm_started_base(out: Path, case: str, extra: list[str]) -> Path:
    """The case's warm start, once (``train.steps=0``): every run of the case starts from this base."""
    from rlft.config import load_config
    from rlft.trainers.registry import train

    run = out / f"base_{'code' if case == 'code' else 'demo'}"
    if not (run / "base_model").exists():
        overrides = [f"run_dir={run}", "train.steps=0", "train.torch_threads=2", *extra]
        train(load_config(recipe_of(case), overrides), progress=False)
    return run / "base_model"


def run_case(case: str, seed: int, staleness: int, steps: int, out: Path, base: Path, extra: list[str]) -> dict[str, float]:
    from rlft.config import load_config
    from rlft.tasks import ArithmeticTask
    from rlft.trainers.registry import train

    run = out / f"{case}_seed{seed}_k{staleness}"
    shutil.rmtree(run, ignore_errors=True)
    overrides = [f"seed={seed}", f"run_dir={run}", "train.batch_size=64", f"train.steps={steps}",
                 f"eval.every={steps}", "checkpoint.every=1000", "rollout.async.enabled=true",
                 f"rollout.async.max_staleness={staleness}", "train.torch_threads=2",
                 f"model.path={base}", "warm_start.steps=0", *extra]  # every run starts from one warm-started base
    reward = None
    if case == "slow_reward":
        config = load_config(None, overrides)
        reward = slow_judge(ArithmeticTask(digits=config.task.digits, operations=config.task.operations,
                                           answer_format=config.task.answer_format))
    elif case == "ray":
        overrides += ["distributed.engine=ray", "distributed.rollout_workers=2"]
    config = load_config(recipe_of(case), overrides)
    summary = train(config, progress=False, **({"reward": reward} if reward else {}))
    return {**figures(run, summary), "run": str(run)}


def mean_over(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    return {k: round(statistics.mean(r[k] for r in rows), 4) for k in keys} | {"seeds": len(rows)}


def skipped_case(case: str) -> str | None:
    if case == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            return "ray does not import here (pip install 'rlft[scale]')"
    if case == "code" and not CODE_RECIPE.is_file():
        return "no code task in this checkout (examples/code/recipe.yaml)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cases", default="slow_reward,ray,code")
    parser.add_argument("--out", default="runs/async_overlap", help="parent folder of the runs (replaced)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides (every run)")
    args = parser.parse_args()

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    report: dict[str, Any] = {"wait_s": WAIT_S, "steps": args.steps, "seeds": args.seeds, "skipped": {}}
    for case in args.cases.split(","):
        reason = skipped_case(case)
        if reason:
            report["skipped"][case] = reason
            continue
        base = warm_started_base(out, case, args.set)
        seeds = args.seeds if case == "slow_reward" else args.seeds[:1]
        per: dict[int, list[dict[str, Any]]] = {k: [] for k in STALENESS}
        for seed in seeds:
            for k in STALENESS:
                result = run_case(case, seed, k, args.steps, out, base, args.set)
                per[k].append(result)
                print(f"[{case} seed {seed} max_staleness {k}] {json.dumps(result)}", flush=True)
        report[case] = {str(k): mean_over(rows) for k, rows in per.items()}
    slow = report.get("slow_reward")
    if slow:
        report["speedup_slow_reward"] = round(slow["1"]["steps_per_s"] / slow["0"]["steps_per_s"], 3)
        report["accuracy_gap_points"] = round(100 * (slow["1"]["accuracy"] - slow["0"]["accuracy"]), 2)
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

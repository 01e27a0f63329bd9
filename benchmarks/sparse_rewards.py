"""Sparse rewards on the multistep task: outcome-only GRPO against a curriculum, a process reward
model's dense rewards, and both, at the same budget of sampled tokens, 3 seeds.

Run by hand (not in CI; about 15 minutes on 2 CPU cores, docs/sparse_rewards.md has the figures):

    .venv/bin/python benchmarks/sparse_rewards.py
    .venv/bin/python benchmarks/sparse_rewards.py --seeds 0 --steps 4 --out /tmp/sparse   # a smoke run

What runs, in order (every stage through the commands' own Python API, as `rlft train`,
`rlft prm label` and `rlft prm train` run it):

1. the base: the tiny model warm-started on the worked solutions of examples/multistep/recipe.yaml
   (once, seed 0; every variant and seed starts from it, so the comparison is of the RL stage);
2. step labels: `rlft prm label` with the base as the policy, Math-Shepherd rollouts from every step
   prefix of its own solutions to training prompts (their sampled tokens are counted apart);
3. the PRM: `rlft prm train` from the base's own weights, with a held-out step AUC;
4. RL, per variant and seed, all with the same steps, batch, group size and max_new_tokens (so the
   same budget of sampled completions; the tokens each actually sampled are in the output):
   outcome   GRPO on the task's 0/1 outcome, prompts drawn uniformly;
   curriculum  the same with task.sampler: curriculum;
   prm       PPO (GAE, a value head) on the PRM's dense rewards: weight x the PRM's score of each step
             at its end, the outcome at the end (reward: {type: process_model});
   prm_curriculum  both.

The last line printed is one JSON object: for each variant ``V`` ``V_pass_rate_mean`` (held-out
pass rate after RL, mean of the seeds) and ``V_pass_rates`` (per seed), ``V_zero_signal_group_fraction``
(mean over steps of the groups whose training rewards were all equal),
``V_all_fail_or_pass_group_fraction`` (groups whose completions all failed or all passed the
outcome), ``V_sampled_tokens`` (mean per run); ``base_pass_rate``, ``prm_step_auc``,
``prm_label_sampled_tokens``, ``best_lift_points`` (best new variant minus outcome, in points) and
the seconds of each stage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "multistep" / "recipe.yaml"

# The RL stage of every variant: the same budget (steps x batch_size completions of at most
# max_new_tokens tokens), one held-out evaluation before and after.
RL = ["warm_start.steps=0", "train.batch_size=64", "algorithm.group_size=8", "train.torch_threads=1"]
VARIANTS: dict[str, list[str]] = {
    "outcome": ["algorithm.name=grpo"],
    "curriculum": ["algorithm.name=grpo", "task.sampler=curriculum"],
    "prm": ["algorithm.name=ppo"],
    "prm_curriculum": ["algorithm.name=ppo", "task.sampler=curriculum"],
    # Not in the default set: GRPO on the PRM's sequence score (outcome + weight x min step score),
    # with the group std scaling (which turns the PRM's small differences into full-size
    # advantages) and without it.
    "grpo_prm": ["algorithm.name=grpo"],
    "grpo_prm_unscaled": ["algorithm.name=grpo", "algorithm.scale_rewards=false"],
}
DEFAULT_VARIANTS = ["outcome", "curriculum", "prm", "prm_curriculum"]
PRM_REWARD = {"type": "process_model", "combine": "min", "weight": 0.5}


def run_metrics(run: Path) -> dict[str, float]:
    """Per-run figures from metrics.jsonl: sampled tokens and the means of the group counts."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    batch = yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"]
    return {
        "sampled_tokens": sum(r["completions/mean_length"] * batch for r in rows),
        "zero_signal": statistics.mean(r["curriculum/zero_signal_fraction"] for r in rows),
        "all_fail_or_pass": statistics.mean(r["curriculum/solved_none_fraction"] + r["curriculum/solved_all_fraction"]
                                            for r in rows),
    }


def build_prm(out: Path, base: Path, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Step labels from the base's rollouts, then the PRM trained from the base's weights."""
    from rlft.config.process_reward import prm_recipe_from_dict
    from rlft.trainers.prm_labels import label_steps
    from rlft.trainers.process_reward import train_process_reward_model

    recipe = prm_recipe_from_dict({
        "train_data": str(out / "labels.jsonl"), "output_dir": str(out / "prm"), "model_path": str(base / "base_model"),
        "label": {"recipe": str(RECIPE), "policy": str(base), "prompts": args.label_prompts, "solutions": 2,
                  "rollouts": 4},
        "learning_rate": 3e-4, "epochs": 3, "batch_size": 16, "eval_fraction": 0.15, "torch_threads": 2,
    }, args.set)
    labelled = label_steps(recipe)
    summary = train_process_reward_model(recipe, progress=False)
    (out / "prm" / "label_summary.json").write_text(json.dumps(labelled))
    return labelled, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # 100 steps x 8 prompts visit the 256 training prompts about three times: the curriculum draws by
    # pass rate after its first 32 steps (until then it draws the prompts it has not seen).
    parser.add_argument("--steps", type=int, default=100, help="RL steps of every run (the budget).")
    parser.add_argument("--label-prompts", type=int, default=128, help="Prompts `rlft prm label` writes solutions for.")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Overrides of every RL run.")
    parser.add_argument("--out", default="runs/bench-sparse", help="Parent folder of the runs (replaced).")
    parser.add_argument("--base", help="Reuse this run folder's base_model/ (a previous --out's base) instead of "
                                       "warm-starting one.")
    parser.add_argument("--prm", help="Reuse this PRM folder (a previous --out's prm) instead of labelling and "
                                      "training one (it must come from the same base).")
    args = parser.parse_args()

    from transformers.utils import logging

    from rlft.config import load_config
    from rlft.trainers.registry import train

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    seconds: dict[str, float] = {}
    started = time.time()
    base = Path(args.base) if args.base else out / "base"
    if not args.base:
        train(load_config(RECIPE, ["train.steps=0", f"run_dir={base}"]), progress=False)
    base_pass = json.loads((base / "base_eval.json").read_text())["eval/accuracy"]
    seconds["base"] = time.time() - started
    print(f"base: held-out pass rate {base_pass:.1%} ({seconds['base']:.0f} s)", flush=True)
    result: dict[str, Any] = {"base_pass_rate": base_pass}
    prm_dir = Path(args.prm) if args.prm else out / "prm"
    if any("prm" in v for v in args.variants):
        mark = time.time()
        if args.prm:
            labelled = json.loads((prm_dir / "label_summary.json").read_text())
            prm = json.loads((prm_dir / "summary.json").read_text())
        else:
            labelled, prm = build_prm(out, base, args)
        seconds["prm_label_and_train"] = time.time() - mark
        result.update(prm_step_auc=prm["step_auc"], prm_step_accuracy=prm["step_accuracy"],
                      prm_label_sampled_tokens=labelled["sampled_tokens"], prm_label_steps=labelled["steps"],
                      prm_label_positive_fraction=labelled["positive_fraction"])
        print(f"PRM: {labelled['steps']} labelled steps, held-out step AUC {prm['step_auc']} "
              f"({seconds['prm_label_and_train']:.0f} s)", flush=True)
    reward = json.dumps({**PRM_REWARD, "path": str(prm_dir)})
    for variant in args.variants:
        mark, finals, figures = time.time(), [], []
        for seed in args.seeds:
            run = out / f"{variant}-seed{seed}"
            overrides = [*RL, f"train.steps={args.steps}", f"eval.every={args.steps}", f"model.path={base / 'base_model'}",
                         *VARIANTS[variant], *([f"reward={reward}"] if "prm" in variant else []), *args.set,
                         f"seed={seed}", f"run_dir={run}"]
            summary = train(load_config(RECIPE, overrides), progress=False)
            finals.append(summary["final_accuracy"])
            figures.append(run_metrics(run))
            print(f"{variant} seed {seed}: held-out pass rate {summary['base_accuracy']:.1%} -> "
                  f"{summary['final_accuracy']:.1%} ({summary['seconds']:.0f} s)", flush=True)
        seconds[variant] = time.time() - mark
        result[f"{variant}_pass_rate_mean"] = statistics.mean(finals)
        result[f"{variant}_pass_rates"] = finals
        for key, name in (("zero_signal", "zero_signal_group_fraction"), ("all_fail_or_pass", "all_fail_or_pass_group_fraction"),
                          ("sampled_tokens", "sampled_tokens")):
            result[f"{variant}_{name}"] = statistics.mean(f[key] for f in figures)
    new = [result[f"{v}_pass_rate_mean"] for v in args.variants if v != "outcome"]
    if "outcome" in args.variants and new:
        result["best_lift_points"] = 100 * (max(new) - result["outcome_pass_rate_mean"])
    result.update(seeds=args.seeds, rl_steps=args.steps, overrides=args.set,
                  seconds={k: round(v, 1) for k, v in seconds.items()}, seconds_total=round(time.time() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

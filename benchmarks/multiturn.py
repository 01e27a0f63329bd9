"""Multi-turn benchmark (run by hand, not in CI): the guess-the-number dialogue.

Builds the tiny model, warm-starts it on scripted successful dialogues, then from that same base
trains GRPO-or-PPO over whole dialogues, ILQL offline on the base's own logged episodes, and the
hierarchical actor-critic (ArCHer-style), each with the same number of environment episodes.
Each method is one `rlft agent` run (rlft.trainers.registry.train_agent) in OUT/METHOD, started
from the base warm-started once in OUT/base (``base_model``); ILQL trains on ``episodes`` episodes
the base logged with generators seeded 7 and 8 (``ilql.data``). Prints held-out success (sampled,
``eval_samples`` per held-out episode spec) and writes docs/multiturn_curves.png. Last line: one
JSON object.

    .venv/bin/python benchmarks/multiturn.py [--out runs/bench_multiturn] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import torch


def warm_started_base(config, out: Path) -> tuple[Path, Path]:  # noqa: ANN001
    """(the base every method starts from, ``config.episodes`` episodes it logged as ILQL's data)."""
    from rlft.common.run_folder import RunFolder
    from rlft.rollout.episodes import write_episodes
    from rlft.trainers.agent import make_family, play, prepare_agent

    family, folder = make_family(config), RunFolder(out / "base")
    folder.root.mkdir(parents=True, exist_ok=True)
    base, tokenizer = prepare_agent(config, family, folder)
    envs = [copy.deepcopy(e) for e in family.train_envs(config.episodes, torch.Generator().manual_seed(7))]
    _, logged = play(base, tokenizer, envs, config, torch.Generator().manual_seed(8))
    print(f"ilql: {len(logged)} logged episodes, logged success {sum(e.success for e in logged) / len(logged):.3f}")
    path = out / "ilql_logged_episodes.jsonl"
    write_episodes(path, [e for e in logged if e.error is None])
    return folder.base_model, path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[], help="AgentConfig overrides, e.g. episodes=512")
    parser.add_argument("--methods", nargs="+", default=["grpo", "ppo", "ilql", "archer"],
                        choices=["grpo", "ppo", "ilql", "archer"], help="Methods to train from the base.")
    parser.add_argument("--out", default="runs/bench_multiturn", help="Folder of the runs (replaced).")
    parser.add_argument("--png", default="docs/multiturn_curves.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging

    logging.disable_progress_bar()
    from rlft.config.agent import load_agent_config
    from rlft.trainers.registry import train_agent

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    config = load_agent_config(None, args.set)
    started = time.time()
    base_model, logged = warm_started_base(config, out)
    extra = {"ilql": [f"ilql.data={logged}"]}
    results, curves, base_success = {}, {}, float("nan")
    for name in args.methods:
        run = out / name

        def on_step(m: dict, name: str = name) -> None:
            if "eval/success" in m:
                print(f"  {name} episodes={m.get('episodes', '-')} success={m['eval/success']:.3f} "
                      f"({time.time() - started:.0f}s)", flush=True)

        summary = train_agent(load_agent_config(None, [*args.set, f"algorithm={name}", f"run_dir={run}",
                                                       f"base_model={base_model}", *extra.get(name, [])]),
                              progress=False, on_step=on_step)
        base_success, results[name] = summary["base_success"], summary["final_success"]
        # ILQL's steps play no episode: its one point is at the budget it logged.
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [(0, base_success)] + [(m.get("episodes", config.episodes), m["eval/success"])
                                              for m in steps if "eval/success" in m]

    for name, value in results.items():
        print(f"{name:8s} held-out success {value:.3f}  (base {base_success:.3f})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, points in curves.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name)
        ax.axhline(base_success, color="grey", ls="--", label="base")
        ax.set_xlabel("environment episodes")
        ax.set_ylabel("held-out success")
        ax.set_title("guess-the-number dialogue")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
    except ImportError:
        print("matplotlib is not installed; no PNG written")
    print(f"total {time.time() - started:.0f}s")
    from rlft.trainers.agent import make_family

    print(json.dumps({"base_success": base_success, "episodes": config.episodes,
                      "eval_episodes": len(make_family(config).eval_envs()) * config.eval_samples,
                      "methods": {k: {"success": v, "curve": curves[k]} for k, v in results.items()}}))


if __name__ == "__main__":
    main()

"""Multi-turn benchmark (run by hand, not in CI): the guess-the-number dialogue.

Builds the tiny model, warm-starts it on scripted successful dialogues, then from that same base
trains GRPO-or-PPO over whole dialogues, ILQL offline on the base's own logged episodes, and the
hierarchical actor-critic (ArCHer-style), each with the same number of environment episodes.
Prints held-out success (sampled, ``eval_samples`` per held-out episode spec) and writes
docs/multiturn_curves.png. Last line: one JSON object.

    .venv/bin/python benchmarks/multiturn.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[], help="AgentConfig overrides, e.g. episodes=512")
    parser.add_argument("--methods", nargs="+", default=["grpo", "ppo", "ilql", "archer"],
                        choices=["grpo", "ppo", "ilql", "archer"], help="Methods to train from the base.")
    parser.add_argument("--png", default="docs/multiturn_curves.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging

    logging.disable_progress_bar()
    from rlft.trainers.agent import (
        evaluate_agent,
        make_family,
        play,
        train_policy_gradient,
        warm_started_agent,
    )
    from rlft.config.agent import load_agent_config
    from rlft.trainers.archer import train_archer
    from rlft.trainers.ilql import ILQLPolicy, train_ilql

    config = load_agent_config(None, args.set)
    family = make_family(config)
    started = time.time()
    base, tokenizer = warm_started_agent(config, family)
    base_success = evaluate_agent(base, tokenizer, family, config).success
    print(f"base: held-out success {base_success:.3f}  ({time.time() - started:.0f}s)", flush=True)
    curves: dict[str, list[tuple[int, float]]] = {}
    every = config.eval_every

    def tracker(name: str, policy_of):  # noqa: ANN001, ANN202
        curves[name] = [(0, base_success)]

        def on_iteration(m: dict) -> None:  # noqa: ANN001
            if m["iteration"] % every == 0:
                curves[name].append((m["episodes"], evaluate_agent(policy_of(), tokenizer, family, config).success))
                print(f"  {name} episodes={m['episodes']} success={curves[name][-1][1]:.3f} "
                      f"train_success={m['train/success']:.2f} ({time.time() - started:.0f}s)", flush=True)
        return on_iteration

    results = {}
    for name in [m for m in args.methods if m in ("grpo", "ppo")]:  # on-policy, over whole dialogues
        pg_config = load_agent_config(None, args.set + [f"algorithm={name}"])
        policy = copy.deepcopy(base)
        train_policy_gradient(pg_config, policy, tokenizer, family, tracker(name, lambda p=policy: p))
        results[name] = evaluate_agent(policy, tokenizer, family, config).success

    if "ilql" in args.methods:  # offline: log `episodes` episodes of the base, then train on them
        envs = [copy.deepcopy(e) for e in family.train_envs(config.episodes, torch.Generator().manual_seed(7))]
        _, logged = play(base, tokenizer, envs, config, torch.Generator().manual_seed(8))
        records = [{"segments": e.segments, "rewards": e.rewards} for e in logged if e.error is None]
        print(f"ilql: {len(records)} logged episodes, logged success {sum(e.success for e in logged) / len(logged):.3f}")
        ilql_model = copy.deepcopy(base)
        heads = train_ilql(ilql_model, tokenizer, records, config.ilql, config.seed, lambda m: None)
        results["ilql"] = evaluate_agent(ILQLPolicy(ilql_model, heads, config.ilql.decode_beta), tokenizer, family,
                                         config).success  # fmt: skip
        curves["ilql"] = [(0, base_success), (config.episodes, results["ilql"])]
        print(f"  ilql success={results['ilql']:.3f} ({time.time() - started:.0f}s)", flush=True)

    if "archer" in args.methods:
        archer_policy = copy.deepcopy(base)
        archer_config = load_agent_config(None, args.set + ["algorithm=archer"])
        train_archer(archer_config, archer_policy, tokenizer, family, tracker("archer", lambda: archer_policy))
        results["archer"] = evaluate_agent(archer_policy, tokenizer, family, config).success

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
    print(json.dumps({"base_success": base_success, "episodes": config.episodes,
                      "eval_episodes": len(family.eval_envs()) * config.eval_samples,
                      "methods": {k: {"success": v, "curve": curves[k]} for k, v in results.items()}}))


if __name__ == "__main__":
    main()

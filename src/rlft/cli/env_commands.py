"""``rlft agent``: multi-turn agents (grpo, ppo, ilql, archer) on the shipped environments."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser(
        "agent",
        help="Train a multi-turn agent (grpo, ppo, ilql, archer) on a dialogue or tool-use environment.",
        description=(
            "Build the tiny model, warm-start it on scripted successful episodes, train it with the "
            "recipe's algorithm (algorithm: grpo | ppo | ilql | archer) and print held-out success "
            "before and after. ilql trains offline on ilql.data (JSONL) or, when empty, on episodes "
            "logged from the warm-started base. The run folder is a run like `rlft train`'s: "
            "checkpoints, audit log, summary.json; --resume continues a killed run. See docs/multiturn.md."
        ),
    )
    agent.add_argument("recipe", nargs="?", help="YAML agent recipe (default: the embedded one).")
    agent.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a field, e.g. --set algorithm=archer --set episodes=512.")
    agent.add_argument("--resume", action="store_true",
                       help="Continue the run in run_dir from its newest intact checkpoint (same recipe; "
                            "episodes may grow).")
    agent.add_argument("--log-episodes", metavar="PATH",
                       help="ilql: also copy the base's logged episodes (RUN/logged_episodes.jsonl) to PATH.")
    agent.add_argument("--no-progress", action="store_true", help="No progress bar.")
    agent.set_defaults(run=_run_agent)


def _run_agent(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from rlft.cli.train_commands import resumed_plugins
    from rlft.config.agent import AgentConfig, agent_config_from_dict
    from rlft.schema import read_recipe_yaml
    from rlft.trainers.registry import train_agent

    data = read_recipe_yaml(args.recipe) if args.recipe else {}
    plugins = resumed_plugins(data, args.set, AgentConfig.run_dir) if args.resume else []
    config = agent_config_from_dict(data, args.set, plugins + args.plugin)

    summary = train_agent(config, resume=args.resume, progress=not args.no_progress)
    logged = Path(config.run_dir) / "logged_episodes.jsonl"
    if args.log_episodes and logged.exists():
        shutil.copyfile(logged, args.log_episodes)
    print(f"base: held-out success {summary['base_success']:.3f}, mean return {summary['base_mean_return']:.3f}")
    print(f"{config.algorithm}: held-out success {summary['final_success']:.3f} (base {summary['base_success']:.3f}); "
          f"run folder {config.run_dir}")
    return 0

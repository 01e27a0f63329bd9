"""``rlft agent``: multi-turn agents (grpo, ppo, ilql, archer) on the shipped environments."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser(
        "agent",
        help="Train a multi-turn agent (grpo, ppo, ilql, archer) on a dialogue or tool-use environment.",
        description=(
            "Build the tiny model, warm-start it on scripted successful episodes, train it with the "
            "recipe's algorithm (algorithm: grpo | ppo | ilql | archer) and print held-out success "
            "before and after. ilql trains offline on ilql.data (JSONL) or, when empty, on episodes "
            "logged from the warm-started base. See docs/multiturn.md."
        ),
    )
    agent.add_argument("recipe", nargs="?", help="YAML agent recipe (default: the embedded one).")
    agent.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a field, e.g. --set algorithm=archer --set episodes=512.")
    agent.add_argument("--log-episodes", metavar="PATH", help="Also write the base's logged episodes as JSONL.")
    agent.set_defaults(run=_run_agent)


def _run_agent(args: argparse.Namespace) -> int:
    import copy
    from pathlib import Path

    import torch

    from rlft.trainers.agent import (
        evaluate_agent,
        make_family,
        play,
        train_policy_gradient,
        warm_started_agent,
    )
    from rlft.config.agent import agent_config_to_dict, load_agent_config

    config = load_agent_config(args.recipe, args.set)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    run = Path(config.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(agent_config_to_dict(config), indent=2))
    family = make_family(config)
    policy, tokenizer = warm_started_agent(config, family)
    base = evaluate_agent(policy, tokenizer, family, config)
    print(f"base: held-out success {base.success:.3f}, mean return {base.mean_return:.3f}")
    metrics = (run / "metrics.jsonl").open("w")

    def log(m: dict) -> None:  # noqa: ANN001
        metrics.write(json.dumps(m) + "\n")
        metrics.flush()

    acting: torch.nn.Module = policy
    if config.algorithm in ("grpo", "ppo"):
        train_policy_gradient(config, policy, tokenizer, family, log)
    elif config.algorithm == "archer":
        from rlft.trainers.archer import train_archer

        train_archer(config, policy, tokenizer, family, log)
    else:
        from rlft.trainers.ilql import ILQLPolicy, read_episodes, train_ilql, write_episodes

        if config.ilql.data:
            records = read_episodes(config.ilql.data)
        else:
            envs = [copy.deepcopy(e) for e in family.train_envs(config.episodes, torch.Generator().manual_seed(config.seed))]
            _, logged = play(policy, tokenizer, envs, config, torch.Generator().manual_seed(config.seed + 1))
            logged = [e for e in logged if e.error is None]
            write_episodes(Path(args.log_episodes or run / "logged_episodes.jsonl"), logged)
            records = [{"segments": e.segments, "rewards": e.rewards} for e in logged]
        heads = train_ilql(policy, tokenizer, records, config.ilql, config.seed, log)
        acting = ILQLPolicy(policy, heads, config.ilql.decode_beta)
        torch.save(heads.state_dict(), run / "ilql_heads.pt")
    metrics.close()
    after = evaluate_agent(acting, tokenizer, family, config)
    policy.save_pretrained(run / "final_model")
    tokenizer.save_pretrained(run / "final_model")
    summary = {"algorithm": config.algorithm, "base_success": base.success, "final_success": after.success,
               "episodes": config.episodes, "run_dir": str(run)}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{config.algorithm}: held-out success {after.success:.3f} (base {base.success:.3f}); run folder {run}")
    return 0

"""``rlft demo``, ``rlft train``, ``rlft eval`` and ``rlft sample``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="The main job: build a tiny model offline, warm-start it, train it with GRPO.",
        description=(
            "Run the embedded default recipe: build a small Qwen2-architecture model and tokenizer "
            "offline, give it a short supervised warm start on arithmetic, train it with GRPO, and "
            "print held-out accuracy before and after RL. About 10 minutes on 2 CPU cores."
        ),
    )
    _common_train_args(demo)
    demo.set_defaults(run=_run_demo)

    train = sub.add_parser(
        "train",
        help="Train with a recipe, or on your own data in one line.",
        description=(
            "Train with a YAML recipe, or with none: `rlft train --data train.jsonl --reward "
            "my_reward.py:score [--model PATH_OR_ID] [--algorithm grpo]`. Flags map onto recipe "
            "fields (and win over the recipe file); --set wins over both, but --run-dir wins over "
            "--set run_dir=... docs/datasets.md"
        ),
    )
    train.add_argument("recipe", nargs="?", help="Path of a YAML recipe (see examples/ and docs/recipes.md); optional with --data.")
    data = train.add_argument_group("one-line training (no recipe file needed)")
    data.add_argument("--model", help="model.path: a Hugging Face model folder or hub id (default: build the tiny model offline).")
    data.add_argument("--data", help="task.data: a .jsonl/.json/.csv/.parquet file, a saved dataset folder or a hub id; sets task.name=dataset.")
    data.add_argument("--eval-data", help="task.eval_data: held-out data (default: hold out task.eval_fraction of --data).")
    data.add_argument("--reward", help="The reward: a built-in type (exact_match, numeric, math_verify, ...) or FILE.py:FUNCTION / module:function.")
    data.add_argument("--algorithm", help="algorithm.name, e.g. grpo, rloo, ppo (docs/algorithms.md).")
    data.add_argument("--prompt-field", help="task.prompt_field (default 'prompt').")
    data.add_argument("--answer-field", help="task.answer_field (default 'answer'; 'null' for none).")
    _common_train_args(train)
    train.set_defaults(run=_run_train)

    ev = sub.add_parser(
        "eval",
        help="Held-out metrics of a run or a model folder.",
        description=(
            "Decode held-out prompts and score them: a run folder is evaluated on its own held-out "
            "split with its own reward (or on --data FILE); a model folder on the arithmetic task."
        ),
    )
    ev.add_argument("target", help="A run folder (uses final_model/) or a Hugging Face model folder.")
    ev.add_argument("--data", help="Evaluate on this file (any format task.data takes) instead of the run's held-out split.")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Recipe overrides, e.g. --set task.digits=3 or --set eval.samples=4.")
    ev.add_argument("--json", action="store_true", help="Print the result as JSON.")
    ev.set_defaults(run=_run_eval)

    sm = sub.add_parser("sample", help="Sample completions of a prompt.", description="Sample completions of a prompt.")
    sm.add_argument("target", help="A run folder or a Hugging Face model folder.")
    sm.add_argument("prompt", help="The prompt text, e.g. '12+34='.")
    sm.add_argument("-n", type=int, default=1, help="Number of completions (default 1).")
    sm.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default).")
    sm.add_argument("--max-new-tokens", type=int, default=32)
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(run=_run_sample)


def _common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a recipe field, e.g. --set train.steps=50 (repeatable).")
    p.add_argument("--resume", action="store_true", help="Continue the run in run_dir from its last checkpoint.")
    p.add_argument("--run-dir", help="Folder of the run (run_dir; wins over --set run_dir=...).")
    p.add_argument("--no-progress", action="store_true", help="No progress bars (for logs).")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="Train on N processes of this machine: runs the same command under torchrun "
                        "(train.parallel: ddp or fsdp; docs/distributed.md).")


def _run_demo(args: argparse.Namespace) -> int:
    return _launch(args) if _wants_launch(args) else _train_and_report(None, args)


def _run_train(args: argparse.Namespace) -> int:
    from rlft.errors import ConfigError

    if args.recipe is None and args.data is None:
        raise ConfigError("rlft train needs a recipe file, or --data (and --reward) to train on your own data.")
    return _launch(args) if _wants_launch(args) else _train_and_report(args.recipe, args)


def _wants_launch(args: argparse.Namespace) -> bool:
    """--nproc N > 1 outside torchrun: start N ranks; inside torchrun --nproc has no effect."""
    from rlft.errors import ConfigError

    if args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: give a number of processes, 1 or more.")
    return args.nproc > 1 and "WORLD_SIZE" not in os.environ


def _launch(args: argparse.Namespace) -> int:
    """``torchrun --standalone --nproc_per_node N -m rlft`` with this command line (less --nproc)."""
    import subprocess
    import sys

    rest, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "rlft", *rest]
    return subprocess.run(command, check=False).returncode


def one_line_overrides(args: argparse.Namespace, recipe: dict[str, Any]) -> list[str]:
    """Recipe overrides (KEY=VALUE) for the one-line flags. With --model and no warm-start setting,
    the warm start is off (a pretrained model is trained as it is); the tiny model keeps it."""
    from rlft.errors import ConfigError

    out: list[str] = []
    if args.model:
        out.append(f"model.path={json.dumps(args.model)}")
        if "steps" not in (recipe.get("warm_start") or {}):
            out.append("warm_start.steps=0")
    if args.data:
        out += ["task.name=dataset", f"task.data={json.dumps(args.data)}"]
        if "run_dir" not in recipe and not args.run_dir:
            out.append(f"run_dir={json.dumps(str(Path('runs') / Path(args.data.rstrip('/')).stem))}")
    if args.eval_data:
        out.append(f"task.eval_data={json.dumps(args.eval_data)}")
    if args.reward:
        if ":" not in args.reward and args.reward.endswith(".py"):
            raise ConfigError(f"--reward {args.reward}: name the function too, as FILE.py:FUNCTION (e.g. {args.reward}:score).")
        spec = {"type": "python", "function": args.reward} if ":" in args.reward else {"type": args.reward}
        out.append(f"reward={json.dumps(spec)}")
    if args.algorithm:
        out.append(f"algorithm.name={args.algorithm}")
    if args.prompt_field:
        out.append(f"task.prompt_field={json.dumps(args.prompt_field)}")
    if args.answer_field:
        out.append(f"task.answer_field={'null' if args.answer_field == 'null' else json.dumps(args.answer_field)}")
    return out


def _train_and_report(recipe: str | None, args: argparse.Namespace) -> int:
    from rlft.config import RecipeConfig, config_from_dict, read_recipe_yaml

    data = read_recipe_yaml(recipe, "Check the path, or run `rlft demo`.") if recipe else {}
    flags = one_line_overrides(args, data) if hasattr(args, "data") else []
    # --run-dir last: the more specific flag wins over --set run_dir=... (quoted: "2024" is a folder).
    overrides = flags + list(args.set) + ([f"run_dir={json.dumps(args.run_dir)}"] if args.run_dir else [])
    plugins = resumed_plugins(data, overrides, RecipeConfig.run_dir) if args.resume else []
    config = config_from_dict(data, overrides, plugins + args.plugin)
    _quiet_transformers()
    from rlft.trainers.registry import train

    main = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for the run
    if main:
        print(f"rlft: run folder {config.run_dir}")
    summary = train(config, resume=args.resume, progress=not args.no_progress)
    if main:
        _print_summary(summary)
    return 0


def resumed_plugins(data: dict[str, Any], overrides: list[str], default_run_dir: str) -> list[str]:
    """--resume: the plugins the run recorded in its config.yaml, imported before the recipe is
    checked (so its names are valid and the recorded list compares equal); a missing one is one
    error naming it."""
    from rlft.plugins import load_recorded_plugins
    from rlft.schema import with_overrides

    run_dir = with_overrides(data, overrides).get("run_dir") or default_run_dir
    return load_recorded_plugins(str(run_dir))


def _print_summary(summary: dict[str, Any]) -> None:
    name = summary.get("headline_metric", "accuracy")
    words = name.replace("_", " ")
    base, final = summary[f"base_{name}"], summary[f"final_{name}"]
    rows = [
        ("run folder", summary["run_dir"]),
        ("algorithm", summary["algorithm"]),
        ("RL steps", f"{summary['steps']} ({summary['skipped_steps']} skipped)"),
        (f"held-out {words} before RL", f"{base:.1%}"),
        (f"held-out {words} after RL", f"{final:.1%}"),
        ("change", f"{(final - base) * 100:+.1f} points"),
    ]
    if name != "mean_reward" and "final_mean_reward" in summary:
        rows.append(("held-out mean reward", f"{summary['base_mean_reward']:.3f} -> {summary['final_mean_reward']:.3f}"))
    rows.append(("wall time", f"{summary['seconds']:.0f} s"))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\nFinal model: {Path(summary['run_dir']) / 'final_model'}  (metrics: metrics.jsonl, summary: summary.json)")


def resolve_model_folder(target: str) -> tuple[str, Path | None]:
    """A run folder maps to its final (or base) model; anything else is a model folder or hub id."""
    path = Path(target)
    if (path / "config.yaml").exists() and not (path / "config.json").exists():
        for name in ("final_model", "base_model"):
            if (path / name / "config.json").exists() or (path / name / "adapter_config.json").exists():
                return str(path / name), path
        from rlft.errors import RlftError

        raise RlftError(f"Run folder {path} has no final_model/ or base_model/ yet; train it first.")
    return target, None


def load_model_for_use(model_dir: str):  # noqa: ANN201 - (model, tokenizer)
    """A model folder, or a LoRA adapter folder merged into its base (as `rlft export` does)."""
    from rlft.models.loading import load_policy

    if (Path(model_dir) / "adapter_config.json").exists():
        from rlft.models.lora import find_adapter, merged_model

        folder, base = find_adapter(model_dir)
        model, tokenizer = load_policy(str(base))
        from peft import PeftModel

        return merged_model(PeftModel.from_pretrained(model, str(folder))), tokenizer
    return load_policy(model_dir)


def _run_eval(args: argparse.Namespace) -> int:
    import yaml

    from rlft.config import config_from_dict
    from rlft.errors import RlftError
    from rlft.plugins import load_recorded_plugins
    from rlft.tasks import TASKS, build_task
    from rlft.trainers.setup import evaluate_policy, prepare_task, recipe_reward

    _quiet_transformers()
    model_dir, run_dir = resolve_model_folder(args.target)
    recipe: dict[str, Any] = {}
    if run_dir is not None:  # the run's own task, reward and decoding settings
        load_recorded_plugins(run_dir)  # its task or reward may be a plugin's
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        if (run_dir / "python_task.json").exists():
            raise RlftError(
                f"{run_dir} was trained on a task given from Python, which rlft eval cannot rebuild; "
                "evaluate its final_model/ from Python with rlft.evaluation.evaluate."
            )
        recipe = {key: saved[key] for key in ("task", "eval", "reward", "warm_start") if saved.get(key) is not None}
        recipe["rollout"] = {k: saved["rollout"][k] for k in ("max_new_tokens", "max_prompt_tokens", "temperature")}
    config = config_from_dict(recipe, args.set)
    entry = TASKS[config.task.name]
    if args.data and entry.evaluate_on_file is None:
        raise RlftError(
            "--data evaluates a run trained on a dataset task (its reward and fields are reused); "
            f"{args.target} is not one. Train with task.name: dataset, or drop --data."
        )
    reward = recipe_reward(config)
    if entry.needs_recipe_reward and reward is None:
        raise RlftError(
            f"{args.target} was trained with a reward given from Python (rlft.train(reward=...)), which "
            "rlft eval cannot rebuild; evaluate its final_model/ from Python with rlft.evaluation.evaluate."
        )
    if args.data:
        assert entry.evaluate_on_file is not None
        task = entry.evaluate_on_file(config.task, reward, config.warm_start, args.data)
    else:
        task = build_task(config.task, lambda: reward, config.warm_start)
    if run_dir is not None and args.data is None:
        _warn_if_data_changed(run_dir, task)
    model, tokenizer = load_model_for_use(model_dir)
    prepare_task(config, task, model, tokenizer)
    from rlft.trainers.loop import held_out_scores, make_reward_fn

    scores = held_out_scores(config, task, reward, make_reward_fn(config, task, reward))
    result = evaluate_policy(config, model, tokenizer, task, scores)
    out = {"model": model_dir, "task": config.task.name, "eval_size": len(task.eval_problems),
           **{k.removeprefix("eval/"): v for k, v in result.metrics().items()}}  # fmt: skip
    if args.json:
        from rlft.common import strict_json

        print(strict_json.dumps(out, "rlft eval --json"))
    else:
        shown = eval_line(out, scored_by_recipe=getattr(task, "reward_function", None) is not None)
        print(f"{model_dir}: held-out {shown} on {out['eval_size']} problems ({config.task.name})")
    return 0


def eval_line(result: dict[str, Any], scored_by_recipe: bool) -> str:
    """`rlft eval`'s metrics as words. Where the task's own reward is the recipe's (the dataset
    task), ``accuracy`` is the mean of that (partial-credit) reward: it is shown once, as the mean
    reward, after the pass rate (the run's headline)."""
    metrics = {k: v for k, v in result.items() if k not in ("model", "task", "eval_size")}
    if scored_by_recipe:
        metrics.pop("accuracy", None)
        metrics = {k: metrics[k] for k in sorted(metrics, key=lambda k: k == "mean_reward")}
    return ", ".join(
        f"{k.replace('_', ' ')} {v:.3f}" if k == "mean_reward" else f"{k.replace('_', ' ')} {v:.1%}"
        for k, v in metrics.items()
    )


def _warn_if_data_changed(run_dir: Path, task: Any) -> None:
    import sys

    from rlft.common.run_folder import RunFolder
    from rlft.trainers.setup import changed_data

    changed = changed_data(RunFolder(run_dir), task)
    if changed:
        print(f"rlft: warning: {', '.join(changed)} changed since {run_dir} was trained; the held-out "
              "split below is drawn from the data as it is now.", file=sys.stderr)


def _check_sample_args(args: argparse.Namespace) -> None:
    """One clear error for each value `rlft sample` cannot use, before the model is loaded."""
    import math

    from rlft.errors import ConfigError

    if args.n < 1:
        raise ConfigError(f"-n {args.n}: give the number of completions to sample, 1 or more.")
    if not args.prompt:
        raise ConfigError("The prompt is empty: give the text the model continues, e.g. rlft sample RUN '12+34='.")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise ConfigError(
            f"--temperature {args.temperature}: give a finite number >= 0 (0 is greedy; 1 samples from the "
            "model's own distribution)."
        )
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens}: give 1 or more.")


def _run_sample(args: argparse.Namespace) -> int:
    import torch

    from rlft.errors import ConfigError
    from rlft.models.tokens import decode_completions, encode_prompts
    from rlft.rollout.sampling import sample

    _check_sample_args(args)
    _quiet_transformers()
    model_dir, _ = resolve_model_folder(args.target)
    model, tokenizer = load_model_for_use(model_dir)
    model.eval()
    ids, mask = encode_prompts(tokenizer, [args.prompt] * args.n)
    if ids.shape[1] == 0 or not bool(mask.any()):
        raise ConfigError(f"The prompt {args.prompt!r} is no tokens for this model's tokenizer; give some text.")
    rollout = sample(
        model, ids, mask,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=args.max_new_tokens, temperature=max(args.temperature, 1e-6),
        generator=torch.Generator().manual_seed(args.seed), greedy=args.temperature == 0,
    )
    for text in decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask):
        print(args.prompt + text)
    return 0


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()

"""``rlft demo``, ``rlft train``, ``rlft eval`` and ``rlft sample``."""

from __future__ import annotations

import argparse
import json
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

    train = sub.add_parser("train", help="Train with any recipe.", description="Train with a YAML recipe.")
    train.add_argument("recipe", help="Path of a YAML recipe (see examples/ and docs/recipes.md).")
    _common_train_args(train)
    train.set_defaults(run=_run_train)

    ev = sub.add_parser(
        "eval",
        help="Held-out accuracy of a run or a model folder.",
        description="Greedy-decode the task's held-out problems and report accuracy (mean reward).",
    )
    ev.add_argument("target", help="A run folder (uses final_model/) or a Hugging Face model folder.")
    ev.add_argument("--task", default="arithmetic", choices=["arithmetic"], help="Task to evaluate on.")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Recipe overrides for the task, e.g. --set task.digits=3.")
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
    p.add_argument("--run-dir", help="Folder of the run (same as --set run_dir=...).")
    p.add_argument("--no-progress", action="store_true", help="No progress bars (for logs).")


def _run_demo(args: argparse.Namespace) -> int:
    return _train_and_report(None, args)


def _run_train(args: argparse.Namespace) -> int:
    return _train_and_report(args.recipe, args)


def _train_and_report(recipe: str | None, args: argparse.Namespace) -> int:
    from rlft.config import load_config

    overrides = list(args.set) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    config = load_config(recipe, overrides)
    _quiet_transformers()
    from rlft.trainers.loop import train

    print(f"rlft: run folder {config.run_dir}")
    summary = train(config, resume=args.resume, progress=not args.no_progress)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    rows = [
        ("run folder", summary["run_dir"]),
        ("algorithm", summary["algorithm"]),
        ("RL steps", f"{summary['steps']} ({summary['skipped_steps']} skipped)"),
        ("held-out accuracy before RL", f"{summary['base_accuracy']:.1%}"),
        ("held-out accuracy after RL", f"{summary['final_accuracy']:.1%}"),
        ("change", f"{(summary['final_accuracy'] - summary['base_accuracy']) * 100:+.1f} points"),
        ("wall time", f"{summary['seconds']:.0f} s"),
    ]
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
    from rlft.evaluation import evaluate
    from rlft.tasks import build_task

    _quiet_transformers()
    model_dir, run_dir = resolve_model_folder(args.target)
    recipe: dict[str, Any] = {}
    if run_dir is not None:  # evaluate on the run's own held-out split
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        recipe = {"task": saved["task"], "eval": saved.get("eval", {})}
    config = config_from_dict(recipe, args.set)
    task = build_task(config.task)
    model, tokenizer = load_model_for_use(model_dir)
    result = evaluate(model, tokenizer, task, task.eval_problems, config.rollout.max_new_tokens,
                      temperature=config.eval.temperature, samples=config.eval.samples)  # fmt: skip
    out = {"model": model_dir, "task": args.task, "eval_size": len(task.eval_problems), "accuracy": result.accuracy}
    print(json.dumps(out) if args.json else f"{model_dir}: held-out accuracy {result.accuracy:.1%} on {out['eval_size']} problems")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    import torch

    from rlft.evaluation import decode_completions
    from rlft.rollout.sampling import encode_prompts, sample

    _quiet_transformers()
    model_dir, _ = resolve_model_folder(args.target)
    model, tokenizer = load_model_for_use(model_dir)
    model.eval()
    ids, mask = encode_prompts(tokenizer, [args.prompt] * args.n)
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

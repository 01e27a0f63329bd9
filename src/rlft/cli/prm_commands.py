"""``rlft prm label``, ``rlft prm train`` and ``rlft prm eval``: process reward models (docs/sparse_rewards.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    prm = sub.add_parser(
        "prm", help="Label steps without people, train and evaluate process reward models.",
        description="Process reward models: step labels from the policy's own rollouts (Math-Shepherd), a value head "
                    "on a causal LM trained on them, and the held-out step accuracy and AUC.",
    )
    prm_sub = prm.add_subparsers(dest="prm_command", metavar="SUBCOMMAND")
    prm.set_defaults(run=lambda args: (prm.print_help(), 1)[1])

    label = prm_sub.add_parser("label", help="Write step labels (train_data) from sampled continuations.",
                               description="For label.prompts training prompts of label.recipe's task, sample "
                                           "solutions with label.policy and label.rollouts continuations from every "
                                           "step prefix; a step's label is the share that reach the right answer.")
    label.add_argument("recipe", help="PRM recipe (YAML; docs/sparse_rewards.md).")
    label.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a recipe field.")
    label.add_argument("--overwrite", action="store_true", help="Replace train_data if it exists.")
    label.set_defaults(run=_run_label)

    train = prm_sub.add_parser("train", help="Train a process reward model on step labels.",
                               description="Train a PRM (BCE on the step labels); writes OUTPUT_DIR/model/ and "
                                           "model_card.md.")
    train.add_argument("recipe", help="PRM recipe (YAML; docs/sparse_rewards.md).")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a recipe field.")
    train.add_argument("--no-progress", action="store_true", help="No progress bar.")
    train.add_argument("--resume", action="store_true",
                       help="Continue the run in output_dir from its newest intact checkpoint (epochs may grow).")
    train.set_defaults(run=_run_train)

    ev = prm_sub.add_parser("eval", help="Held-out step accuracy and AUC of a PRM on step labels.",
                            description="Score every step of a labels file with a PRM.")
    ev.add_argument("model", help="Folder written by `rlft prm train` (or its model/).")
    ev.add_argument("--data", required=True, help="Step labels (JSONL).")
    ev.add_argument("--max-length", type=int, default=512)
    ev.add_argument("--json", action="store_true", help="Print the result as JSON.")
    ev.set_defaults(run=_run_eval)


def _run_label(args: argparse.Namespace) -> int:
    from rlft.cli.train_commands import _quiet_transformers
    from rlft.config.process_reward import load_prm_recipe
    from rlft.trainers.prm_labels import label_steps

    recipe = load_prm_recipe(args.recipe, args.set)
    _quiet_transformers()
    done = label_steps(recipe, overwrite=args.overwrite, recipe_file=args.recipe)
    print(f"rlft: {done['steps']} labelled steps of {done['solutions']} solutions in {done['train_data']} "
          f"(solutions right {done['solution_pass_rate']:.1%}, steps labelled >= 0.5 {done['positive_fraction']:.1%}; "
          f"{done['sampled_tokens']} tokens sampled in {done['seconds']:.0f} s)")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.cli.train_commands import _quiet_transformers
    from rlft.config.process_reward import load_prm_recipe
    from rlft.report.prm_card import write_prm_card
    from rlft.trainers.process_reward import train_process_reward_model

    recipe = load_prm_recipe(args.recipe, args.set)
    _quiet_transformers()
    summary = train_process_reward_model(recipe, progress=not args.no_progress, resume=args.resume)
    card = write_prm_card(Path(recipe.output_dir))
    print(f"rlft: process reward model in {summary['model_dir']} (card: {card})")
    print(f"  held-out steps: accuracy {summary['step_accuracy_before']:.1%} -> {summary['step_accuracy']:.1%}, "
          f"AUC {_number(summary['step_auc_before'])} -> {_number(summary['step_auc'])} on {summary['eval_steps']} steps")
    return 0


def _number(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a (held-out steps all of one kind)"


def _run_eval(args: argparse.Namespace) -> int:
    from rlft.cli.train_commands import _quiet_transformers
    from rlft.config.process_reward import ProcessRewardRecipe
    from rlft.rewards.process_model import load_process_model
    from rlft.rewards.step_labels import load_step_labels
    from rlft.trainers.process_reward import evaluate_prm

    _quiet_transformers()
    rows = load_step_labels(args.data)
    model, tokenizer, separator = load_process_model(args.model)
    recipe = ProcessRewardRecipe(train_data=args.data, step_separator=separator, max_length=args.max_length)
    result = {"model": args.model, "data": args.data, "steps": sum(len(r.labels) for r in rows),
              **{k.removeprefix("eval/"): v for k, v in evaluate_prm(model, tokenizer, rows, recipe).items()}}
    if args.json:
        from rlft.common import strict_json

        print(strict_json.dumps(result, "rlft prm eval"))
    else:
        print(f"{args.model}: step accuracy {result['step_accuracy']:.1%}, AUC {_number(result['step_auc'])} on "
              f"{result['steps']} steps of {args.data}")
    return 0

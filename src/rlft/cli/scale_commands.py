"""``rlft export``: a run's policy as a plain Hugging Face model folder (LoRA adapters merged)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="Write a run's final policy as a plain Hugging Face model folder (LoRA merged).",
        description="Merge a LoRA adapter into its base model (or copy a full model) and write "
        "weights and tokenizer into a folder that plain transformers loads with "
        "AutoModelForCausalLM.from_pretrained.",
    )
    export.add_argument(
        "run_dir",
        metavar="RUN",
        help="A run folder (uses RUN/final_model) or a model/adapter folder.",
    )
    export.add_argument(
        "-o", "--output", default=None, help="Output folder (default: RUN/exported)."
    )
    export.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.models.lora import export_merged

    out = Path(args.output) if args.output else Path(args.run_dir) / "exported"
    path = export_merged(args.run_dir, out)
    print(f"Exported a plain Hugging Face model to {path}")
    return 0

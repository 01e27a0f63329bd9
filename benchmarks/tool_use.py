"""Does the agent need the interpreter? examples/code/tool_use.yaml trained with and without it.

Run by hand (not in CI):

    .venv/bin/python benchmarks/tool_use.py                       # both runs, seed 0
    .venv/bin/python benchmarks/tool_use.py --set episodes=256

Two `rlft agent` runs of the same recipe (products of 3-digit numbers, the tiny model, a warm
start on scripted episodes, then GRPO over whole episodes): one where the agent may run Python
in the sandbox (env.max_tool_calls=2; the warm start's episodes run the product and answer with
its output) and one without (max_tool_calls=0; the warm start's episodes answer at once). Each
is evaluated on the same held-out questions. The last line printed is one JSON object with
success_with_tool, success_without_tool (after training; base_* before RL), the tool calls per
held-out episode, and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "code" / "tool_use.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Agent recipe overrides.")
    parser.add_argument("--out", default="runs/bench-tool-use", help="Parent folder of the runs (replaced).")
    args = parser.parse_args()

    from transformers.utils import logging

    from rlft.config.agent import load_agent_config
    from rlft.trainers.registry import train_agent

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    started, result = time.time(), {}
    for name, calls in (("with_tool", 2), ("without_tool", 0)):
        config = load_agent_config(RECIPE, [*args.set, f"env.max_tool_calls={calls}", f"run_dir={out / name}"])
        summary = train_agent(config, progress=False)
        last = json.loads((out / name / "evals.jsonl").read_text().splitlines()[-1])
        result[f"base_success_{name}"] = summary["base_success"]
        result[f"success_{name}"] = summary["final_success"]
        result[f"tool_calls_per_episode_{name}"] = last.get("eval/tool/calls_per_episode", 0.0)
        print(f"{name}: held-out success {summary['base_success']:.1%} -> {summary['final_success']:.1%} "
              f"({summary['seconds']:.0f} s)", flush=True)
    result["seconds_total"] = round(time.time() - started, 1)
    result["overrides"] = args.set
    print(json.dumps(result))


if __name__ == "__main__":
    main()

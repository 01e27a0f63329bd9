"""One learner process against two (torchrun, gloo on the CPU): same update, less memory per rank.

Run by hand (not in CI):

    .venv/bin/python benchmarks/data_parallel.py                  # 3 steps of an 85M-parameter model
    .venv/bin/python benchmarks/data_parallel.py --steps 5 --set model.tiny.num_layers=4

The demo recipe (GRPO on sums) with a larger offline model, no warm start and a reward with
variance from the first step (a "1" anywhere in the answer), so every step moves the weights; the
same seed is trained on 1 process, then with `rlft demo --nproc 2` under train.parallel ddp and
fsdp. Each run's final weights are compared with the one-process run's; `perf/peak_rss_mib` (the
peak resident memory of rank 0, which every rank matches) and `perf/step_seconds` (mean over the
steps after the first) come from the runs' metrics.jsonl. The last line printed is one JSON object
with max_abs_weight_diff {ddp, fsdp}, peak_mib_per_rank {one_process, ddp, fsdp} and step_s
{one_process, ddp, fsdp}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

MODEL = ["model.tiny.hidden_size=768", "model.tiny.num_layers=12", "model.tiny.intermediate_size=2048"]
RECIPE = [
    *MODEL, "warm_start.steps=0", "task.eval_size=16", "eval.every=1000", "checkpoint.every=1000",
    "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4", "rollout.max_new_tokens=4",
    'reward={"type": "regex", "pattern": "1"}',
]  # fmt: skip


def train(run: Path, nproc: int, threads: int, extra: list[str]) -> list[dict]:
    shutil.rmtree(run, ignore_errors=True)
    args = [sys.executable, "-m", "rlft", "demo", "--no-progress", "--run-dir", str(run), "--nproc", str(nproc)]
    for item in [*RECIPE, f"train.torch_threads={threads}", *extra]:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def max_abs_diff(a: Path, b: Path) -> float:
    wa, wb = (load_file(str(r / "final_model" / "model.safetensors")) for r in (a, b))
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="runs/bench-data-parallel")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    extra = [f"train.steps={args.steps}", *args.set]
    out = Path(args.out)
    runs = {
        "one_process": (out / "one", 1, cores, extra),
        "ddp": (out / "ddp", 2, max(1, cores // 2), [*extra, "train.parallel=ddp"]),
        "fsdp": (out / "fsdp", 2, max(1, cores // 2), [*extra, "train.parallel=fsdp"]),
    }
    figures: dict[str, dict[str, float]] = {"max_abs_weight_diff": {}, "peak_mib_per_rank": {}, "step_s": {}}
    for name, (run, nproc, threads, sets) in runs.items():
        metrics = train(run, nproc, threads, sets)
        later = metrics[1:] or metrics
        figures["peak_mib_per_rank"][name] = round(max(m["perf/peak_rss_mib"] for m in metrics), 1)
        figures["step_s"][name] = round(sum(m["perf/step_seconds"] for m in later) / len(later), 3)
        if name != "one_process":
            figures["max_abs_weight_diff"][name] = max_abs_diff(run, out / "one")
        print(f"{name:12s} {nproc} process(es) x {threads} threads: step {figures['step_s'][name]:.2f} s, "
              f"peak {figures['peak_mib_per_rank'][name]:.0f} MiB per rank", flush=True)
    base = load_file(str(out / "one" / "base_model" / "model.safetensors"))
    final = load_file(str(out / "one" / "final_model" / "model.safetensors"))
    figures["weights_moved_by_training"] = max(float((final[k] - base[k]).abs().max()) for k in base)
    figures["steps"] = args.steps
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""benchmarks/gpu_check.py without a GPU: it says so in its one JSON line instead of failing, so the
script that a GPU machine runs first is known to start (its smoke mode, --allow-cpu --quick, runs
every CPU stage in about a minute; see docs/distributed.md)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_a_gpu_says_so_in_its_json_line():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["gpu"] is None and report["correct"] is None
    assert "no CUDA device" in report["skipped"]["all"]
    assert {"configs", "rlft_vs_trl_step_s", "rlft_vs_trl_peak_mib"} <= set(report)


def test_gpu_check_correctness_stage_runs_on_the_cpu(tiny_model_dir):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from gpu_check import check_correctness

    figures = check_correctness(tiny_model_dir, torch.device("cpu"))  # the CPU against itself: exact
    assert figures["ok"] and figures["weight_abs"] == 0.0 and figures["loss_rel"] == 0.0
    assert figures["losses_cpu"] == figures["losses_device"] and len(figures["losses_cpu"]) == 3

"""Speed and memory of a run, read from its ``metrics.jsonl``: what ``rlft runs`` and ``rlft report``
show (docs/metrics.md). Only the standard library: ``rlft runs`` stays instant."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

# name -> (metric, how the steps' values are summarised). Medians for rates and times (the first
# step's compilation and allocation would skew a mean), the maximum for memory.
PERF_FIGURES: dict[str, tuple[str, Callable[[list[float]], float]]] = {
    "tokens_per_s": ("perf/tokens_per_s", statistics.median),
    "step_s": ("perf/step_seconds", statistics.median),
    "weight_sync_s": ("perf/weight_sync_s", statistics.median),
    "cuda_peak_mib": ("perf/cuda_peak_mib", max),
    "cuda_reserved_mib": ("perf/cuda_reserved_mib", max),
    "peak_rss_mib": ("perf/peak_rss_mib", max),
}


def perf_figures(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """The run's figures (``PERF_FIGURES``) over the steps that logged them; a figure no step
    logged (GPU memory on a CPU run) is absent."""
    out = {}
    for name, (key, summarise) in PERF_FIGURES.items():
        values = [float(m[key]) for m in metrics if isinstance(m.get(key), (int, float)) and not isinstance(m.get(key), bool)]
        if values:
            out[name] = round(summarise(values), 4)
    return out


def describe_perf(figures: dict[str, float]) -> str:
    """One short line: '412 tok/s, 0.31 s/step, GPU peak 3.2 GiB'; '-' without figures."""
    parts = []
    if "tokens_per_s" in figures:
        parts.append(f"{figures['tokens_per_s']:.0f} tok/s")
    if "step_s" in figures:
        parts.append(f"{figures['step_s']:.2f} s/step")
    if "cuda_peak_mib" in figures:
        parts.append(f"GPU peak {figures['cuda_peak_mib'] / 1024:.1f} GiB")
    return ", ".join(parts) or "-"

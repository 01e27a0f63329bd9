"""The report's curriculum section: the training prompts' final pass rates as a histogram
(``summary.json``'s ``curriculum_pass_rates``, written by ``task.sampler: curriculum``)."""

from __future__ import annotations

import io
from typing import Any

from rlft.report.document import Section


def histogram_png(edges: list[float], counts: list[int]) -> bytes:
    """Bars of ``counts`` over the bins ``edges`` (matplotlib, imported here so it stays optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.0), dpi=100)
    widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="white")
    ax.set_title("pass rates of the training prompts seen")
    ax.set_xlabel("pass rate p (EMA over the prompt's groups)")
    ax.set_ylabel("prompts")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pass_rate_section(section: Section, hist: dict[str, Any]) -> None:
    """Text, a histogram and its table: how many prompts ended at each pass rate."""
    edges, counts = hist["bin_edges"], hist["counts"]
    seen = sum(counts)
    section.text(
        f"The curriculum (task.sampler: curriculum) tracked {hist['prompts']} training prompts; {seen} were sampled "
        f"at least once ({hist['unseen']} never). Prompts at p = 0 or 1 give groups without signal; the "
        "curriculum drew prompts in proportion to p (1 - p), with a floor."
    )
    section.image("histogram of the final pass rates", histogram_png(edges, counts))
    section.table(["pass rate", "prompts"],
                  [[f"{a:.1f}-{b:.1f}", c] for a, b, c in zip(edges, edges[1:], counts, strict=False)])

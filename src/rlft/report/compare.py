"""``rlft compare RUN [RUN ...]``: the runs' curves overlaid, and what their recipes change.

One self-contained HTML page (the plots are base64 PNGs, no script, nothing fetched) and, next to
it, one PNG with every panel. A panel per quantity: mean reward, the held-out headline metric
(``base_eval.json`` at step 0, then ``evals.jsonl``), KL, entropy, learning rate and step time; a
quantity that no run logs is left out with a note, and a run without data in a panel (one that has
not finished a step yet) is named under it. Below: each run's status, steps and held-out result
(``rlft.report.runs``), and a table of the recipe keys whose values differ between the runs.

Compare reads run folders and writes only its own output: it never replaces a file of a run folder,
writes nothing inside a run's subfolders, and replaces an existing file only when compare wrote it
(a mark in the file: the page's ``<meta name="generator" content="rlft compare">``, the PNG's
``Software: rlft compare`` text chunk) or, outside run folders, with ``--force``.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlft.common.run_folder import RunFolder, write_bytes_atomic
from rlft.errors import RlftError
from rlft.report.document import Document
from rlft.report.runs import RunInfo, inspect_run, is_run_folder, read_json, read_recipe

Series = tuple[str, list[float], list[float]]  # (metric name, steps, values)


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    metrics: tuple[str, ...]  # the first one a run logs is plotted (the agent logs train/return)
    ylabel: str = ""


PANELS = [
    Panel("reward", "mean reward (train)", ("reward/mean", "train/return"), "reward"),
    Panel("held_out", "held-out {metric}", (), "{metric}"),  # each run's headline metric
    Panel("kl", "KL to reference", ("policy/kl",), "nats/token"),
    Panel("entropy", "entropy", ("policy/entropy",), "nats/token"),
    Panel("lr", "learning rate", ("train/lr",), "learning rate"),
    Panel("step_time", "step time", ("perf/step_seconds",), "seconds"),
]
# Recipe keys that name the run's own folder: the legend names the runs already.
FOLDER_KEYS = {"run_dir", "output_dir"}
# Files a run keeps (or other commands write) at its top level: the page and its PNG never take
# one of these names, even where no such file exists yet.
RUN_FILES = {
    "config.yaml", "config.json", "recipe.yaml", "data.json", "python_task.json", "base_eval.json",
    "metrics.jsonl", "evals.jsonl", "samples.jsonl", "summary.json", "privacy.json",
    "privacy_state.json", "audit.jsonl", "audit.head", "running.json", "trackers.json", "mlflow.db",
    "report.html", "model_card.md", "model_card.html",
}  # fmt: skip
# What marks a file as written by rlft compare (check_output replaces only such files).
HTML_MARK = '<meta name="generator" content="rlft compare">'
PNG_MARK = b"Software\x00rlft compare"  # a PNG tEXt chunk: keyword, NUL, text
MARKERS = "osD^vP*Xph"


@dataclass
class ComparedRun:
    label: str
    info: RunInfo
    recipe: dict[str, Any]  # flattened config.yaml
    series: dict[str, Series] = field(default_factory=dict)  # panel key -> its curve


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's folder name; runs of equal names get as many parent folders as tell them apart
    (``a/run``, ``b/run``)."""
    parts = [p.resolve().parts for p in paths]
    labels = []
    for i, own in enumerate(parts):
        depth = 1
        while depth < len(own) and any(o[-depth:] == own[-depth:] for j, o in enumerate(parts) if j != i):
            depth += 1
        labels.append("/".join(own[-depth:]))
    return labels


def metric_series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key``, leaving out records without it and non-finite values (a
    skipped step's NaN reward)."""
    points = [(r.get("step", 0), r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [float(s) for s, _ in points], [float(v) for _, v in points]


def run_series(root: Path, headline: str | None) -> dict[str, Series]:
    """Panel key -> (metric, steps, values) for every panel the run has data for."""
    run = RunFolder(root)
    metrics = run.read_jsonl(run.metrics)
    out: dict[str, Series] = {}
    for panel in PANELS:
        for key in panel.metrics:
            steps, values = metric_series(metrics, key)
            if steps:
                out[panel.key] = (key, steps, values)
                break
    if headline:
        key = f"eval/{headline}"
        base = read_json(run.base_eval)
        steps, values = metric_series([{**base, "step": 0}, *run.read_jsonl(run.evals)], key)
        if steps:
            out["held_out"] = (key, steps, values)
    return out


def load_runs(paths: list[Path]) -> list[ComparedRun]:
    if not paths:
        raise RlftError("Give at least one run folder to compare.")
    for path in paths:
        if not path.exists():
            raise RlftError(f"{path} does not exist. Give run folders (the run_dir of each run).")
        if not is_run_folder(path):
            raise RlftError(f"{path} is not a run folder (no config.yaml). Give the folder a training run wrote.")
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p in paths if resolved.count(p.resolve()) > 1})
    if twice:
        raise RlftError(f"{', '.join(twice)} is given more than once; give each run once.")
    runs = []
    for path, label in zip(paths, run_labels(paths), strict=True):
        info = inspect_run(path, label)
        recipe = {k: v for k, v in flatten(read_recipe(path)).items() if k not in FOLDER_KEYS}
        runs.append(ComparedRun(label, info, recipe, run_series(path, info.headline_metric)))
    return runs


def value_text(value: Any) -> str:
    """A recipe value as the YAML/JSON literal a user writes (``null``, ``true``, ``5e-05``):
    exact, so two learning rates never print alike."""
    return value if isinstance(value, str) else json.dumps(value)


def recipe_differences(recipes: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(key, one value per run) for every flattened key whose values differ; a key a run lacks
    (another kind of recipe, an older rlft) shows as ``(absent)``."""
    absent = object()
    keys = sorted(set().union(*recipes)) if recipes else []
    rows = []
    for key in keys:
        values = [r.get(key, absent) for r in recipes]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, ["(absent)" if v is absent else value_text(v) for v in values]))
    return rows


def panel_title(panel: Panel, runs: list[ComparedRun]) -> tuple[str, str]:
    """(title, y label); the held-out panel names its metric when every run shares it."""
    names = {r.series["held_out"][0].removeprefix("eval/") for r in runs if "held_out" in r.series}
    metric = names.pop() if len(names) == 1 else "headline metric"
    return panel.title.format(metric=metric), panel.ylabel.format(metric=metric)


def colours(n: int) -> list[str]:
    import matplotlib

    cycle = matplotlib.color_sequences["tab10"]
    return [matplotlib.colors.to_hex(cycle[i % len(cycle)]) for i in range(n)]


def draw_panel(ax: Any, panel: Panel, runs: list[ComparedRun], legend: bool = True) -> None:
    """Every run's curve of ``panel`` on ``ax``, one colour and marker per run."""
    import matplotlib.ticker

    title, ylabel = panel_title(panel, runs)
    mixed = len({r.series[panel.key][0] for r in runs if panel.key in r.series}) > 1
    for i, (run, colour) in enumerate(zip(runs, colours(len(runs)), strict=True)):
        if panel.key not in run.series:
            continue
        metric, steps, values = run.series[panel.key]
        label = f"{run.label} ({metric.removeprefix('eval/')})" if mixed else run.label
        # Earlier runs are drawn wider, so equal curves show every colour as a border, none hidden.
        wider = 2.0 * (len(runs) - 1 - i) / max(1, len(runs) - 1)
        ax.plot(steps, values, color=colour, label=label, marker=MARKERS[i % len(MARKERS)] if len(steps) < 30 else None,
                markersize=3.5 + 1.5 * wider, linestyle=("-", "--", ":", "-.")[(i // 10) % 4], linewidth=1.6 + wider)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RlftError("rlft compare draws with matplotlib: pip install 'rlft[responsible]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": "rlft compare"})
    pyplot().close(fig)
    return buf.getvalue()


def panel_png(panel: Panel, runs: list[ComparedRun]) -> bytes:
    """One panel as a PNG the size of ``rlft report``'s curves."""
    fig, ax = pyplot().subplots(figsize=(4.8, 3.2), dpi=100, layout="constrained")
    draw_panel(ax, panel, runs)
    return figure_png(fig)


def overview_png(panels: list[Panel], runs: list[ComparedRun]) -> bytes:
    """Every panel in one PNG, three to a row, with one legend above them."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = pyplot().subplots(rows, columns, figsize=(4.8 * columns, 3.2 * rows + 0.6), dpi=100,
                                  layout="constrained", squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel, runs, legend=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker=MARKERS[i % len(MARKERS)], label=r.label)
               for i, (r, c) in enumerate(zip(runs, colours(len(runs)), strict=True))]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(runs), 4))
    return figure_png(fig)


def held_out_text(info: RunInfo, summary: dict[str, Any], base: dict[str, Any]) -> str:
    """'accuracy 0.125 -> 0.312': base -> final, or -> the last evaluation of an unfinished run."""
    name = info.headline_metric
    if name is None:
        return "-"
    before = summary.get(f"base_{name}", base.get(f"eval/{name}"))
    if summary:
        after, note = summary.get(f"final_{name}"), ""
    elif info.held_out_step:
        after, note = info.held_out, f" (step {info.held_out_step})"
    else:
        after, note = None, " (no evaluation yet)"
    shown = [f"{v:.3f}" if isinstance(v, (int, float)) else "?" for v in (before, after)]
    return f"{name} {shown[0]} -> {shown[1]}{note}"


def runs_rows(runs: list[ComparedRun]) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in runs:
        summary, base = read_json(Path(r.info.path) / "summary.json"), read_json(Path(r.info.path) / "base_eval.json")
        planned = r.info.planned_steps if r.info.planned_steps is not None else "?"
        rows.append([r.label, r.info.path, r.info.algorithm, r.info.status, f"{r.info.steps}/{planned}",
                     held_out_text(r.info, summary, base), summary.get("seconds", ""), r.info.detail])
    return rows


def legend_html(runs: list[ComparedRun]) -> str:
    items = "".join(
        f'<li class="run" data-run="{html.escape(r.label)}" data-colour="{c}">'
        f'<span class="swatch" style="background:{c}"></span>{html.escape(r.label)} '
        f'<span class="path">{html.escape(r.info.path)}</span></li>'
        for r, c in zip(runs, colours(len(runs)), strict=True)
    )
    style = (".runs{list-style:none;padding:0}.swatch{display:inline-block;width:2.2em;height:.35em;"
             "vertical-align:middle;margin-right:.5em}.path{color:#777;font-size:85%}")
    return f'<style>{style}</style><ul class="runs">{items}</ul>'


def build_comparison(runs: list[ComparedRun]) -> tuple[Document, list[Panel]]:
    """The page, and the panels drawn on it (those some run has data for)."""
    doc = Document(f"Comparing {len(runs)} run{'s' * (len(runs) != 1)}")
    doc.section("Runs").raw_html(legend_html(runs), "\n".join(f"- {r.label}: {r.info.path}" for r in runs))
    curves = doc.section("Curves")
    drawn = [p for p in PANELS if any(p.key in r.series for r in runs)]
    for panel in PANELS:
        title = panel_title(panel, runs)[0]
        if panel not in drawn:
            curves.text(f"No {title} panel: no run logs {' or '.join(panel.metrics) or 'a held-out metric'}.")
            continue
        curves.image(f"{title}: " + ", ".join(r.label for r in runs if panel.key in r.series), panel_png(panel, runs))
    for r in runs:
        missing = [panel_title(p, runs)[0] for p in drawn if p.key not in r.series]
        if missing:
            why = "it has no metrics yet" if r.info.steps == 0 else "it does not log them"
            curves.text(f"{r.label} ({r.info.status}) has no curve in: {', '.join(missing)} ({why}).")
    doc.section("Status").table(
        ["run", "folder", "algorithm", "status", "steps", "held-out", "seconds", "detail"], runs_rows(runs))
    section = doc.section("Recipe differences")
    differences = recipe_differences([r.recipe for r in runs])
    if len(runs) < 2:
        section.text("One run: nothing to compare its recipe with.")
    elif not differences:
        section.text("The recipes are identical (apart from the run folder).")
    else:
        section.text(f"The {len(differences)} recipe keys (config.yaml, flattened) whose values differ.")
        section.table(["recipe key", *(r.label for r in runs)], [[k, *v] for k, v in differences])
    return doc, drawn


def written_by_compare(path: Path) -> bool:
    """Whether the file at ``path`` is a page or PNG that ``rlft compare`` wrote: its head holds
    the mark compare puts in both (the page's ``<meta name="generator">``, the PNG's ``Software``
    text chunk, which precedes the image data)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    return HTML_MARK.encode() in head or PNG_MARK in head


def enclosing_runs(path: Path) -> list[Path]:
    """The run folders (folders holding config.yaml) that contain ``path``, nearest first."""
    return [folder for folder in path.parents if is_run_folder(folder)]


def check_output(out: Path, force: bool = False) -> Path:
    """The PNG's path next to the page, once both targets are known to be safe to write: never a
    folder, never a run's own file or anything inside a run's subfolders, never an existing file
    that compare did not write (unless ``force``, and never inside a run folder)."""
    png = out.with_suffix(".png")
    if png == out:
        raise RlftError(f"--out {out} is a PNG; give the HTML page's path (the PNG is written next to it).")
    for target in (out, png):
        if target.is_dir():
            raise RlftError(f"--out: {target} is a folder; give a file name such as {target / 'compare.html'}.")
        resolved = target.resolve()
        runs = enclosing_runs(resolved)
        if runs and (runs[0] != resolved.parent or len(runs) > 1 or resolved.name in RUN_FILES):
            raise RlftError(
                f"--out: {target} is a file of run {runs[-1]} (or lies inside one of its folders); rlft compare "
                "never writes there. Choose another path, e.g. --out compare.html."
            )
        if resolved.exists() and not written_by_compare(resolved):
            if runs:
                raise RlftError(
                    f"--out: {target} already exists in run {runs[0]} and was not written by rlft compare; "
                    "compare never replaces a file of a run folder (--force does not either). Choose another name."
                )
            if not force:
                raise RlftError(
                    f"--out: {target} already exists and was not written by rlft compare; nothing was "
                    "changed. Choose another path, or add --force to replace it."
                )
    return png


def write_comparison(paths: list[Path], out: Path, force: bool = False) -> tuple[Path, Path, list[ComparedRun]]:
    """Write the page and its PNG (atomically, each over nothing or over compare's own earlier
    output: :func:`check_output`); returns (page, PNG, the runs as read)."""
    png = check_output(out, force)
    pyplot()  # matplotlib missing: say so before reading anything
    runs = load_runs(paths)
    doc, drawn = build_comparison(runs)
    page = doc.html().replace('<meta charset="utf-8">', f'<meta charset="utf-8">{HTML_MARK}', 1)
    page = page.replace("</body>", f'<p class="png">All panels in one image: {html.escape(png.name)}</p>\n</body>')
    image = overview_png(drawn, runs) if drawn else empty_png()
    check_output(out, force)  # again, just before writing: a file may have appeared meanwhile
    write_bytes_atomic(png, image)
    write_bytes_atomic(out, page.encode())
    return out, png, runs


def empty_png() -> bytes:
    fig = pyplot().figure(figsize=(4.8, 1.0), dpi=100)
    fig.text(0.5, 0.5, "no run has metrics yet", ha="center", va="center")
    return figure_png(fig)

"""`rlft compare` on two real short runs that differ in their learning rate: the page overlays both
runs' curves (the colours of both are drawn in each panel), the values plotted are those of
metrics.jsonl and evals.jsonl, and the recipe table holds exactly the learning-rate difference."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlft.cli.main import main
from rlft.config import config_from_dict
from rlft.report.compare import (
    flatten,
    load_runs,
    metric_series,
    recipe_differences,
    run_labels,
    write_comparison,
    written_by_compare,
)
from rlft.trainers.registry import train

LOW, HIGH = 1e-4, 3e-3
# tests/conftest.py's TINY_RECIPE: a few seconds a run on 2 cores.
TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
    "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.steps=6",
    "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4",
    "rollout.max_new_tokens=4", "eval.every=3", "checkpoint.every=2", "train.torch_threads=1",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs of the tiny recipe that differ only in train.learning_rate, both in folders named
    `run` (the legend must tell them apart)."""
    root = tmp_path_factory.mktemp("compare")
    runs = []
    for name, lr in (("low", LOW), ("high", HIGH)):
        folder = root / name / "run"
        train(config_from_dict({}, [*TINY, f"run_dir={folder}", f"train.learning_rate={lr}"]), progress=False)
        runs.append(folder)
    return runs


def images(page: str) -> dict[str, bytes]:
    """alt text -> PNG bytes of every embedded image."""
    return {alt: base64.b64decode(data) for alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)}


def colour_pixels(png: bytes, colour: str) -> int:
    """How many pixels of the image are (nearly) ``colour`` (#rrggbb)."""
    import matplotlib.image

    rgb = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]  # (H, W, 3) in [0, 1]
    target = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) < 0.06).sum())


def test_page_overlays_both_runs_and_tables_the_learning_rate(two_runs, tmp_path):
    out = tmp_path / "pages" / "cmp.html"
    page_path, png_path, runs = write_comparison(two_runs, out)
    assert (page_path, png_path) == (out, tmp_path / "pages" / "cmp.png")
    page = out.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    labels = [r.label for r in runs]
    assert labels == ["low/run", "high/run"]  # equal folder names told apart by their parents
    colours = dict(re.findall(r'data-run="([^"]+)" data-colour="(#[0-9a-f]{6})"', page))
    assert set(colours) == set(labels) and len(set(colours.values())) == 2
    shown = images(page)
    titles = [alt.split(":")[0] for alt in shown]
    assert titles == ["mean reward (train)", "held-out accuracy", "KL to reference", "entropy", "learning rate",
                      "step time"]
    assert all(alt.endswith(": low/run, high/run") for alt in shown)
    # Both runs' curves are drawn in every panel: each run's colour fills pixels, also where the
    # curves are equal (the first run's wider line shows around the second's). A legend entry
    # alone is under 100 pixels; a curve is over 500.
    for alt, png in shown.items():
        assert all(colour_pixels(png, c) > 300 for c in colours.values()), alt
    # The recipe table: exactly the learning rate differs (run_dir names the run already).
    table = page.split("<h2>Recipe differences</h2>")[1]
    assert "The 1 recipe keys" in table
    row = re.search(r"<tr><td>train\.learning_rate</td><td>([^<]*)</td><td>([^<]*)</td></tr>", table)
    assert row and [float(v) for v in row.groups()] == [LOW, HIGH]
    assert "run_dir" not in table
    status = page.split("<h2>Status</h2>")[1].split("</table>")[0]
    assert status.count("<td>finished</td>") == 2 and status.count("<td>6/6</td>") == 2
    import matplotlib.image

    overview = matplotlib.image.imread(png_path, format="png")
    assert overview.shape[0] > 400 and overview.shape[1] > 1000  # two rows of three panels
    assert all(colour_pixels(png_path.read_bytes(), c) > 300 for c in colours.values())


def test_plotted_values_are_the_runs_own(two_runs):
    """Each curve is the run's metrics.jsonl column; the held-out curve starts with base_eval.json at step 0."""
    for run in load_runs(two_runs):
        folder = Path(run.info.path)
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        evals = [json.loads(line) for line in (folder / "evals.jsonl").read_text().splitlines()]
        base = json.loads((folder / "base_eval.json").read_text())
        assert run.series["lr"] == ("train/lr", [1.0, 2, 3, 4, 5, 6], [m["train/lr"] for m in metrics])
        assert run.series["kl"][2] == [m["policy/kl"] for m in metrics]
        assert run.series["step_time"][2] == [m["perf/step_seconds"] for m in metrics]
        assert run.series["held_out"] == (
            "eval/accuracy", [0.0, 3.0, 6.0], [base["eval/accuracy"], *(e["eval/accuracy"] for e in evals)])
    assert {run.series["lr"][2][0] for run in load_runs(two_runs)} == {LOW, HIGH}


def test_a_run_without_learning_rate_or_metrics_is_shown_with_a_note(two_runs, tmp_path):
    """A run from before train/lr was logged loses only that panel; a run that has not finished a
    step (only config.yaml) is listed, not refused."""
    old = tmp_path / "old"
    shutil.copytree(two_runs[0], old)
    lines = [json.loads(line) for line in (old / "metrics.jsonl").read_text().splitlines()]
    (old / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in m.items() if k != "train/lr"}) + "\n"
                                               for m in lines))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(two_runs[1] / "config.yaml", fresh / "config.yaml")
    page = write_comparison([old, fresh], tmp_path / "c.html")[0].read_text()
    assert "No learning rate panel: no run logs train/lr." in page
    assert len(images(page)) == 5
    assert "fresh (not started) has no curve in: mean reward (train), held-out accuracy, KL to reference" in page
    assert "it has no metrics yet" in page


@pytest.mark.parametrize("case, message", [
    ("not_a_run", "is not a run folder (no config.yaml)"),
    ("missing", "does not exist"),
    ("twice", "is given more than once"),
    ("input_file", "rlft compare never writes there"),
    ("png", "is a PNG; give the HTML page's path"),
    ("folder", "is a folder; give a file name"),
])
def test_refusals_are_one_clear_message(two_runs, tmp_path, capsys, case, message):
    run = str(two_runs[0])
    args = {
        "not_a_run": [run, str(tmp_path)],
        "missing": [run, str(tmp_path / "nope")],
        "twice": [run, str(two_runs[0] / ".." / "run")],
        "input_file": [run, str(two_runs[1]), "--out", str(two_runs[1] / "metrics.jsonl")],
        "png": [run, "--out", str(tmp_path / "x.png")],
        "folder": [run, "--out", str(tmp_path)],
    }[case]
    before = (two_runs[1] / "metrics.jsonl").read_bytes()
    assert main(["compare", *args, *([] if "--out" in args else ["--out", str(tmp_path / "c.html")])]) == 2
    assert message in capsys.readouterr().err
    assert (two_runs[1] / "metrics.jsonl").read_bytes() == before
    assert not (tmp_path / "c.html").exists()


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders``, by path: what must be byte-identical after a refusal."""
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def other_run(two_runs, tmp_path) -> Path:
    """A run that is not one of the compared runs (a copy of one), with a report.html of its own."""
    copy = tmp_path / "other" / "run"
    shutil.copytree(two_runs[1], copy)
    (copy / "report.html").write_text("<html>the run's own report</html>")
    return copy


@pytest.mark.parametrize("case", ["run_folder", "model_file", "metrics", "report", "report_forced", "subfolder_new"])
def test_out_never_writes_over_a_file_of_any_run(two_runs, other_run, capsys, case):
    """--out at a run folder, at a file inside a run (compared or not), at a run's report.html (even
    with --force), or at a new name inside a run's model folder: refused, every file unchanged."""
    out = {
        "run_folder": other_run,
        "model_file": other_run / "final_model" / "model.safetensors",
        "metrics": other_run / "metrics.jsonl",
        "report": two_runs[0] / "report.html",
        "report_forced": other_run / "report.html",
        "subfolder_new": other_run / "final_model" / "compare.html",
    }[case]
    if case == "report":
        (two_runs[0] / "report.html").write_text("<html>the compared run's own report</html>")
    before = snapshot(*two_runs, other_run)
    try:
        force = ["--force"] if case == "report_forced" else []
        assert main(["compare", *map(str, two_runs), "--out", str(out), *force]) == 2
        said = capsys.readouterr().err
        assert "--out" in said and "Traceback" not in said
        assert snapshot(*two_runs, other_run) == before
    finally:
        (two_runs[0] / "report.html").unlink(missing_ok=True)


def test_out_replaces_only_its_own_output_unless_forced(two_runs, tmp_path, capsys):
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    assert main(["compare", *map(str, two_runs), "--out", str(mine)]) == 2
    assert "already exists and was not written by rlft compare" in capsys.readouterr().err
    assert mine.read_text() == "<html>my notes</html>" and not mine.with_suffix(".png").exists()

    page = tmp_path / "cmp.html"
    page.with_suffix(".png").write_bytes(b"someone else's picture")  # the page is new, its PNG is not
    assert main(["compare", *map(str, two_runs), "--out", str(page)]) == 2
    assert page.with_suffix(".png").read_bytes() == b"someone else's picture" and not page.exists()
    page.with_suffix(".png").unlink()

    before = snapshot(*two_runs)
    assert main(["compare", *map(str, two_runs), "--out", str(page)]) == 0
    first = page.read_bytes()
    assert written_by_compare(page) and written_by_compare(page.with_suffix(".png"))
    assert main(["compare", two_runs[0].as_posix(), "--out", str(page)]) == 0  # its own output: replaced
    assert page.read_bytes() != first and "Comparing 1 run" in page.read_text()
    assert snapshot(*two_runs) == before  # the compared runs are read, never written

    assert main(["compare", *map(str, two_runs), "--out", str(mine), "--force"]) == 0
    assert written_by_compare(mine) and "Comparing 2 runs" in mine.read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_a_new_page_at_a_runs_top_level_is_allowed_and_replaced(two_runs, other_run):
    out = other_run / "compare.html"
    write_comparison(two_runs, out)
    write_comparison(two_runs, out)  # compare's own page in a run folder: replaced
    assert written_by_compare(out) and written_by_compare(out.with_suffix(".png"))


def test_no_run_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare"])
    assert exit_.value.code == 2 and "RUN" in capsys.readouterr().err


def test_default_page_is_compare_html_here(two_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", *map(str, two_runs)]) == 0
    said = capsys.readouterr().out
    assert (tmp_path / "compare.html").is_file() and (tmp_path / "compare.png").is_file()
    assert str(tmp_path / "compare.html") in said and str(tmp_path / "compare.png") in said


def test_labels_flatten_differences_and_series():
    assert run_labels([Path("/x/a/run"), Path("/y/b/run"), Path("/z/c")]) == ["a/run", "b/run", "c"]
    assert run_labels([Path("/x/s/run"), Path("/y/s/run")]) == ["x/s/run", "y/s/run"]
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    rows = recipe_differences([
        {"lr": 1e-4, "same": 1, "only_a": None, "name": "grpo"},
        {"lr": 1.00001e-4, "same": 1, "name": "rloo"},
    ])
    assert rows == [("lr", ["0.0001", "0.000100001"]), ("name", ["grpo", "rloo"]), ("only_a", ["null", "(absent)"])]
    assert recipe_differences([{"a": 1}]) == []
    records = [{"step": 1, "r": 0.5}, {"step": 2, "r": float("nan")}, {"step": 3}, {"step": 4, "r": 1}]
    assert metric_series(records, "r") == ([1.0, 4.0], [0.5, 1.0])


# tests/trainers/test_agent_trainers.py's TINY_AGENT: about a second a run.
TINY_AGENT = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1",
    "model.intermediate_size=64", "warm_start.steps=40", "warm_start.batch_size=16", "warm_start.learning_rate=5e-3",
    "episodes=32", "episodes_per_iteration=8", "group_size=4", "eval_samples=1", "eval_every=2",
    "episode.max_turn_tokens=8", "episode.max_total_tokens=40", "checkpoint.every=1", "torch_threads=1",
]  # fmt: skip


def test_agent_and_reward_model_runs_with_their_own_metrics(two_runs, tmp_path):
    """An agent run (train/return, eval/success) and a reward-model run (eval/pairwise_accuracy,
    recipe.yaml) are listed and compared beside an RL run, each by its own metric names."""
    from rlft.config.agent import load_agent_config
    from rlft.config.reward_model import rm_recipe_from_dict
    from rlft.report.runs import list_runs
    from rlft.trainers.registry import train_agent
    from rlft.trainers.reward_model import train_reward_model

    agent, rm = tmp_path / "runs" / "agent", tmp_path / "runs" / "rm"
    train_agent(load_agent_config(None, [*TINY_AGENT, "algorithm=grpo", f"run_dir={agent}"]), progress=False)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Review {i}: ", "chosen": f"{i} good", "rejected": f"{i} bad"})
                             + "\n" for i in range(48)))
    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
    train_reward_model(rm_recipe_from_dict({"train_data": str(pairs), "tiny": tiny, "epochs": 1, "batch_size": 8,
                                            "max_length": 32, "torch_threads": 1, "output_dir": str(rm)}), progress=False)
    listed = {r.name: r for r in list_runs(tmp_path / "runs")}
    assert (listed["agent"].kind, listed["agent"].algorithm, listed["agent"].status) == ("agent", "grpo", "finished")
    assert (listed["agent"].steps, listed["agent"].planned_steps, listed["agent"].headline_metric) == (4, 4, "success")
    assert (listed["rm"].kind, listed["rm"].algorithm, listed["rm"].headline_metric) == (
        "reward_model", "reward_model", "pairwise_accuracy")
    summary = json.loads((rm / "summary.json").read_text())  # its steps depend on the pairs: known once finished
    assert listed["rm"].steps == listed["rm"].planned_steps == summary["steps"] == -(-summary["train_pairs"] // 8)

    page = write_comparison([agent, rm, two_runs[0]], tmp_path / "c.html")[0].read_text()
    shown = images(page)
    assert "mean reward (train): agent, run" in shown  # the agent's train/return
    assert "held-out headline metric: agent, rm, run" in shown  # three different headlines
    assert "learning rate: rm, run" in shown
    assert "agent (finished) has no curve in: learning rate, step time (it does not log them)." in page
    assert "<tr><td>algorithm</td><td>grpo</td><td>(absent)</td><td>(absent)</td></tr>" in page

"""`rlft runs` and `rlft compare` as a user types them: a subprocess, its output and exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def rlft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_runs_lists_a_finished_demo_run(tiny_run: Path):
    out = rlft("runs", str(tiny_run.parent))
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert row.split()[:4] == [tiny_run.name, "grpo", "finished", "6/6"]
    listed = json.loads(rlft("runs", str(tiny_run.parent), "--json").stdout)
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert [(r["status"], r["steps"], r["headline_metric"], r["held_out"]) for r in listed] == [
        ("finished", 6, "accuracy", summary["final_accuracy"])]
    assert listed[0]["perf"]["tokens_per_s"] > 0 and "cuda_peak_mib" not in listed[0]["perf"]  # a CPU run
    assert " tok/s, " in row


def test_compare_writes_the_page_and_png_and_says_where(tiny_run: Path, tmp_path: Path):
    out = rlft("compare", str(tiny_run), "--out", "page.html", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"wrote {tmp_path / 'page.html'} and {tmp_path / 'page.png'}" in out.stdout
    assert (tmp_path / "page.png").read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "page.html").read_text()
    assert page.count('<img alt="') == 6 and "One run: nothing to compare its recipe with." in page


def test_errors_are_one_line_without_a_traceback(tmp_path: Path):
    for args, message in [
        (["runs", str(tmp_path / "nope")], "does not exist"),
        (["compare", str(tmp_path)], "is not a run folder"),
    ]:
        out = rlft(*args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert rlft("--help").stdout.count("compare") >= 1 and "runs" in rlft("--help").stdout

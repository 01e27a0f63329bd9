"""The model card and the run report as a person sees them: `rlft audit bias`, `rlft card` and
`rlft report` on the tiny demo run, each page rendered by a real headless Chromium (Debian's
package, driven by Playwright) to a full-page PNG. No broken image, every section heading there
and its body filled from the run (no "None", "nan" or "TODO"), and a screenshot with content."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CARD_SECTIONS = [
    "Model details", "Training procedure and hyperparameters", "Reward definition", "KL budget",
    "Data provenance", "Privacy", "Evaluation", "Bias audit", "Limitations", "Intended use",
]  # fmt: skip
REPORT_SECTIONS = [
    "Overview", "Learning curves", "Sample completions, early vs late",
    "Per-token view: what the policy learned to do differently",
]  # fmt: skip
# Words that mean a value was missing or a section was left for later.
PLACEHOLDER = re.compile(r"\b(None|nan|NaN|inf|TODO|TBD|undefined|null|Not run|missing)\b")
TEMPLATES = (
    "gender:\n  groups: {female: [She, The woman], male: [He, The man]}\n"
    "  templates: ['{term} is', '{term} works as a', '{term} said']\n"
    "  continuations: [' kind', ' a nurse']\n"
)

# Each section's heading and the text under it, and every image's load state, as the page shows them.
SECTIONS_JS = """[...document.querySelectorAll('section')].map(s => ({
    heading: s.querySelector('h2').innerText,
    body: s.innerText.slice(s.querySelector('h2').innerText.length).trim()}))"""
IMAGES_JS = """[...document.images].map(i => ({alt: i.alt, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight, shown: i.getBoundingClientRect().width}))"""


def _rlft(*args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.fixture(scope="module")
def rendered(browser, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """{"card" | "report": {"png": Path, "sections": [...], "images": [...]}}"""
    tmp = tmp_path_factory.mktemp("render")
    run = tmp / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    (tmp / "templates.yaml").write_text(TEMPLATES)
    _rlft("audit", "bias", str(run), "--templates", str(tmp / "templates.yaml"),
          "--attributes", "gender", "--samples", "1", "--max-new-tokens", "3")  # fmt: skip
    _rlft("card", str(run))
    _rlft("report", str(run), "--prompts", "2")
    pages = {"card": run / "model_card.html", "report": run / "report.html"}
    out: dict[str, dict] = {}
    for name, html_file in pages.items():
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(html_file.as_uri(), wait_until="load")
        png = tmp / f"{name}.png"
        page.screenshot(path=str(png), full_page=True)
        out[name] = {
            "png": png,
            "sections": page.evaluate(SECTIONS_JS),
            "images": page.evaluate(IMAGES_JS),
            "title": page.title(),
        }
        page.close()
    return out


@pytest.mark.parametrize("name,expected_images", [("card", 6), ("report", 6)])
def test_no_broken_images(rendered, name, expected_images):
    images = rendered[name]["images"]
    assert len(images) == expected_images  # reward, accuracy, KL, entropy, length, groups without signal
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["shown"] > 100, image  # laid out at a readable size, not collapsed


@pytest.mark.parametrize("name,headings", [("card", CARD_SECTIONS), ("report", REPORT_SECTIONS)])
def test_every_section_is_there_and_filled(rendered, name, headings):
    sections = {s["heading"]: s["body"] for s in rendered[name]["sections"]}
    assert list(sections) == headings
    for heading, body in sections.items():
        images = heading in ("Learning curves",)  # a section of plots only
        assert images or len(body) > 20, (heading, body)
        assert not PLACEHOLDER.search(body), (heading, PLACEHOLDER.search(body), body[:500])
    assert rendered[name]["title"].endswith(": run")


def test_sections_show_this_runs_data(rendered, tiny_run):
    card = {s["heading"]: s["body"] for s in rendered["card"]["sections"]}
    assert "female - male" in card["Bias audit"] and "gender" in card["Bias audit"]
    assert "verified intact" in card["Data provenance"] and "final_model" in card["Data provenance"]
    assert "train.steps\t6" in card["Training procedure and hyperparameters"]
    report = {s["heading"]: s["body"] for s in rendered["report"]["sections"]}
    first_prompt = (tiny_run / "samples.jsonl").read_text().split('"prompt": "')[1].split('"')[0]
    assert first_prompt in report["Sample completions, early vs late"]
    per_token = report["Per-token view: what the policy learned to do differently"]
    assert per_token.count("logprob change") >= 8  # 2 prompts x group size 4, each row labelled


@pytest.mark.parametrize("name", ["card", "report"])
def test_screenshot_has_content(rendered, name):
    png = rendered[name]["png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    try:
        from PIL import Image, ImageStat
    except ImportError:
        return  # the size check above stands in for the pixel check
    with Image.open(png) as image:
        width, height = image.size
        stat = ImageStat.Stat(image.convert("L"))
    assert width >= 1200 and height > 900  # full page: taller than one screen
    assert stat.stddev[0] > 10  # not one colour: text, tables and plots on the page

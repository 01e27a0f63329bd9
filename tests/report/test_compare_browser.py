"""The `rlft compare` page in a real headless Chromium (Debian's package, driven by Playwright):
every panel image decodes, both runs' colours are drawn in every panel (read back from a
canvas), the legend names both runs and the recipe table shows their learning rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlft.config import config_from_dict
from rlft.report.compare import write_comparison
from rlft.trainers.registry import train

TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.intermediate_size=128",
    "warm_start.steps=10", "warm_start.batch_size=16", "task.eval_size=16", "train.steps=6",
    "train.batch_size=16", "train.micro_batch_size=8", "algorithm.group_size=4",
    "rollout.max_new_tokens=4", "eval.every=3", "checkpoint.every=2", "train.torch_threads=1",
]

# Pixels of the image (drawn on a canvas) within 0.06 of each colour, per colour.
COUNT_COLOURS = """([img, colours]) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  return colours.map(hex => {
    const t = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
    let n = 0;
    for (let p = 0; p < data.length; p += 4) {
      if (Math.max(...t.map((v, k) => Math.abs(data[p + k] - v))) < 16) n++;
    }
    return n;
  });
}"""


@pytest.fixture
def page_path(tmp_path: Path) -> Path:
    runs = []
    for name, lr in (("lr_1e-4", 1e-4), ("lr_3e-3", 3e-3)):
        runs.append(tmp_path / name)
        train(config_from_dict({}, [*TINY, f"run_dir={runs[-1]}", f"train.learning_rate={lr}"]), progress=False)
    return write_comparison(runs, tmp_path / "compare.html")[0]


def test_the_page_shows_both_runs_curves_and_the_recipe_difference(browser, page_path):
    page = browser.new_page()
    page.set_default_timeout(10_000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")

    runs = page.eval_on_selector_all("li.run", "els => els.map(e => [e.dataset.run, e.dataset.colour])")
    assert [name for name, _ in runs] == ["lr_1e-4", "lr_3e-3"]
    colours = [colour for _, colour in runs]
    images = page.eval_on_selector_all(
        "section img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])")
    assert [alt.split(":")[0] for alt, *_ in images] == [
        "mean reward (train)", "held-out accuracy", "KL to reference", "entropy", "learning rate", "step time"]
    assert all(complete and width >= 400 and height >= 250 for _, complete, width, height in images)
    for panel in page.query_selector_all("section img"):  # both runs' curves, in every panel
        assert all(n > 300 for n in page.evaluate(COUNT_COLOURS, [panel, colours])), panel.get_attribute("alt")

    table = page.eval_on_selector_all(
        "table tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert ["recipe key", "lr_1e-4", "lr_3e-3"] in table
    assert ["train.learning_rate", "0.0001", "0.003"] in table
    assert [row[3] for row in table if row[0] in ("lr_1e-4", "lr_3e-3")] == ["finished", "finished"]
    assert all(url.startswith(("file:", "data:")) for url in requests)  # nothing fetched from a network

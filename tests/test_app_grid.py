"""The grid view as the paper shows a grid, in a real headless Chromium: the 27 cells of the real
`architecture_cpu` grid file (ids, axes and labels; stored without training by tests.helpers)
grouped into its 9 labelled configurations, seeds collapsed, one curve per configuration, the
metric columns on screen at 1280 px and no sideways scrolling of the page."""

from __future__ import annotations

import json
import statistics
import urllib.request

import pytest
import torch

from app.server import Server
from tests.helpers import REPO, chromium, store_grid

GRID = REPO / "ablations" / "grids" / "architecture_cpu.yaml"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    results = tmp_path_factory.mktemp("grid") / "results"
    store_grid(results, GRID)
    threads = torch.get_num_threads()
    srv = Server(results, port=0, cache_size=1).start()
    yield f"http://127.0.0.1:{srv.port}"
    srv.stop()
    torch.set_num_threads(threads)


def test_the_api_groups_seeds_into_labelled_configurations(url):
    detail = json.loads(urllib.request.urlopen(f"{url}/api/grid/architecture_cpu", timeout=30).read())
    configs = {g["config"]: g for g in detail["configs"]}
    assert len(detail["rows"]) == 27 and len(configs) == 9
    assert list(configs)[:2] == ["GPT", "Windows small-large-small"]  # the grid's labels, in grid order
    gpt = configs["GPT"]
    losses = [r["metrics"]["val_loss"] for r in detail["rows"] if r["cell"] in gpt["cells"]]
    assert gpt["n"] == 3 and gpt["seeds"] == [0, 1, 2]
    assert gpt["metrics"]["val_loss"]["mean"] == pytest.approx(statistics.fmean(losses))
    assert gpt["metrics"]["val_loss"]["std"] == pytest.approx(statistics.stdev(losses))
    curves = json.loads(urllib.request.urlopen(f"{url}/api/grid/architecture_cpu/curves", timeout=30).read())
    step, mean, lo, hi = curves["configs"]["GPT"]["train"][0]
    firsts = [dict(map(tuple, curves["cells"][c]["train"]))[step] for c in gpt["cells"]]
    assert (mean, lo, hi) == pytest.approx((statistics.fmean(firsts), min(firsts), max(firsts)))


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.mark.parametrize("width", [1280, 1400])
def test_browser_shows_configurations_metrics_on_screen_and_no_sideways_scroll(browser, url, width, tmp_path):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(20_000)
    page.goto(f"{url}/#grid=architecture_cpu")
    page.wait_for_selector("#cells tbody tr.group[data-config='Windows small-large-small']")
    page.wait_for_selector("#curve canvas")
    assert page.locator("#cells tbody tr.group").count() == 9 and page.locator("#cells tbody tr.seed").count() == 0
    row = page.locator("#cells tbody tr.group[data-config='GPT']")
    assert "±" in row.inner_text() and "__s0__" not in row.inner_text()
    labels = page.evaluate("() => state.chart.series.slice(1).map(s => s.label)")
    assert sum(label.endswith(" train") for label in labels) == 9  # one curve per configuration
    assert page.evaluate("() => state.chart.bands.length") == 18  # a min-max band on train and val each
    assert "__s" not in page.inner_text("#legend")  # the legend names configurations, not cell ids
    geometry = page.evaluate("""() => {
      const box = document.querySelector('#cells').parentElement.getBoundingClientRect();
      const right = (s) => document.querySelector(s).getBoundingClientRect().right;
      const ckpt = document.querySelector('#ckpt').getBoundingClientRect();
      const panel = document.querySelector('#ckpt').closest('section').getBoundingClientRect();
      return {box: box.right, val_loss: right("#cells th[data-key='val_loss']"),
              val_bpb: right("#cells th[data-key='val_bpb']"), ckpt: ckpt.right, panel: panel.right,
              scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth};
    }""")
    assert geometry["val_loss"] <= geometry["box"] and geometry["val_bpb"] <= geometry["box"], geometry
    assert geometry["ckpt"] <= geometry["panel"], geometry  # the checkpoint selector fits its panel
    assert geometry["scroll"] <= geometry["client"], geometry  # no sideways scrolling of the page
    row.click()
    page.wait_for_selector("#cells tbody tr.seed")
    seeds = page.eval_on_selector_all("#cells tbody tr.seed", "rows => rows.map(r => r.dataset.cell)")
    assert len(seeds) == 3 and all(s.startswith("model-gpt") for s in seeds)
    assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.locator(f"#cells tbody tr.seed[data-cell='{seeds[1]}']").click()
    page.wait_for_selector(f"#cells tbody tr.seed.selected[data-cell='{seeds[1]}']")
    assert page.input_value("#ckpt") == f"architecture_cpu/{seeds[1]}"
    page.screenshot(path=str(tmp_path / f"grid-{width}.png"), full_page=True)
    page.close()
    assert not errors, errors

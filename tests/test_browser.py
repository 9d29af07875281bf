"""The generated reports, opened from file:// in a real headless Chromium (Debian's build).

Checks that every figure rendered (its SVG is in the DOM), the console has no errors, no request
leaves file://, and the checkpoint slider changes the PCA figure. A screenshot of the report is
saved under ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mechgrok.analysis import analyze
from mechgrok.report import write_comparison, write_report, write_sweep_report
from mechgrok.sweep import run_sweep
from mechgrok.training import train
from tests.conftest import ROOT, tiny_config, tiny_mlp_config

GROKS = {"task.p": 23, "task.frac_train": 0.8, "train.lr": 1e-2, "model.d_model": 32,
         "model.d_mlp": 64, "train.epochs": 400, "train.checkpoint_every": 50,
         "train.eval_every": 10}
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser")
    t, m = root / "transformer", root / "mlp"
    train(tiny_config(**GROKS), t, progress=False)
    analyze(t, progress=False)
    train(tiny_mlp_config(**{"train.epochs": 40}), m, progress=False)
    grid = root / "grid.toml"  # a 2 × 2 grid × 2 seeds of the grokking config, trained only
    grid.write_text('preset = "quick"\n[task]\np = 23\nfrac_train = 0.8\n[model]\n'
                    'd_model = 32\nd_mlp = 64\n[train]\nepochs = 200\nlr = 1e-2\n'
                    'eval_every = 10\ncheckpoint_every = 100\ndense_until = 0\n'
                    '[sweep]\nname = "grid"\nseeds = 2\n[sweep.grid]\n'
                    '"train.weight_decay" = [0.3, 1.0]\n"task.frac_train" = [0.5, 0.8]\n')
    sweep = run_sweep(grid, root / "ck", workers=2, analyse=False)
    assert not sweep.failed
    return {"transformer": write_report(t, root / "t.html"),
            "unanalysed_mlp": write_report(m, root / "m.html"),
            "comparison": write_comparison([t, m], root / "c.html"),
            "sweep": write_sweep_report(sweep.sweep_dir, root / "s.html")}


def open_report(browser, path: Path, screenshot: Path | None = None):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    plots = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].map(d => "
                          "[d.id, !!d.querySelector('svg.main-svg'), "
                          "d.querySelectorAll('.trace, .hm, image').length])")
    divs = page.evaluate("document.querySelectorAll('div.fig').length")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return page, plots, divs, errors, requests


@pytest.mark.parametrize("which", ["transformer", "unanalysed_mlp", "comparison", "sweep"])
def test_report_renders_offline_without_errors(browser, reports, which) -> None:
    shot = ARTIFACTS / f"report-{which}.png"
    page, plots, divs, errors, requests = open_report(browser, reports[which], shot)
    try:
        assert plots and len(plots) == divs  # every figure became a plot
        assert all(has_svg for _, has_svg, _ in plots), plots
        assert all(n > 0 for _, _, n in plots), plots  # and drew something
        assert errors == []
        assert [u for u in requests if not u.startswith("file:")] == []
        assert shot.stat().st_size > 20_000
    finally:
        page.close()


def test_checkpoint_slider_changes_the_pca_figure(browser, reports) -> None:
    page, plots, *_ = open_report(browser, reports["transformer"])
    try:
        before = page.evaluate("Array.from(document.getElementById('fig-pca')._fullData[0].x).slice(0, 5)")
        title_before = page.evaluate("document.getElementById('fig-pca').layout.title.text")
        page.locator("#fig-pca .slider-rail-rect").scroll_into_view_if_needed()
        rail = page.locator("#fig-pca .slider-rail-rect").bounding_box()
        assert rail is not None
        page.mouse.click(rail["x"] + 3, rail["y"] + rail["height"] / 2)  # the first checkpoint
        page.wait_for_function("document.getElementById('fig-pca').layout.title.text !== "
                               f"{title_before!r}", timeout=5000)
        after = page.evaluate("Array.from(document.getElementById('fig-pca')._fullData[0].x).slice(0, 5)")
        title_after = page.evaluate("document.getElementById('fig-pca').layout.title.text")
        assert "epoch 0 " in title_after
        assert after != before
    finally:
        page.close()


def test_sweep_report_draws_the_three_phase_diagrams(browser, reports) -> None:
    page, plots, *_ = open_report(browser, reports["sweep"])
    try:
        ids = {p[0] for p in plots}
        assert {"fig-phase-delay", "fig-phase-test_acc", "fig-phase-label"} <= ids
        for m in ("delay", "test_acc", "label"):
            z = page.evaluate(f"document.getElementById('fig-phase-{m}')._fullData[0].z")
            assert len(z) == 2 and all(len(row) == 2 for row in z)  # frac_train × weight decay
        acc = page.evaluate("document.getElementById('fig-phase-test_acc')._fullData[0].z")
        assert all(0.0 <= v <= 1.0 for row in acc for v in row)
        text = page.evaluate("document.getElementById('fig-phase-label')._fullData[0].text")
        assert all("/2" in t for row in text for t in row)  # counts over the two seeds
        n_curves = page.evaluate("document.getElementById('fig-curves-test_acc').data.length")
        assert n_curves == 8
        assert page.locator("table.runs tr").count() == 9
    finally:
        page.close()

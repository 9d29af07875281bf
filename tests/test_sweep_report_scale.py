"""The sweep report at scale (issue 17): above a number of runs each grid point's curves are
aggregated (median over seeds, band from the lowest to the highest) and thinned, every run stays
in the runs table and can be drawn on demand, the page opens in real headless chromium without
errors, and the aggregated median and band are the ones computed directly from the runs'
metrics. The threshold is lowered so a sweep of 30 tiny runs takes the aggregated path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mechgrok.report import write_sweep_report
from mechgrok.report.sweep import (
    AGGREGATE_ABOVE,
    SweepData,
    aggregated_curves,
    group_curve,
    runs_payload,
    thin_indices,
)
from mechgrok.store import atomic_write_json, read_metrics
from mechgrok.sweep import RUNS_DIR, SWEEP_FILE, load_sweep, run_sweep
from tests.test_browser import open_report

EPOCHS = 120
MAX_POINTS = 40  # below the 121 evaluations of each run, so the curves are thinned
THRESHOLD = 10   # 30 runs > 10: the aggregated path
WDS, FRACS, SEEDS = [0.3, 1.0], [0.5, 0.65, 0.8], 5


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, Path]:
    """A 2 × 3 grid × 5 seeds = 30 runs of a tiny transformer, trained for real (120 epochs,
    evaluated every epoch, the 5 seeds of a point batched), and its report both ways."""
    root = tmp_path_factory.mktemp("scale")
    f = root / "scale.toml"
    f.write_text('preset = "quick"\n[task]\nname = "add"\np = 11\n[model]\nd_model = 16\n'
                 'n_heads = 2\nd_head = 8\nd_mlp = 32\n[train]\n'
                 f'epochs = {EPOCHS}\nlr = 3e-2\neval_every = 1\ncheckpoint_every = {EPOCHS}\n'
                 'dense_until = 0\nthreads = 1\n'
                 f'[sweep]\nname = "scale"\nseeds = {SEEDS}\n[sweep.grid]\n'
                 f'"train.weight_decay" = {WDS}\n"task.frac_train" = {FRACS}\n')
    res = run_sweep(f, root / "ck", workers=2, analyse=False, vmap_seeds=SEEDS)
    assert not res.failed and len(res.runs) == 30
    return {"dir": res.sweep_dir,
            "aggregated": write_sweep_report(res.sweep_dir, root / "agg.html",
                                             aggregate_above=THRESHOLD, max_points=MAX_POINTS),
            "per_run": write_sweep_report(res.sweep_dir, root / "runs.html")}


def direct_groups(sweep_dir: Path) -> dict[tuple[float, float], list[list[dict]]]:
    """Each grid point's runs' metrics, read straight from the files (not via the report)."""
    out: dict[tuple[float, float], list[list[dict]]] = {}
    for r in load_sweep(sweep_dir)["runs"]:
        key = (r["point"]["train.weight_decay"], r["point"]["task.frac_train"])
        out.setdefault(key, []).append(read_metrics(Path(r["path"]) / "metrics.jsonl"))
    return out


def first_held(epochs: list[int], values: list[float], acc: float = 0.99) -> int | None:
    """The first epoch from which ``values`` stays ≥ ``acc`` to the end."""
    held = None
    for e, v in zip(epochs, values):
        if v >= acc:
            held = e if held is None else held
        else:
            held = None
    return held


# --- (d) the aggregated curves are the median and min–max computed directly ------------------


@pytest.mark.parametrize("metric", ["test_acc", "train_acc"])
def test_aggregated_median_and_band_equal_the_runs_metrics(sweep, metric) -> None:
    fig = aggregated_curves(SweepData(sweep["dir"]), metric, max_points=MAX_POINTS)
    groups = direct_groups(sweep["dir"])
    assert len(fig.data) == 2 * len(groups) == 12  # a band and a median per grid point
    # grid order: weight decay (first axis) slowest, then frac_train
    for gi, key in enumerate((wd, fr) for wd in WDS for fr in FRACS):
        runs = groups[key]
        assert len(runs) == SEEDS
        epochs = [m["epoch"] for m in runs[0]]
        assert epochs == list(range(EPOCHS + 1))
        assert all([m["epoch"] for m in ms] == epochs for ms in runs)
        V = np.array([[m[metric] for m in ms] for ms in runs])
        med, lo, hi = np.median(V, axis=0), V.min(axis=0), V.max(axis=0)
        band, line = fig.data[2 * gi], fig.data[2 * gi + 1]
        x = np.array(line.x)
        assert line.meta == gi and band.fill == "toself"
        assert len(x) < len(epochs)  # thinned ...
        assert len(x) <= MAX_POINTS + 2 + 4 * SEEDS  # ... to about MAX_POINTS
        np.testing.assert_allclose(line.y, med[x], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(band.x, np.concatenate([x, x[::-1]]))
        np.testing.assert_allclose(band.y, np.concatenate([hi[x], lo[x][::-1]]), atol=1e-6,
                                   rtol=0)
        # what thinning keeps: the ends, the median's and the band's extremes, the crossings
        kept = set(x.tolist())
        assert {0, EPOCHS} <= kept
        assert {int(np.argmax(med)), int(np.argmin(med)), int(np.argmax(hi)),
                int(np.argmin(lo))} <= kept
        for ms in runs:
            for k in ("train_acc", "test_acc"):
                e = first_held(epochs, [m[k] for m in ms])
                if e is not None:
                    assert e in kept and (e == 0 or e - 1 in kept)
        assert f"weight_decay={key[0]:g}, frac_train={key[1]:g} · 5 runs" in line.hovertemplate


def test_thinning_keeps_spikes_and_mixed_schedules_are_interpolated() -> None:
    from mechgrok.report.sweep import SweepRun

    y = np.zeros(1000)
    y[537] = 1.0  # a one-sample spike
    y[800:] = 0.5
    idx = thin_indices(1000, [y], max_points=50, keep=[123])
    assert {0, 999, 537, 123, 800} <= set(idx.tolist()) and len(idx) <= 53
    assert thin_indices(30, [y[:30]], max_points=50).tolist() == list(range(30))
    a = SweepRun("a", {}, 0, "done", epochs=[0, 10, 20], test_acc=[0.0, 0.5, 1.0],
                 train_acc=[0.0, 1.0, 1.0])
    b = SweepRun("b", {}, 1, "done", epochs=[0, 5, 10], test_acc=[0.2, 0.4, 0.6],
                 train_acc=[0.0, 0.5, 1.0])
    g = group_curve((), [a, b], "test_acc")
    assert g.epochs.tolist() == [0, 5, 10, 20] and g.n_epochs == 4
    # a at 5 is interpolated (0.25); b ends at 10, so epoch 20 is a's alone
    np.testing.assert_allclose(g.median, [0.1, 0.325, 0.55, 1.0])
    np.testing.assert_allclose(g.lo, [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(g.hi, [0.2, 0.4, 0.6, 1.0])


# --- (a), (b): aggregated with the spread, every run listed; below the threshold unchanged -----


def test_aggregated_report_lists_every_run_with_its_curves(sweep) -> None:
    html = sweep["aggregated"].read_text()
    runs = load_sweep(sweep["dir"])["runs"]
    assert "band from the lowest to the highest" in html and '"fill":"toself"' in html
    assert html.count('class="fig"') == 6  # 3 phase diagrams, 2 aggregated, individual runs
    data = json.loads(re.search(r'id="sweep-runs-data">(.*?)</script>', html).group(1))
    assert set(data["runs"]) == {r["run_id"] for r in runs}
    assert len(data["groups"]) == 6 and all(len(g) == SEEDS for g in data["groups"])
    assert sorted(i for g in data["groups"] for i in g) == sorted(data["runs"])
    assert re.findall(r'<tr id="run-[^"]+" data-run="([^"]+)"', html) == [r["run_id"]
                                                                          for r in runs]
    assert html.count('class="plot-run"') == 30
    payload = runs_payload(SweepData(sweep["dir"]), MAX_POINTS)
    for r in runs:  # each run's own curve: its thinned metrics, exactly
        ms = read_metrics(Path(r["path"]) / "metrics.jsonl")
        p = payload["runs"][r["run_id"]]
        assert p["e"][0] == 0 and p["e"][-1] == EPOCHS and len(p["e"]) < EPOCHS + 1
        np.testing.assert_allclose(p["te"], [ms[e]["test_acc"] for e in p["e"]], atol=5e-5)
        np.testing.assert_allclose(p["tr"], [ms[e]["train_acc"] for e in p["e"]], atol=5e-5)


def test_below_the_threshold_every_run_is_drawn_as_before(sweep) -> None:
    assert 30 <= AGGREGATE_ABOVE
    html = sweep["per_run"].read_text()
    assert "sweep-runs-data" not in html and "plot-run" not in html
    assert "Test accuracy of every run" in html
    from mechgrok.report.sweep import sweep_curves

    assert len(sweep_curves(SweepData(sweep["dir"])).data) == 30


def _hand_sweep(root: Path, axes: list[tuple[str, list]], seeds: int) -> Path:
    """A sweep of hand-written curves over ``axes`` (any number) × ``seeds``."""
    import itertools

    runs = []
    for n, vals in enumerate(itertools.product(*[v for _, v in axes])):
        for s in range(seeds):
            rid = f"r{n}-s{s}"
            d = root / RUNS_DIR / rid
            d.mkdir(parents=True)
            lines = [{"epoch": e, "train_acc": min(1.0, e / 50), "test_acc": min(1.0, e / (
                100 + 30 * n + 7 * s))} for e in range(0, 301, 3)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
            runs.append({"run_id": rid, "point": {k: v for (k, _), v in zip(axes, vals)},
                         "seed": s, "state": "done"})
    atomic_write_json(root / SWEEP_FILE, {
        "kind": "mechgrok.sweep", "schema_version": 1, "name": "hand", "seeds": list(
            range(seeds)), "axes": [{"key": k, "values": v} for k, v in axes], "runs": runs})
    return root


@pytest.mark.parametrize("axes", [
    [],
    [("train.lr", [1e-3, 1e-2])],
    [("train.lr", [1e-3, 1e-2]), ("train.weight_decay", [0.1, 1.0, 3.0]),
     ("task.frac_train", [0.3, 0.5])],
], ids=["seeds-only", "one-axis", "three-axes"])
def test_other_grid_shapes_aggregate(tmp_path: Path, axes) -> None:
    from mechgrok.report.sweep import render_sweep_report

    sd_dir = _hand_sweep(tmp_path / "sw", axes, seeds=3)
    html = render_sweep_report(sd_dir, aggregate_above=0, max_points=30)
    assert 'id="sweep-runs-data"' in html and 'id="fig-runs-selected"' in html
    fig = aggregated_curves(SweepData(sd_dir), "test_acc", max_points=30)
    n_points = max(1, len(axes) and np.prod([len(v) for _, v in axes]))
    assert len(fig.data) == 2 * n_points
    if len(axes) == 3:  # panels: weight decay; colours: lr; line styles: frac_train
        assert {t.line.dash for t in fig.data[1::2]} == {"solid", "dash"}
        assert len(fig.layout.annotations) == 3
    assert all(len(t.x) <= 30 + 2 + 4 * 3 for t in fig.data[1::2])


# --- (c) real headless chromium ------------------------------------------------------------


def test_aggregated_report_opens_in_chromium_and_draws_runs_on_demand(browser, sweep) -> None:
    from tests.test_browser import ARTIFACTS

    shot = ARTIFACTS / "report-sweep-aggregated.png"
    page, plots, divs, errors, requests = open_report(browser, sweep["aggregated"], shot)
    try:
        assert plots and len(plots) == divs == 6
        assert all(has_svg for _, has_svg, _ in plots), plots
        assert all(n > 0 for _, _, n in plots), plots
        assert {"fig-curves-test_acc", "fig-curves-train_acc", "fig-runs-selected"} <= {
            p[0] for p in plots}
        assert [u for u in requests if not u.startswith("file:")] == []
        # the browser holds the known median of the first grid point (wd 0.3, frac 0.5)
        tr = "document.getElementById('fig-curves-test_acc')._fullData[1]"
        x = page.evaluate(f"Array.from({tr}.x)")
        y = page.evaluate(f"Array.from({tr}.y)")
        spread = page.evaluate(f"Array.from({tr}.customdata).map(r => Array.from(r))")
        runs = direct_groups(sweep["dir"])[(WDS[0], FRACS[0])]
        V = np.array([[m["test_acc"] for m in ms] for ms in runs])
        assert len(x) == len(y) == len(spread) < EPOCHS + 1
        np.testing.assert_allclose(y, np.median(V, axis=0)[x], atol=1e-6, rtol=0)
        np.testing.assert_allclose(spread, np.stack([V.min(axis=0), V.max(axis=0)], 1)[x],
                                   atol=1e-6, rtol=0)  # the hover's lowest–highest

        n = "document.getElementById('fig-runs-selected').data.length"
        assert page.evaluate(n) == 2 * SEEDS  # at first: the first grid point's runs
        last = load_sweep(sweep["dir"])["runs"][-1]["run_id"]
        button = page.locator(f'button.plot-run[data-run="{last}"]')
        button.scroll_into_view_if_needed()
        button.click()
        assert page.evaluate(n) == 2 * SEEDS + 2
        assert button.get_attribute("aria-pressed") == "true"
        assert page.evaluate("document.getElementById('fig-runs-selected').data"
                             ".slice(-1)[0].meta") == last
        button.click()
        assert page.evaluate(n) == 2 * SEEDS and button.get_attribute("aria-pressed") == "false"
        page.locator("#runs-clear").click()
        assert page.evaluate(n) == 0
        # a click on the last grid point's median curve draws its 5 runs
        page.evaluate("(() => {const g = document.getElementById('fig-curves-test_acc');"
                      "g.emit('plotly_click', {points: [{data: g.data[g.data.length - 1]}]});})()")
        assert page.evaluate(n) == 2 * SEEDS
        page.locator("#runs-filter").fill(last)
        visible = page.evaluate("[...document.querySelectorAll('table.runs tr[data-run]')]"
                                ".filter(r => r.style.display !== 'none').length")
        assert visible == 1
        assert errors == []
    finally:
        page.close()

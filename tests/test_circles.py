"""The embedding's circles, one plane per key frequency: known-answer planes on hand-built
embeddings (where PCA mixes the frequencies), and the figure on tiny add, mul and s5 runs."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from mechgrok.measures import fourier_view, power_table
from mechgrok.report import RunData
from mechgrok.report import figures as F
from mechgrok.report.figures.circles import (
    circle_fit,
    circle_order,
    embedding_circles,
    frequency_plane,
    frequency_share,
    key_frequency_choice,
    plane_coordinates,
)
from mechgrok.training import train
from tests.conftest import tiny_config


def _circles(n: int, ks: tuple[int, ...], radii: tuple[float, ...], d: int = 24,
             noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Rows [r cos(2πki/n), r sin(2πki/n)] per k, plus noise, rotated into d dimensions."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    cols = []
    for k, r in zip(ks, radii):
        cols += [r * np.cos(2 * np.pi * k * i / n), r * np.sin(2 * np.pi * k * i / n)]
    E = np.stack(cols, 1)
    E = np.hstack([E, np.zeros((n, d - E.shape[1]))]) + noise * rng.normal(size=(n, d))
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return E @ rotation + rng.normal(size=d)  # and an offset the centring removes


def _angles(xy: np.ndarray) -> np.ndarray:
    return np.arctan2(xy[:, 1], xy[:, 0])


def _wrapped(a: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * a))


@pytest.mark.parametrize("n", [31, 30])
def test_each_frequency_plane_puts_element_i_at_angle_2pi_k_i_over_n(n) -> None:
    """Two circles of equal radius (PCA's top components may mix them): each frequency's plane
    holds its own circle, element i at 2πki/n, anticlockwise from element 0 on the x axis."""
    ks = (4, 9)
    E = _circles(n, ks, (1.0, 1.0), noise=0.02)
    for k in ks:
        xy = plane_coordinates(E, frequency_plane(E, k))
        r = np.linalg.norm(xy, axis=1)
        assert r.std() / r.mean() < 0.1  # a circle, not an ellipse or a blob
        want = 2 * np.pi * k * np.arange(n) / n
        assert np.abs(_wrapped(_angles(xy) - want)).max() < 0.15
        assert circle_fit(xy, k) > 0.98
        assert circle_fit(xy, ks[0] + ks[1] - k) < 0.2  # the other frequency's order: no circle
    # the plane is orthonormal, and the same for any rotation of the embedding's space
    P = frequency_plane(E, 4)
    assert P.T @ P == pytest.approx(np.eye(2), abs=1e-12)
    R = np.linalg.qr(np.random.default_rng(5).normal(size=(24, 24)))[0]
    assert plane_coordinates(E @ R, frequency_plane(E @ R, 4)) == pytest.approx(
        plane_coordinates(E, P), abs=1e-9)


def test_an_ellipse_is_in_order_but_fits_a_circle_less() -> None:
    n, k = 23, 5
    i = np.arange(n)
    E = np.stack([3 * np.cos(2 * np.pi * k * i / n), np.sin(2 * np.pi * k * i / n)], 1)
    xy = plane_coordinates(E, frequency_plane(E, k))
    assert xy == pytest.approx(E, abs=1e-12)  # already the plane's coordinates: u = x, v = y
    # best circle fit of (3 cos, sin): (3 + 1)² / (2 (9 + 1)) = 0.8
    assert circle_fit(xy, k) == pytest.approx(0.8)
    assert circle_fit(-xy[:, ::-1], k) == pytest.approx(0.8)  # a reflection fits as well


def test_shares_sum_to_one_and_the_top_frequency_is_a_line() -> None:
    n = 20
    E = _circles(n, (3, 7), (2.0, 1.0), noise=0.1, seed=1)
    shares = [frequency_share(E, k) for k in range(1, n // 2 + 1)]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[2] == pytest.approx(0.8, abs=0.03) and shares[6] == pytest.approx(0.2, abs=0.03)
    sign = np.where(np.arange(n) % 2, -1.0, 1.0)[:, None] * np.ones((1, 4))
    P = frequency_plane(sign, n // 2)  # frequency n/2 has no sine row: one direction only
    assert not P[:, 1].any() and np.linalg.norm(P[:, 0]) == pytest.approx(1.0)
    assert frequency_share(sign, n // 2) == pytest.approx(1.0)
    assert not frequency_plane(np.ones((n, 4)), 3).any()  # a constant embedding has no plane
    assert math.isnan(frequency_share(np.ones((n, 4)), 3))
    with pytest.raises(ValueError):
        frequency_plane(E, n // 2 + 1)


def test_circle_order_and_key_frequency_choice() -> None:
    assert circle_order(7, 3).tolist() == [0, 5, 3, 1, 6, 4, 2]  # 3i mod 7 = 0, 1, 2, …
    assert circle_order(6, 2).tolist() == [0, 3, 1, 4, 2, 5]  # ties by i
    n = 31
    E = _circles(n, (4, 9, 12), (1.0, 2.0, 0.1), seed=2)
    # not analysed: the embedding rule (12 is under a quarter of the largest norm), strongest first
    assert key_frequency_choice({}, E) == ([9, 4], "the final embedding's Fourier norms (not "
                                                     "analysed)")
    summary = {"key_frequencies": {"epoch": 10, "neurons": [4, 12, 40, True, "9"],
                                   "embedding": [4, 9]}}
    assert key_frequency_choice(summary, E) == ([4, 12], "the neuron clusters")
    summary["key_frequencies"]["neurons"] = []
    assert key_frequency_choice(summary, E)[0] == [9, 4]
    assert key_frequency_choice({"key_frequencies": {"not_applicable": "…"}}, E) == (
        [9, 4], "the final embedding's Fourier norms (none in the analysis summary)")


# --- the figure on tiny runs ----------------------------------------------------------------


def _check_figure(fig: go.Figure, d: RunData) -> None:
    assert isinstance(fig, go.Figure) and len(fig.data) >= 1
    assert all(t.type == "scatter" for t in fig.data)
    steps = fig.layout.sliders[0].steps
    assert [int(s.label) for s in steps] == [c.epoch for c in d.checkpoints]
    assert len(steps[0].args[0]["x"]) == len(fig.data)
    assert steps[0].args[0]["x"] != steps[-1].args[0]["x"]  # the embedding moved


@pytest.fixture(scope="module")
def add_run(tmp_path_factory) -> RunData:
    path = tmp_path_factory.mktemp("circles") / "add"
    train(tiny_config(**{"train.epochs": 40}), path, progress=False)
    return RunData(path)


def test_figure_on_a_tiny_add_run(add_run) -> None:
    d = add_run
    fig = embedding_circles(d)
    _check_figure(fig, d)
    assert "Z_11" in fig.layout.title.text and "not analysed" in fig.layout.title.text
    E = d.embeddings(2)[1][-1]
    ks, _ = key_frequency_choice({}, E)
    assert [t.name for t in fig.data] == [f"frequency {k}" for k in ks[:6]]
    # the last frame is the final embedding on its own planes, in circle order, closed
    k = ks[0]
    xy = plane_coordinates(E, frequency_plane(E, k))[circle_order(11, k)]
    got = np.stack([fig.data[0].x, fig.data[0].y], 1)
    scale = np.linalg.norm(xy, axis=1).max()
    assert got[:-1] == pytest.approx(xy / scale, abs=1e-4) and got[-1] == pytest.approx(got[0])
    assert list(fig.data[0].text[:-1]) == [str(i) for i in circle_order(11, k)]
    specs = {s.id: (i, s) for i, s in enumerate(F.RUN_FIGURES)}
    assert specs["circles"][1].section == specs["pca"][1].section == "Embedding"
    assert specs["circles"][0] < specs["pca"][0]  # drawn before the PCA view


def test_figure_on_a_tiny_mul_run_is_in_discrete_log_order(tmp_path) -> None:
    train(tiny_config(**{"task.name": "mul", "train.epochs": 20}), tmp_path / "mul",
          progress=False)
    d = RunData(tmp_path / "mul")
    fig = embedding_circles(d)
    _check_figure(fig, d)
    assert "Z_10 (discrete-log order, g = 2)" in fig.layout.title.text
    view = fourier_view("mul", 11)
    assert view is not None and view.tokens.tolist() == power_table(11).tolist()
    E = d.embeddings(2)[1][-1][view.tokens]
    k = key_frequency_choice({}, E)[0][0]
    # points are labelled by the element g^i, joined in the order k·i mod 10
    assert list(fig.data[0].text[:-1]) == [str(t) for t in view.tokens[circle_order(10, k)]]
    assert "0" not in fig.data[0].text  # the token 0 is outside Z_11*


def test_s5_has_no_circles(tmp_path) -> None:
    train(tiny_config(**{"task.name": "s5", "task.p": None, "train.epochs": 10,
                         "task.frac_train": 0.05}), tmp_path / "s5", progress=False)
    with pytest.raises(F.NoData, match="S5"):
        embedding_circles(RunData(tmp_path / "s5"))


def test_slider_moves_the_points_and_the_panel_titles_in_a_browser(browser, add_run,
                                                                   tmp_path) -> None:
    """In headless Chromium (the whole report's rendering is tests/test_browser.py's): the
    figure renders, and the checkpoint slider redraws the points and each panel's share and
    circle fit."""
    html = tmp_path / "circles.html"
    embedding_circles(add_run).write_html(html, include_plotlyjs=True, div_id="fig-circles")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        js = "document.getElementById('fig-circles')"
        assert page.evaluate(f"!!{js}.querySelector('svg.main-svg')")
        x_before = page.evaluate(f"Array.from({js}._fullData[0].x)")
        sub_before = page.evaluate(f"{js}.layout.annotations[0].text")
        rail = page.locator("#fig-circles .slider-rail-rect")
        rail.scroll_into_view_if_needed()
        box = rail.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)  # the first checkpoint
        page.wait_for_function(f"{js}.layout.title.text.includes('epoch 0 ')", timeout=5000)
        assert page.evaluate(f"Array.from({js}._fullData[0].x)") != x_before
        assert page.evaluate(f"{js}.layout.annotations[0].text") != sub_before
        assert errors == []
    finally:
        page.close()

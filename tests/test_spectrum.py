"""The 2-D Fourier spectrum over Z_p × Z_p (tasks with no group; issue 13): the maths on tables
built by hand with known answers, a naive implementation held equal to the fast one, the
``spectrum2d`` probe on a tiny quad1 run and its report figures."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from mechgrok.analysis import analyze, analyze_model, load_arrays, measures_table
from mechgrok.errors import ConfigError
from mechgrok.measures import spectrum as S
from mechgrok.probes import fourier
from mechgrok.probes.spectrum import SPECTRUM_PROBES
from mechgrok.report import RunData
from mechgrok.report import figures as F
from mechgrok.report.figures.spectrum import spectrum2d_final, spectrum2d_losses
from mechgrok.store import Run
from mechgrok.tasks import make_dataset
from tests.conftest import tiny_config

PROBE = SPECTRUM_PROBES[0]
RNG = np.random.default_rng(0)


def _cos(k: int, v: np.ndarray, p: int) -> np.ndarray:
    return np.cos(2 * np.pi * k * v / p)


def _fold(j: int, p: int) -> int:
    return min(j % p, -j % p)


def _ce(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(
        labels)))


def _naive_basis(p: int) -> dict[tuple[int, int], list[np.ndarray]]:
    """(k_x, k_y) → its 2-D basis functions as flat (p²,) vectors, built one by one."""
    F1 = S.fourier_basis_1d(p)
    freq = [(r + 1) // 2 for r in range(p)]
    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for a in range(p):
        for b in range(p):
            out.setdefault((freq[a], freq[b]), []).append(np.outer(F1[a], F1[b]).reshape(-1))
    return out


def _naive_spectrum(T: np.ndarray) -> np.ndarray:
    p = T.shape[0]
    out = np.zeros((p // 2 + 1, p // 2 + 1))
    for (kx, ky), fns in _naive_basis(p).items():
        out[kx, ky] = sum(float(f @ T.reshape(-1)) ** 2 for f in fns)
    return out


def _naive_projection(L: np.ndarray, p: int, pairs: list[tuple[int, int]], constant: bool
                      ) -> np.ndarray:
    basis = _naive_basis(p)
    cols = [f for pr in pairs for f in basis[pr]] + (basis[(0, 0)] if constant else [])
    Q = np.stack(cols, axis=1)  # (p², m) orthonormal
    return Q @ (Q.T @ L)


# --- the 1-D basis: one convention with probes.fourier -------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4, 5, 12, 113])
def test_basis_equals_probes_fourier_basis(p: int) -> None:
    B = S.fourier_basis_1d(p)
    assert np.abs(B - fourier.fourier_basis(p).numpy()).max() <= 1e-12
    assert np.allclose(B @ B.T, np.eye(p), rtol=0, atol=1e-12)
    assert S.row_frequencies(p).tolist() == fourier.row_frequency(p).tolist()
    assert not B.flags.writeable


# --- spectra -------------------------------------------------------------------------------


@pytest.mark.parametrize("p, a, b", [(13, 3, 5), (13, 0, 4), (13, 6, 6), (12, 6, 2), (12, 1, 0)])
def test_one_product_has_all_its_power_at_its_pair(p: int, a: int, b: int) -> None:
    x = np.arange(p)
    for fx in (_cos, lambda k, v, p: np.sin(2 * np.pi * k * v / p)):
        T = np.outer(fx(a, x, p), _cos(b, x, p))
        if not np.any(T):
            continue  # sin at frequency 0 or p/2 is zero
        sp = S.spectrum2d(T)
        assert sp.shape == (p // 2 + 1, p // 2 + 1)
        assert sp[a, b] == pytest.approx(float((T ** 2).sum()), rel=1e-12)
        sp[a, b] = 0.0
        assert np.abs(sp).max() <= 1e-20 * float((T ** 2).sum()) + 1e-24


@pytest.mark.parametrize("p", [7, 10, 23])
def test_parseval_and_naive_equal_fast(p: int) -> None:
    T = RNG.normal(size=(p, p)) + 3.0
    sp = S.spectrum2d(T)
    assert sp.sum() == pytest.approx(float((T ** 2).sum()), rel=1e-12)
    assert np.allclose(sp, _naive_spectrum(T), rtol=1e-10, atol=1e-12)
    centred = S.spectrum2d(T, centre=True)
    assert abs(centred[0, 0]) <= 1e-20 and sp[0, 0] == pytest.approx(p * p * T.mean() ** 2)
    assert centred.sum() == pytest.approx(float(((T - T.mean()) ** 2).sum()), rel=1e-12)
    assert np.allclose(centred[1:], sp[1:]) and np.allclose(centred[:, 1:], sp[:, 1:])


@pytest.mark.parametrize("p", [11, 12])
def test_function_of_x_plus_y_lies_on_the_diagonal(p: int) -> None:
    """g(x + y): power only at (k, k), equal to p times g's 1-D power at k."""
    x = np.arange(p)
    g = RNG.normal(size=p)
    sp = S.spectrum2d(g[(x[:, None] + x[None, :]) % p])
    assert np.abs(sp - np.diag(np.diag(sp))).max() <= 1e-10
    g_power = S.fourier_basis_1d(p) @ g
    per_k = np.zeros(p // 2 + 1)
    np.add.at(per_k, S.row_frequencies(p), g_power ** 2)
    assert np.allclose(np.diag(sp), p * per_k, rtol=1e-10, atol=1e-12)
    # x − y too (frequencies are folded), and x + 2y on the pairs (k, fold(2k))
    assert np.abs(np.triu(S.spectrum2d(g[(x[:, None] - x[None, :]) % p]), 1)).max() <= 1e-10
    sp2 = S.spectrum2d(g[(x[:, None] + 2 * x[None, :]) % p])
    on = np.zeros_like(sp2, dtype=bool)
    for k in range(p // 2 + 1):
        on[k, _fold(2 * k, p)] = True
    assert np.abs(sp2[~on]).max() <= 1e-10 and sp2.sum() == pytest.approx(p * float(g @ g))


def test_correct_logit_table_and_logits_spectrum() -> None:
    p = 7
    data = make_dataset("quad1", p, 0.5, 0)
    logits = 1000.0 * np.arange(p * p)[:, None] + np.arange(p)[None, :]  # value names its cell
    T = S.correct_logit_table(torch.from_numpy(logits), torch.from_numpy(data.labels), p)
    x, y = np.divmod(np.arange(p * p), p)
    assert np.array_equal(T.reshape(-1), 1000.0 * (x * p + y) + (x * x + y * y) % p)
    L = RNG.normal(size=(p * p, p))
    want = sum(S.spectrum2d(L[:, c].reshape(p, p), centre=True) for c in range(p))
    got = S.logits_spectrum(L, p)
    assert np.allclose(got, want) and got.sum() == pytest.approx(((L - L.mean(0)) ** 2).sum())
    with pytest.raises(ValueError, match="row-major"):
        S.correct_logit_table(logits[:-1], data.labels, p)


def test_neuron_spectrum_known_answers() -> None:
    p = 11
    x = np.arange(p)
    a = 2.0 * np.outer(_cos(3, x, p), _cos(1, x, p)) + 5.0  # all at (3, 1), offset removed
    b = np.outer(np.ones(p), np.sin(2 * np.pi * 4 * x / p))  # all at (0, 4)
    dead = np.full((p, p), 7.0)
    acts = np.stack([a, b, dead], axis=2)
    spectra, live = S.neuron_spectra(acts)
    assert live.tolist() == [True, True, False] and not spectra[2].any()
    mean = S.neuron_spectrum(acts)
    want = np.zeros((6, 6))
    want[3, 1] = want[0, 4] = 0.5
    assert np.allclose(mean, want, atol=1e-12)
    n = RNG.normal(size=(p, p))
    assert np.allclose(S.neuron_spectra(n[:, :, None])[0][0],
                       S.spectrum2d(n, centre=True) / ((n - n.mean()) ** 2).sum())
    assert not S.neuron_spectrum(np.zeros((p, p, 4))).any()


# --- key components ------------------------------------------------------------------------


def test_key_components_rule() -> None:
    sp = np.zeros((4, 4))
    sp[0, 0] = 100.0  # the mean: never a component, not counted in the total
    sp[1, 2], sp[3, 3], sp[2, 0], sp[0, 1] = 0.5, 0.3, 0.15, 0.05
    assert S.key_components(sp) == [(1, 2), (3, 3), (2, 0)]  # 0.95 ≥ 0.9 with 3, 0.8 < 0.9
    assert S.key_components(sp, 0.8) == [(1, 2), (3, 3)]  # exactly reached
    assert S.key_components(sp, 0.5) == [(1, 2)]
    assert S.key_components(sp, 1.0) == [(1, 2), (3, 3), (2, 0), (0, 1)]  # no zero-power pair
    assert S.top_fraction(sp) == pytest.approx(0.5)
    tie = np.zeros((3, 3))
    tie[2, 1] = tie[1, 2] = 1.0
    assert S.key_components(tie, 0.5) == [(1, 2)]  # ties: (k_x, k_y) ascending
    assert S.key_components(np.eye(3) * 0) == [] and math.isnan(S.top_fraction(np.zeros((3, 3))))
    for bad in (0.0, 1.5, True, "0.9"):
        with pytest.raises(ConfigError, match="fraction"):
            S.key_components(sp, bad)  # type: ignore[arg-type]


def test_component_mask_refuses_bad_pairs() -> None:
    m = S.component_mask(7, [(1, 2)])
    assert m.sum() == 4 and m[1:3, 3:5].all()  # rows cos 1, sin 1 × cos 2, sin 2
    assert S.component_mask(8, [(4, 4)]).sum() == 1 and S.component_mask(7, [], True).sum() == 1
    for bad in ([(0, 0)], [(1, 4)], [(1, 1), (1, 1)], [(-1, 2)]):
        with pytest.raises(ConfigError, match="frequency pairs"):
            S.component_mask(7, bad)


# --- restricted and excluded loss ----------------------------------------------------------


@pytest.mark.parametrize("p", [7, 8])
def test_restricted_with_every_component_is_the_full_loss(p: int) -> None:
    L = 3.0 * RNG.normal(size=(p * p, p))
    y = RNG.integers(0, p, p * p)
    K = p // 2
    every = [(a, b) for a in range(K + 1) for b in range(K + 1) if (a, b) != (0, 0)]
    assert S.restricted_loss_2d(L, y, every, p) == pytest.approx(_ce(L, y), rel=1e-10)
    assert S.excluded_loss_2d(L, y, [], p) == pytest.approx(_ce(L, y), rel=1e-10)


def test_excluded_loss_with_every_non_constant_component_by_hand() -> None:
    """Removing all but the constant leaves each class column at its mean over the grid: every
    pair gets the logits m_c = 5 · (count of class c) / p², the same softmax."""
    p = 7
    data = make_dataset("quad1", p, 0.5, 0)
    y = data.labels
    L = 5.0 * np.eye(p)[y]  # logit 5 on the right class
    every = [(a, b) for a in range(4) for b in range(4) if (a, b) != (0, 0)]
    m = 5.0 * np.bincount(y, minlength=p) / (p * p)
    log_softmax = m - math.log(np.exp(m).sum())
    want = -float(np.mean(log_softmax[y[data.train_idx]]))
    got = S.excluded_loss_2d(L, y, every, p, data.train_idx)
    assert got == pytest.approx(want, rel=1e-12)
    assert S.restricted_loss_2d(L, y, [], p) == pytest.approx(-float(np.mean(log_softmax[y])))


@pytest.mark.parametrize("p", [7, 10])
def test_naive_projection_equals_fast(p: int) -> None:
    L = RNG.normal(size=(p * p, p)) + RNG.normal(size=p)
    y = RNG.integers(0, p, p * p)
    pairs = [(1, 2), (0, 3), (p // 2, 1), (2, 0)]
    train = RNG.permutation(p * p)[: p * p // 2]
    kept = _naive_projection(L, p, pairs, constant=True)
    want_r = _ce(kept + (L - kept).mean(0), y)
    want_x = _ce((L - _naive_projection(L, p, pairs, constant=False))[train], y[train])
    got = S.restricted_and_excluded_2d(torch.from_numpy(L), torch.from_numpy(y), pairs, p,
                                       torch.from_numpy(train))
    assert got["restricted_loss"] == pytest.approx(want_r, rel=1e-10)
    assert got["excluded_loss"] == pytest.approx(want_x, rel=1e-10)


def test_clock_logits_read_on_the_diagonal_as_nanda_reads_them() -> None:
    """add's ideal clock: its logits' components are (k, k) for the key frequencies, and the
    2-D restricted/excluded losses over them equal Nanda's over those frequencies."""
    p, keys = 13, [2, 5]
    x, yy = np.divmod(np.arange(p * p), p)
    s = (x + yy) % p
    L = 4.0 * sum(_cos(k, s[:, None] - np.arange(p)[None, :], p) for k in keys)
    comps = S.key_components(S.logits_spectrum(L, p), 0.999)
    assert sorted(comps) == [(2, 2), (5, 5)]
    Lt, st = torch.from_numpy(L), torch.from_numpy(s)
    got = S.restricted_and_excluded_2d(L, s, comps, p)
    assert got["restricted_loss"] == pytest.approx(fourier.restricted_loss(Lt, st, keys, p))
    assert got["restricted_loss"] == pytest.approx(_ce(L, s), rel=1e-10)
    assert got["excluded_loss"] == pytest.approx(fourier.excluded_loss(Lt, st, keys, p))
    assert got["excluded_loss"] == pytest.approx(math.log(p), rel=1e-10)


# --- the probe and its figures on a tiny quad1 run -----------------------------------------


@pytest.fixture(scope="module")
def quad1_run(tmp_path_factory) -> Path:
    from mechgrok.training import train

    path = tmp_path_factory.mktemp("spectrum") / "quad1"
    train(tiny_config(**{"task.name": "quad1", "train.epochs": 30}), path, progress=False)
    analyze(path, ["loss", PROBE], progress=False)
    return path


def _logits(model, tokens: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out, _ = model.run_with_cache(tokens, names_filter=lambda n: False)
    return (out[:, -1] if out.ndim == 3 else out).double().numpy()


def test_probe_on_quad1_matches_the_maths(quad1_run: Path) -> None:
    run, p = Run(quad1_run), 11
    data = run.dataset()
    tokens = torch.from_numpy(data.tokens)
    final = S.key_components(S.logits_spectrum(_logits(run.load_model(), tokens), p))
    rows = measures_table(quad1_run)
    assert [r["epoch"] for r in rows] == [c.epoch for c in run.checkpoints()]
    for r, ck in zip(rows, run.checkpoints(), strict=True):
        assert r["spectrum2d.status"] == "ok"
        assert r["spectrum2d.circuit_claimed"] is False
        L = _logits(run.load_model(ck), tokens)
        losses = S.restricted_and_excluded_2d(L, data.labels, final, p, data.train_idx)
        assert r["spectrum2d.restricted_loss"] == pytest.approx(losses["restricted_loss"])
        assert r["spectrum2d.excluded_loss"] == pytest.approx(losses["excluded_loss"])
        assert r["spectrum2d.n_final_components"] == len(final)
        correct = S.spectrum2d(S.correct_logit_table(L, data.labels, p), centre=True)
        assert r["spectrum2d.n_components_correct"] == len(S.key_components(correct))
        arrays = load_arrays(quad1_run, ck.epoch)
        assert np.allclose(arrays["spectrum2d.correct_logit_spectrum"], correct)
        assert arrays["spectrum2d.neuron_spectrum"].shape == (6, 6)
        assert sorted(zip(*np.nonzero(arrays["spectrum2d.final_components"]))) == sorted(final)
    assert rows[-1]["spectrum2d.full_loss"] == pytest.approx(_ce(L, data.labels))
    assert "no circuit is claimed" in PROBE.description
    summary = RunData(quad1_run).summary["probes"]["spectrum2d"]  # the report's card shows it
    assert summary["circuit_claimed"] is False and summary["n_pairs"] == 35
    assert [tuple(c) for c in summary["final_components"]] == final  # largest power first
    assert summary["headline"].startswith(f"{len(final)} of 35 frequency pairs")
    assert summary["headline"].endswith("no circuit is claimed")


def test_probe_says_why_it_does_not_apply() -> None:
    for task, basis in (("add", "Fourier over Z_p"), ("div", "discrete-log"), ("s5", "S5")):
        cfg = tiny_config(**{"task.name": task, "task.p": None if task == "s5" else 11})
        rc = types.SimpleNamespace(config=cfg)
        reason = PROBE.applies(rc)  # type: ignore[arg-type]
        assert reason is not None and "has a group" in reason and basis in reason, reason
    assert PROBE.applies(types.SimpleNamespace(config=tiny_config(**{"task.name": "cond"}))
                         ) is None  # type: ignore[arg-type]


def test_probe_without_a_run_directory_reads_the_final_model(quad1_run: Path) -> None:
    """analyze_model takes the components from its final_model (default: the model itself)."""
    run = Run(quad1_run)
    split = (run.dataset().train_idx, run.dataset().test_idx)
    early, last = run.load_model(run.checkpoints()[1]), run.load_model()
    own = analyze_model(early, "quad1", 11, split=split, probes=[PROBE])["spectrum2d"]
    assert own["circuit_claimed"] is False
    assert own["n_final_components"] == own["n_components_logits"]
    res = analyze_model(early, "quad1", 11, split=split, probes=[PROBE], final_model=last)
    tokens = torch.from_numpy(run.dataset().tokens)
    want = S.key_components(S.logits_spectrum(_logits(last, tokens), 11))
    assert res["spectrum2d"]["n_final_components"] == len(want)


def test_figures_build_and_say_no_circuit(quad1_run: Path) -> None:
    d = RunData(quad1_run)
    fig = spectrum2d_final(d)
    assert isinstance(fig, go.Figure) and "no circuit claimed" in fig.layout.title.text
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2 and np.asarray(heat[0].z).shape == (6, 6)
    z = np.asarray(heat[0].z, dtype=float)
    assert math.isnan(z[0, 0]) and np.nansum(z) == pytest.approx(1.0)
    spec = next(s for s in F.RUN_FIGURES if s.id == "spectrum2d")
    assert "no circuit is claimed" in spec.caption
    losses = spectrum2d_losses(d)
    rest = next(t for t in losses.data if t.name.startswith("restricted"))
    assert np.allclose(rest.y, [max(r["spectrum2d.restricted_loss"], 1e-12)
                                for r in measures_table(quad1_run)])


def test_figure_on_a_run_without_the_probe_says_why(tmp_path: Path) -> None:
    from mechgrok.training import train

    train(tiny_config(**{"train.epochs": 10}), tmp_path / "add", progress=False)
    analyze(tmp_path / "add", ["loss", PROBE], progress=False)
    with pytest.raises(F.NoData, match="has a group"):
        spectrum2d_final(RunData(tmp_path / "add"))
    with pytest.raises(F.NoData, match="n/a"):
        spectrum2d_losses(RunData(tmp_path / "add"))

"""Softmax collapse, zero loss, logit gaps and NLM alignment (mechgrok.probes.collapse)."""

from __future__ import annotations

import math

import pytest
import torch

from mechgrok.probes.collapse import (
    collapse_threshold,
    gap_quantiles,
    logit_gap,
    logit_norm,
    nlm_alignment,
    sc_fraction,
    zero_loss_fraction,
    zero_loss_threshold,
)

F64 = torch.float64
C = 113
EPS = {torch.float32: 2.0 ** -23, F64: 2.0 ** -52}


def _rows(gaps: list[float], n_classes: int = C) -> torch.Tensor:
    """One worst-case row ``[g, 0, …, 0]`` per gap, float64 (cast by the functions)."""
    z = torch.zeros(len(gaps), n_classes, dtype=F64)
    z[:, 0] = torch.tensor(gaps, dtype=F64)
    return z


def _bounds(dtype: torch.dtype, n_classes: int = C) -> tuple[float, float]:
    """Any summation order collapses ``[g, 0, …]`` between these gaps (module docstring)."""
    lo = math.log(2 / EPS[dtype])
    return lo, lo + math.log(n_classes - 1)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("exact", [False, True])
def test_collapse_threshold_separates_collapsed_from_not(dtype, exact):
    thr = collapse_threshold(C, dtype, exact=exact)
    lo, hi = _bounds(dtype)
    assert lo - 1e-6 <= thr <= hi + 1e-6
    below, above = thr * (1 - 1e-5), thr * (1 + 1e-5)
    assert sc_fraction(_rows([below]), dtype, exact=exact) == 0.0
    assert sc_fraction(_rows([above]), dtype, exact=exact) == 1.0
    # the same answer inside a larger batch, and for a transposed (non-contiguous) layout
    mixed = _rows([below, above] * 20 + [thr + 5, thr - 5])
    assert sc_fraction(mixed, dtype, exact=exact) == 0.5
    assert sc_fraction(mixed.T.contiguous().T, dtype, exact=exact) == 0.5


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_exact_threshold_is_the_correctly_rounded_one(dtype):
    # 1 + 112 e^(−g) rounds to 1 exactly when 112 e^(−g) ≤ eps / 2
    expected = math.log(C - 1) + math.log(2 / EPS[dtype])
    assert collapse_threshold(C, dtype, exact=True) == pytest.approx(expected, abs=1e-5)
    assert 20 < collapse_threshold(C, torch.float32, exact=True) < 22  # MEASURES: "about 21"


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_zero_loss_threshold_and_fraction(dtype):
    thr = zero_loss_threshold(C, dtype)
    lo, hi = _bounds(dtype)
    assert lo - 1e-6 <= thr <= hi + 1e-6
    right = torch.zeros(3, dtype=torch.long)
    assert zero_loss_fraction(_rows([thr * (1 + 1e-5)] * 3), right, dtype) == 1.0
    assert zero_loss_fraction(_rows([thr * (1 - 1e-5)] * 3), right, dtype) == 0.0
    # far above the threshold: zero for the top class only, never for a wrong label
    z = _rows([thr + 10] * 4)
    assert zero_loss_fraction(z, torch.tensor([0, 0, 0, 5]), dtype) == 0.75


def test_float32_collapses_long_before_float64():
    assert collapse_threshold(C, torch.float32) + 10 < collapse_threshold(C, F64)
    assert zero_loss_threshold(C, torch.float32) + 10 < zero_loss_threshold(C, F64)


@pytest.mark.parametrize("exact", [False, True])
def test_sc_fraction_on_a_mix_of_rows(exact):
    # gap 100: collapsed in both dtypes; gap 30: only in float32 (above 21.4, below 36.7);
    # gap 1: in neither; a tie at the top (sum ≥ 2): in neither
    tie = torch.zeros(1, C, dtype=F64)
    tie[0, :2] = 100.0
    z = torch.cat([_rows([100.0] * 3 + [30.0] * 2 + [1.0] * 4), tie])
    assert sc_fraction(z, torch.float32, exact=exact) == 0.5
    assert sc_fraction(z, F64, exact=exact) == 0.3
    assert sc_fraction(z.to(torch.float32), "float64", exact=exact) == 0.3
    # shifting every logit of a row does not change it
    assert sc_fraction(z + 1000.0, torch.float32, exact=exact) == 0.5


def test_logit_gap_quantiles_and_norm():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0], [-1.0, -1.0, -1.0], [2.5, -4.0, 0.5]])
    gap = logit_gap(z)
    assert gap.dtype == F64
    assert gap.tolist() == [1.0, 5.0, 0.0, 2.0]
    q = gap_quantiles(torch.arange(11, dtype=torch.float32))
    assert q == {"min": 0.0, "q10": 1.0, "median": 5.0, "q90": 9.0, "max": 10.0}
    assert gap_quantiles(torch.tensor([1.0, 2.0, 3.0, 10.0]))["median"] == 2.5
    assert logit_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])) == pytest.approx(5.0)


def test_nlm_alignment_known_answers():
    gen = torch.Generator().manual_seed(0)
    theta = {"a": torch.randn(2, 3, generator=gen), "b": torch.randn(4, generator=gen)}
    same = nlm_alignment(theta, {k: -v for k, v in theta.items()})  # −∇L = θ
    assert same["overall"] == pytest.approx(1.0, abs=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in same["per_tensor"].values())
    opposite = nlm_alignment(theta, dict(theta))
    assert opposite["overall"] == pytest.approx(-1.0, abs=1e-12)

    w = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 2.0])}
    orth = nlm_alignment(w, {"a": torch.tensor([0.0, 3.0]), "b": torch.tensor([7.0, 0.0])})
    assert orth["overall"] == 0.0 and orth["per_tensor"] == {"a": 0.0, "b": 0.0}

    # by hand: −g = (1, 1 | 0, −3), θ = (1, 0 | 0, 2)
    got = nlm_alignment(w, {"a": torch.tensor([-1.0, -1.0]), "b": torch.tensor([0.0, 3.0])})
    assert got["per_tensor"]["a"] == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert got["per_tensor"]["b"] == pytest.approx(-1.0, abs=1e-12)
    assert got["overall"] == pytest.approx(-5 / math.sqrt(11 * 5), abs=1e-12)


def test_nlm_alignment_zero_norm_and_bad_inputs():
    w = {"a": torch.zeros(2), "b": torch.tensor([1.0, 0.0])}
    got = nlm_alignment(w, {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([-1.0, 0.0])})
    assert math.isnan(got["per_tensor"]["a"]) and got["per_tensor"]["b"] == pytest.approx(1.0)
    assert got["overall"] == pytest.approx(1 / math.sqrt(3), abs=1e-12)
    with pytest.raises(ValueError, match="same names"):
        nlm_alignment(w, {"a": torch.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        nlm_alignment({"a": torch.zeros(2)}, {"a": torch.zeros(3)})


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        sc_fraction(torch.zeros(3), torch.float32)
    with pytest.raises(ValueError, match="labels"):
        zero_loss_fraction(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        sc_fraction(torch.zeros(3, 4), "float8")
    with pytest.raises(ValueError, match="n_classes"):
        collapse_threshold(1, torch.float32)
    with pytest.raises(ValueError, match="C ≥ 2"):
        logit_gap(torch.zeros(3, 1))

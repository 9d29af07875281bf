"""A run's evaluation curves: checking the series, and threshold crossings.

Pure functions: plain sequences or NumPy arrays in, Python numbers out; no torch, no run
directories. :mod:`mechgrok.probes.phases` builds the phase rules on them (its docstring's
"Inputs" section says what the checks below require).

Threshold crossings
-------------------
* ``first_reached(epochs, values, t)``: the first epoch with ``value ≥ t``.
* ``first_held(epochs, values, t)``: the first epoch from which ``value ≥ t`` at *every* later
  evaluation to the end of the run; ``None`` when the last value is below ``t``. A value that is
  NaN counts as below. :func:`grokking_epochs` applies it to a run's metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ArrayLike", "check_accuracy", "check_epochs", "check_finite_nonneg", "check_series",
           "first_held", "first_reached", "grokking_epochs"]

ArrayLike = Sequence[float] | np.ndarray


# ---------------------------------------------------------------------------------------------
# checking the series


def check_epochs(epochs: ArrayLike, name: str = "epochs") -> np.ndarray:
    """``epochs`` as a float array, checked: one-dimensional, finite, non-negative whole numbers,
    strictly increasing. A :class:`ValueError` naming ``name`` otherwise."""
    e = np.asarray(epochs, dtype=float)
    if e.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {e.shape}")
    if e.size and not np.all(np.isfinite(e)):
        raise ValueError(f"{name} must be finite numbers")
    if e.size and (np.any(e < 0) or np.any(e != np.round(e))):
        bad = e[(e < 0) | (e != np.round(e))][0]
        raise ValueError(f"{name} must be non-negative whole numbers, got {bad:g}")
    d = np.diff(e)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValueError(f"{name} must be strictly increasing, but {name}[{i}] = {e[i]:g} is "
                         f"followed by {e[i + 1]:g}")
    return e


def check_series(values: ArrayLike, name: str, n: int, against: str = "epochs") -> np.ndarray:
    """``values`` as a float array of exactly ``n`` values (one per epoch of ``against``)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {v.shape}")
    if v.size != n:
        raise ValueError(f"{name} has {v.size} values but {against} has {n}; every series needs "
                         f"exactly one value per evaluation epoch")
    return v


def check_finite_nonneg(v: np.ndarray, e: np.ndarray, name: str) -> None:
    """A :class:`ValueError` naming the first epoch where ``v`` is negative or not finite."""
    bad = ~np.isfinite(v) | (v < 0)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and ≥ 0, got {v[i]!r} at epoch {int(e[i])}")


def check_accuracy(v: np.ndarray, e: np.ndarray, name: str) -> None:
    """A :class:`ValueError` naming the first epoch where ``v`` is not a fraction in [0, 1]."""
    bad = ~np.isfinite(v) | (v < 0) | (v > 1)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be fractions in [0, 1] (0.99, not 99), got {v[i]!r} at "
                         f"epoch {int(e[i])}")


# ---------------------------------------------------------------------------------------------
# threshold crossings


def _first_held(e: np.ndarray, v: np.ndarray, threshold: float) -> int | None:
    below = np.flatnonzero(~(v >= threshold))  # NaN counts as below
    if e.size == 0 or (below.size and below[-1] == e.size - 1):
        return None
    start = 0 if below.size == 0 else int(below[-1]) + 1
    return int(e[start])


def _first_reached(e: np.ndarray, v: np.ndarray, threshold: float) -> int | None:
    hit = np.flatnonzero(v >= threshold)
    return int(e[hit[0]]) if hit.size else None


def first_held(epochs: ArrayLike, values: ArrayLike, threshold: float) -> int | None:
    """First epoch from which ``values ≥ threshold`` at every later evaluation to the end.

    ``None`` if the last value is below ``threshold`` (or there are no values). NaN is below.
    """
    e = check_epochs(epochs)
    return _first_held(e, check_series(values, "values", e.size), threshold)


def grokking_epochs(metrics: list[dict], acc: float = 0.99) -> dict[str, int | None]:
    """``{"train_99", "test_99"}``: the first epochs at which train and test accuracy reach
    ``acc`` and stay there to the end (:func:`first_held` over the run's metrics)."""
    epochs = [m["epoch"] for m in metrics]
    return {"train_99": first_held(epochs, [m["train_acc"] for m in metrics], acc),
            "test_99": first_held(epochs, [m["test_acc"] for m in metrics], acc)}


def first_reached(epochs: ArrayLike, values: ArrayLike, threshold: float) -> int | None:
    """First epoch with ``value ≥ threshold``, or ``None`` if it never gets there."""
    e = check_epochs(epochs)
    return _first_reached(e, check_series(values, "values", e.size), threshold)

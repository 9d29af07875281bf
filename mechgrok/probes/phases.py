"""Phase boundaries of a grokking run, detected from its curves by written-down rules.

Nanda et al. (2023) split training into *memorisation*, *circuit formation* and *cleanup* and
mark the boundaries by eye; Liu et al. (2022) label whole runs *comprehension*, *grokking*,
*memorisation* or *confusion*. mechgrok detects both from the logged curves with the rules
below, so that two people analysing the same run get the same numbers. Every function here is
pure: plain sequences or NumPy arrays in, Python numbers out; no torch, no run directories.
See ``MEASURES.md`` §4 (phases, reference run) and §7 (Liu et al.'s labels).

Inputs
------
* ``epochs`` are the evaluation epochs: non-negative integers, strictly increasing. Every other
  series has exactly one value per epoch. Accuracies are fractions in [0, 1] (not percentages).
  ``test_loss`` and ``sum_sq_weights`` must be finite and ≥ 0.
* The excluded loss is measured on checkpoints, so it is a separate series
  (``excluded_loss_epochs``, ``excluded_loss``) with its own strictly increasing epochs; give
  both or neither.
* Wrong lengths, unordered or repeated epochs, percentages and negative losses raise
  :class:`ValueError` with a message saying which series is wrong; invalid
  :class:`PhaseRules` raise :class:`mechgrok.errors.ConfigError` (a ``ValueError``). Empty
  input is not an error for :func:`detect_phases` (every boundary is ``None`` and ``notes`` says
  why) nor for the crossings (``None``); :func:`liu_label` refuses it, since a label from no
  evaluations would be a guess.

Threshold crossings
-------------------
``first_reached`` (the first epoch with ``value ≥ t``) and ``first_held`` (the first epoch from
which ``value ≥ t`` to the end of the run), and :func:`grokking_epochs`, live in
:mod:`mechgrok.probes.curves` and are importable from here too.

Grokking epoch and delay (MEASURES.md §4)
-----------------------------------------
* ``train_99`` = ``first_held(train_acc ≥ acc)``; ``grokking_epoch`` =
  ``first_held(test_acc ≥ acc)``; ``acc`` = 0.99 by default.
* ``grokking_delay`` = ``grokking_epoch − train_99`` when both exist, else ``None``. It is
  negative if the test accuracy held before the training accuracy did.

Phase boundaries (:func:`detect_phases`, thresholds in :class:`PhaseRules`)
--------------------------------------------------------------------------
1. **End of memorisation** ("train accuracy reaches 99 % and excluded loss turns upward").
   Without an excluded-loss series it is ``train_99``. With one, take the excluded-loss samples
   at epochs in ``[train_99, E]``, where ``E`` is ``grokking_epoch`` (or the last evaluation
   epoch if the run never groks); the end of memorisation is ``max(train_99, m)``, where ``m`` is
   the epoch of the smallest excluded loss in that window (the first such epoch on ties): after
   ``m`` the excluded loss rises. If the window holds no sample it is ``train_99`` (noted); if
   the minimum is the window's last sample the excluded loss never turned upward (noted).
   ``None`` when the training accuracy never held ≥ ``acc``.
2. **End of circuit formation** ("test loss starts its sudden fall"). Let ``L = log10(test
   loss)``; a loss of exactly 0 (softmax collapse in float32) is replaced by the smallest
   positive test loss of the run before taking the log. Over the evaluations in ``[S,
   grokking_epoch]``, where ``S`` is the end of memorisation (the first epoch if there is
   none), ``L_peak`` is the largest ``L``, at the peak epoch ``e_peak`` (the first on ties).
   ``L_min`` is the smallest ``L`` at evaluations after ``e_peak`` (to the end of the run). The
   boundary is the first evaluation after ``e_peak`` with ``L ≤ L_peak − circuit_drop · (L_peak
   − L_min)``, i.e. the log loss has fallen by ``circuit_drop`` (default 0.1) of its whole fall.
   ``None`` when the run never groks, or when the log test loss never falls below its peak
   (noted).
3. **End of cleanup** ("test accuracy holds ≥ 99 % and the weight norm levels off"). With ``W``
   the total sum of squared weights, ``W_g = W(grokking_epoch)`` and ``W_f`` = the smallest ``W``
   at or after the grokking epoch (the minimum rather than the last value, so that a late
   rebound of the norm does not shorten cleanup), the boundary is the first evaluation at or
   after the grokking epoch with ``W ≤ W_g − cleanup_frac · (W_g − W_f)``: the norm has
   completed ``cleanup_frac`` (default 0.9) of its post-grokking decline. If ``W`` never falls
   below ``W_g`` after grokking, the boundary is the grokking epoch itself (noted). ``None`` when
   the run never groks.

   *Levelled off?* The run is reported (in ``notes``) as having ended before the norm levelled
   off when the cleanup boundary is the last evaluation, or when the mean rate of decline of
   ``W`` per epoch from the boundary to the last evaluation is at least ``level_ratio``
   (default 0.5) times its mean rate from the grokking epoch to the boundary. A longer run may
   then move the boundary later.
4. **Monotone order.** Boundaries that exist satisfy end of memorisation ≤ end of circuit
   formation ≤ end of cleanup. When the raw rules disagree, the later boundary is raised to the
   earlier one (never the other way round) and a note says so.

Liu et al.'s labels (:func:`liu_label`, MEASURES.md §7)
-------------------------------------------------------
From ``train_90 = first_reached(train_acc ≥ liu_acc)`` and ``test_90 = first_reached(test_acc ≥
liu_acc)`` (``liu_acc`` = 0.9; *reached*, not held, as Liu et al. count steps to 90 %):

* **confusion**: the training accuracy never reaches ``liu_acc``;
* **memorisation**: it does, the test accuracy never does;
* **comprehension**: ``test_90 ≤ liu_delay_ratio · train_90`` (default ratio 2.0);
* **grokking**: otherwise (test accuracy reaches 90 % more than ``liu_delay_ratio`` times later).

Liu et al. used fixed step budgets (comprehension within 10³ steps, grokking within 10⁴ steps of
training); mechgrok uses the ratio ``test_90 / train_90`` instead, so that a label does not depend
on how long the run was or on the learning rate's time scale. ``ratio`` is ``None`` when
``train_90`` is 0 (the rule above still applies: comprehension only if ``test_90`` is 0 too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from mechgrok.errors import ConfigError
from mechgrok.probes.curves import (
    ArrayLike,
    check_accuracy,
    check_epochs,
    check_finite_nonneg,
    check_series,
    first_held,
    first_reached,
    grokking_epochs,
)

__all__ = ["PhaseRules", "detect_phases", "first_held", "first_reached", "grokking_epochs",
           "liu_label"]


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class PhaseRules:
    """Thresholds of the phase rules (module docstring); every default is written down here.

    * ``acc`` (0.99): accuracy that must hold to the end for ``train_99`` / ``grokking_epoch``.
    * ``circuit_drop`` (0.1): circuit formation ends when log10 test loss has fallen by this
      fraction of its fall from the post-memorisation peak to its later minimum.
    * ``cleanup_frac`` (0.9): cleanup ends when the weight norm has completed this fraction of
      its decline after grokking.
    * ``level_ratio`` (0.5): the norm has not levelled off when it still falls, after the
      cleanup boundary, at least this fraction of its mean rate during cleanup.
    * ``liu_acc`` (0.9): Liu et al.'s accuracy threshold.
    * ``liu_delay_ratio`` (2.0): comprehension when test reaches ``liu_acc`` no later than this
      many times the epoch at which train does; grokking otherwise.
    """

    acc: float = 0.99
    circuit_drop: float = 0.1
    cleanup_frac: float = 0.9
    level_ratio: float = 0.5
    liu_acc: float = 0.9
    liu_delay_ratio: float = 2.0

    def __post_init__(self) -> None:
        for name in ("acc", "circuit_drop", "cleanup_frac", "level_ratio", "liu_acc",
                     "liu_delay_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
                raise ConfigError(f"PhaseRules.{name} must be a finite number, got {v!r}")
        for name in ("acc", "liu_acc"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ConfigError(f"PhaseRules.{name} is an accuracy as a fraction in (0, 1] "
                                  f"(0.99 means 99 %), got {v!r}")
        for name in ("circuit_drop", "cleanup_frac", "level_ratio"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ConfigError(f"PhaseRules.{name} is a fraction in (0, 1], got {v!r}")
        if self.liu_delay_ratio < 1:
            raise ConfigError(f"PhaseRules.liu_delay_ratio must be ≥ 1 (test cannot be required "
                              f"to reach {_pct(self.liu_acc)} before train does), "
                              f"got {self.liu_delay_ratio!r}")

    @property
    def name(self) -> str:
        """A short string naming the rule and its thresholds (``phase_rule`` in results)."""
        return (f"mechgrok-phases-v1(acc={self.acc:g}, circuit_drop={self.circuit_drop:g}, "
                f"cleanup_frac={self.cleanup_frac:g}, level_ratio={self.level_ratio:g})")


_DEFAULT_RULES = PhaseRules()  # frozen, so one shared default is safe


def _pct(x: float) -> str:
    return f"{x * 100:.4g} %"


# ---------------------------------------------------------------------------------------------
# Nanda et al.'s phases


def _memorisation_end(train_99: int, grok: int | None, last_epoch: int,
                      xe: np.ndarray | None, xl: np.ndarray | None,
                      notes: list[str]) -> int:
    if xe is None or xl is None:
        return train_99
    hi = grok if grok is not None else last_epoch
    window = np.flatnonzero((xe >= train_99) & (xe <= hi))
    if window.size == 0:
        notes.append(f"no excluded-loss sample in [{train_99}, {hi}]: memorisation_end is "
                     f"train_99 alone")
        return train_99
    k = window[int(np.argmin(xl[window]))]
    m = int(xe[k])
    if k == window[-1]:
        notes.append(f"excluded loss did not turn upward in [{train_99}, {hi}] (its minimum is "
                     f"the window's last sample, epoch {m}): memorisation_end = {m}")
    return max(train_99, m)


def _circuit_end(e: np.ndarray, log_loss: np.ndarray, start: int, grok: int,
                 drop: float, notes: list[str]) -> int | None:
    window = np.flatnonzero((e >= start) & (e <= grok))
    if window.size == 0:
        notes.append(f"no evaluation in [{start}, {grok}] (end of memorisation to grokking "
                     f"epoch): no circuit-formation boundary")
        return None
    ip = int(window[int(np.argmax(log_loss[window]))])
    after = np.arange(ip + 1, e.size)
    peak = log_loss[ip]
    if after.size == 0 or log_loss[after].min() >= peak:
        notes.append(f"log10 test loss never fell below its peak at epoch {int(e[ip])}: no "
                     f"circuit-formation boundary")
        return None
    target = peak - drop * (peak - log_loss[after].min())
    j = int(after[int(np.argmax(log_loss[after] <= target))])
    return int(e[j])


def _cleanup_end(e: np.ndarray, w: np.ndarray, grok: int, rules: PhaseRules,
                 notes: list[str]) -> int:
    ig = int(np.flatnonzero(e == grok)[0])
    w_g = w[ig]
    w_f = w[ig:].min()
    if w_f >= w_g:
        if ig == e.size - 1:
            notes.append(f"the grokking epoch {grok} is the last evaluation: cleanup cannot be "
                         f"observed; cleanup_end = grokking_epoch")
        else:
            notes.append(f"the weight norm does not fall below its value at the grokking epoch "
                         f"{grok}: cleanup_end = grokking_epoch")
        return grok
    target = w_g - rules.cleanup_frac * (w_g - w_f)
    j = ig + int(np.argmax(w[ig:] <= target))  # j > ig since target < w_g
    end = int(e[j])
    if j == e.size - 1:
        notes.append(f"the run ended before the weight norm levelled off: cleanup_end {end} is "
                     f"the last evaluation")
    else:
        rate_during = (w_g - w[j]) / (e[j] - e[ig])
        rate_after = (w[j] - w[-1]) / (e[-1] - e[j])
        if rate_after >= rules.level_ratio * rate_during:
            notes.append(f"the run ended before the weight norm levelled off: after cleanup_end "
                         f"{end} it still fell {rate_after:.3g} per epoch, "
                         f"≥ {rules.level_ratio:g} × its rate during cleanup "
                         f"({rate_during:.3g}); a longer run may move cleanup_end later")
    return end


def detect_phases(epochs: ArrayLike, train_acc: ArrayLike, test_acc: ArrayLike,
                  test_loss: ArrayLike, sum_sq_weights: ArrayLike,
                  excluded_loss_epochs: ArrayLike | None = None,
                  excluded_loss: ArrayLike | None = None,
                  rules: PhaseRules = _DEFAULT_RULES) -> dict[str, Any]:
    """Grokking epoch, delay and the three phase boundaries by the module docstring's rules.

    Returns ``train_99``, ``grokking_epoch``, ``grokking_delay``, ``memorisation_end``,
    ``circuit_formation_end``, ``cleanup_end`` (epochs or ``None``), ``phase_rule`` (the rule's
    name and thresholds) and ``notes`` (why a boundary is missing, clipped or provisional).
    """
    e = check_epochs(epochs)
    n = e.size
    tr = check_series(train_acc, "train_acc", n)
    te = check_series(test_acc, "test_acc", n)
    loss = check_series(test_loss, "test_loss", n)
    w = check_series(sum_sq_weights, "sum_sq_weights", n)
    check_accuracy(tr, e, "train_acc")
    check_accuracy(te, e, "test_acc")
    check_finite_nonneg(loss, e, "test_loss")
    check_finite_nonneg(w, e, "sum_sq_weights")
    if (excluded_loss_epochs is None) != (excluded_loss is None):
        raise ValueError("give both excluded_loss_epochs and excluded_loss (the excluded loss is "
                         "sampled at checkpoint epochs, a separate series), or neither")
    xe = xl = None
    if excluded_loss_epochs is not None and excluded_loss is not None:
        xe = check_epochs(excluded_loss_epochs, "excluded_loss_epochs")
        xl = check_series(excluded_loss, "excluded_loss", xe.size, against="excluded_loss_epochs")
        check_finite_nonneg(xl, xe, "excluded_loss")
        if xe.size == 0:
            xe = xl = None

    out: dict[str, Any] = {
        "train_99": None, "grokking_epoch": None, "grokking_delay": None,
        "memorisation_end": None, "circuit_formation_end": None, "cleanup_end": None,
        "phase_rule": rules.name, "notes": [],
    }
    notes: list[str] = out["notes"]
    if n == 0:
        notes.append("no evaluations: no phase boundary can be found")
        return out

    acc = _pct(rules.acc)
    train_99 = first_held(e, tr, rules.acc)
    grok = first_held(e, te, rules.acc)
    out["train_99"], out["grokking_epoch"] = train_99, grok
    if train_99 is not None and grok is not None:
        out["grokking_delay"] = grok - train_99

    mem: int | None = None
    if train_99 is None:
        notes.append(f"train accuracy never held ≥ {acc}: no memorisation boundary")
    else:
        mem = _memorisation_end(train_99, grok, int(e[-1]), xe, xl, notes)

    circ: int | None = None
    clean: int | None = None
    if grok is None:
        notes.append(f"test accuracy never held ≥ {acc}: no circuit-formation or cleanup "
                     f"boundary")
    else:
        positive = loss[loss > 0]
        floor = positive.min() if positive.size else 1.0
        log_loss = np.log10(np.maximum(loss, floor))
        start = mem if mem is not None else int(e[0])
        circ = _circuit_end(e, log_loss, start, grok, rules.circuit_drop, notes)
        clean = _cleanup_end(e, w, grok, rules, notes)

    if mem is not None and circ is not None and circ < mem:
        notes.append(f"circuit-formation end {circ} came before memorisation end {mem}: raised "
                     f"to {mem}")
        circ = mem
    earlier = [b for b in (mem, circ) if b is not None]
    if clean is not None and earlier and clean < max(earlier):
        notes.append(f"cleanup end {clean} came before the previous boundary {max(earlier)}: "
                     f"raised to {max(earlier)}")
        clean = max(earlier)
    out["memorisation_end"], out["circuit_formation_end"], out["cleanup_end"] = mem, circ, clean
    return out


# ---------------------------------------------------------------------------------------------
# Liu et al.'s labels


def liu_label(epochs: ArrayLike, train_acc: ArrayLike, test_acc: ArrayLike,
              rules: PhaseRules = _DEFAULT_RULES) -> tuple[str, dict[str, Any]]:
    """Liu et al.'s label (confusion / memorisation / comprehension / grokking) and its figures.

    The figures are ``train_90`` and ``test_90`` (first epochs at which train and test accuracy
    reach ``rules.liu_acc``, or ``None``) and ``ratio`` = ``test_90 / train_90`` (``None`` when
    either is missing or ``train_90`` is 0). See the module docstring for the rule.
    """
    e = check_epochs(epochs)
    tr = check_series(train_acc, "train_acc", e.size)
    te = check_series(test_acc, "test_acc", e.size)
    if e.size == 0:
        raise ValueError("liu_label needs at least one evaluation; got empty curves")
    check_accuracy(tr, e, "train_acc")
    check_accuracy(te, e, "test_acc")
    train_90 = first_reached(e, tr, rules.liu_acc)
    test_90 = first_reached(e, te, rules.liu_acc)
    ratio = (test_90 / train_90 if train_90 is not None and test_90 is not None and train_90 > 0
             else None)
    figures = {"train_90": train_90, "test_90": test_90, "ratio": ratio}
    if train_90 is None:
        return "confusion", figures
    if test_90 is None:
        return "memorisation", figures
    if test_90 <= rules.liu_delay_ratio * train_90:
        return "comprehension", figures
    return "grokking", figures

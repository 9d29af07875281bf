"""The 2-D Fourier spectrum probe for the tasks with no group structure (issue 13; MEASURES.md §7).

``cond``, ``quad1``–``quad3``, ``cube1`` and ``cube2`` (``Task.algebra.kind == "none"``) are not
a rule in a group, so no known circuit computes them and no representation says where to look.
The ``spectrum2d`` probe reads them in the 2-D Fourier basis of Z_p × Z_p
(:mod:`mechgrok.measures.spectrum`, whose docstring states the conventions). **It describes the
tables; it claims no circuit**, and says so in the measures table (``circuit_claimed`` is False
on every record) and in its description.

Per checkpoint, over all p² pairs (row-major):

* ``correct_logit_spectrum`` (array ``(K + 1, K + 1)``): the power per frequency pair (k_x, k_y)
  of the centred correct-class logit table ``logits[(x, y), a(x, y)]``;
  ``n_components_correct`` and ``top_fraction_correct``: how many pairs carry 90 % of it
  (:func:`~mechgrok.measures.spectrum.key_components`), and the share of its largest pair;
* ``logits_spectrum``, ``n_components_logits``, ``top_fraction_logits``: the same for every
  output-class column of the logits, centred over the grid and summed over the classes;
* ``neuron_spectrum``: the mean over live neurons of each neuron's normalised spectrum;
  ``n_components_neurons``: pairs carrying 90 % of it;
* ``restricted_loss`` (all pairs) and ``excluded_loss`` (train pairs) over the **final
  checkpoint's components**, with ``full_loss`` (all pairs) beside them, ``n_final_components``
  and ``final_components`` (array, 1 where a pair is one of them).

**Which components.** The final checkpoint's components are the fewest frequency pairs that
carry 90 % of the power of its *logits* (all classes), not of its correct-logit table. Restricted
and excluded loss act on every class's column of the logits, so the components must be where
that variation lies; the correct-logit table says how confident the model is across inputs, not
which answer it gives, and a model that gives every right answer the same logit (the ideal
``M · onehot(a(x, y))``, or an ideal clock on ``add``) has a constant correct-logit table: no
component at all, and a restricted loss that keeps nothing. Both counts are reported.

**The final checkpoint** is the one ``mechgrok analyze`` takes key frequencies from: its
components are what ``ctx.run.final_key_frequencies()`` holds for these tasks
(``{"components": [[k_x, k_y], …]}``, largest power first, found once per analysis by
:func:`final_spectrum_keys`, the key-frequency finder's answer for a task with no group), so
``analyze_model``'s ``final_model`` is honoured and a run trained further makes the records
stale (the ``key_freqs`` need).

The run's summary (``Probe.summarise``) lists the final components, largest power first, with
the losses, and its headline (printed by ``analyze``, on the report's card) ends "no circuit is
claimed".

Tasks with a group get "n/a" and the basis to read them in; a task whose pairs are not all of
Z_p × Z_p (none of the no-group tasks) gets "n/a" too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mechgrok.measures import spectrum
from mechgrok.probes.base import CheckpointContext, NotApplicable, Probe, RunContext
from mechgrok.tasks import get_task

__all__ = ["SPECTRUM_PROBES", "Spectrum2D", "final_components", "final_spectrum_keys",
           "grid_modulus", "no_group_reason"]

FRACTION = spectrum.DEFAULT_FRACTION  # key components carry 90 % of the power

def no_group_reason(run: RunContext) -> str | None:
    """None when the run's task has no group structure (the 2-D spectrum applies), else why
    not and the basis to read it in (from the task's algebra)."""
    task = get_task(run.config.task.name)
    data = getattr(run, "data", None)  # the run's own algebra: S_n at its degree
    alg = data.algebra if data is not None else task.algebra
    if not alg.is_group:
        return None
    return (f"{task.name} has a group ({alg.group_name}); read it in {alg.basis}: the 2-D "
            f"Fourier spectrum is for the tasks with no group structure")


def grid_modulus(run: RunContext) -> int:
    """p, when the run's pairs are all of Z_p × Z_p in row-major order (the grid the 2-D
    spectrum reads); else :class:`NotApplicable`."""
    p = run.p
    pairs = np.asarray(run.data.pairs)
    if p is None or pairs.shape != (p * p, 2):
        raise NotApplicable(f"the 2-D spectrum needs every pair of Z_p × Z_p; task "
                            f"{run.config.task.name} has {len(pairs)} pairs")
    x, y = np.divmod(np.arange(p * p), p)
    if not (np.array_equal(pairs[:, 0], x) and np.array_equal(pairs[:, 1], y)):
        raise NotApplicable("the 2-D spectrum needs the pairs in row-major (x, y) order")
    return p


def _components(logits: Any, p: int) -> list[tuple[int, int]]:
    return spectrum.key_components(spectrum.logits_spectrum(logits, p), FRACTION)


def final_spectrum_keys(run_ctx: RunContext, final_model: Any) -> dict[str, Any]:
    """The final checkpoint's components, largest power first: ``{"components": [[k_x, k_y],
    …]}`` (the key-frequency finder's answer for a task with no group)."""
    p = grid_modulus(run_ctx)
    with torch.no_grad():
        out, _ = final_model.run_with_cache(run_ctx.tokens, names_filter=lambda n: False)
    logits = out[:, -1] if out.ndim == 3 else out
    power = spectrum.logits_spectrum(logits, p)
    comps = sorted(_components(logits, p), key=lambda c: -float(power[c]))
    return {"components": [[int(a), int(b)] for a, b in comps]}


def final_components(ctx: CheckpointContext) -> list[tuple[int, int]]:
    """The final checkpoint's components (``ctx.run.final_key_frequencies()``, computed once
    per analysis from the final model: :func:`final_spectrum_keys`)."""
    final = ctx.run.final_key_frequencies()
    if "components" not in final:  # not for a task with no group
        raise NotApplicable("the final checkpoint has no 2-D components")
    return [(int(a), int(b)) for a, b in final["components"]]


def _mask(pairs: list[tuple[int, int]], K: int) -> np.ndarray:
    out = np.zeros((K + 1, K + 1), dtype=np.int8)
    for a, b in pairs:
        out[a, b] = 1
    return out


class Spectrum2D(Probe):
    """The ``spectrum2d`` probe (see the module docstring)."""

    name = "spectrum2d"
    description = ("2-D Fourier spectrum over Z_p × Z_p of the correct logit, the logits and the "
                   "neurons (tasks with no group); components carrying 90 % of the logits' power "
                   "on the final checkpoint, restricted/excluded loss over them. Describes the "
                   "tables: no circuit is claimed")
    needs = ("key_freqs", "all_pairs")

    def applies(self, run: RunContext) -> str | None:
        return no_group_reason(run)

    def compute(self, ctx: CheckpointContext) -> dict[str, Any]:
        p = grid_modulus(ctx.run)
        ap = ctx.all_pairs()
        logits, labels = ap.logits, ap.labels
        correct = spectrum.spectrum2d(spectrum.correct_logit_table(logits, labels, p), centre=True)
        per_class = spectrum.logits_spectrum(logits, p)
        neurons = spectrum.neuron_spectrum(ap.neurons.reshape(p, p, -1))
        final = final_components(ctx)
        losses = spectrum.restricted_and_excluded_2d(logits, labels, final, p, ctx.run.train_idx)
        full = float(torch.nn.functional.cross_entropy(logits.double(), labels))
        return {
            "circuit_claimed": False,
            "n_components_correct": len(spectrum.key_components(correct, FRACTION)),
            "top_fraction_correct": spectrum.top_fraction(correct),
            "n_components_logits": len(spectrum.key_components(per_class, FRACTION)),
            "top_fraction_logits": spectrum.top_fraction(per_class),
            "n_components_neurons": len(spectrum.key_components(neurons, FRACTION)),
            "restricted_loss": losses["restricted_loss"],
            "excluded_loss": losses["excluded_loss"],
            "full_loss": full,
            "n_final_components": len(final),
            "correct_logit_spectrum": correct,
            "logits_spectrum": per_class,
            "neuron_spectrum": neurons,
            "final_components": _mask(final, p // 2),
        }

    def summarise(self, run: RunContext, values: list[tuple[int, dict[str, Any]]],
                  arrays: Callable[[int], dict[str, Any]]) -> dict[str, Any] | None:
        """The last checkpoint's final components (largest power first) and losses, and
        ``circuit_claimed``: False."""
        if not values:
            return None
        epoch, last = values[-1]
        arr = arrays(epoch)
        mask, power = arr.get("final_components"), arr.get("logits_spectrum")
        if mask is None or power is None or np.shape(mask) != np.shape(power):
            return None
        kx, ky = np.nonzero(mask)
        order = np.argsort(-power[kx, ky], kind="stable")
        return {"epoch": epoch, "circuit_claimed": False,
                "final_components": [[int(kx[i]), int(ky[i])] for i in order],
                "n_pairs": int(mask.size) - 1,
                **{k: last.get(k) for k in ("restricted_loss", "excluded_loss", "full_loss",
                                            "n_components_correct")}}

    def headline(self, summary: dict[str, Any]) -> str | None:
        n, total = len(summary.get("final_components") or []), summary.get("n_pairs")
        r, x = summary.get("restricted_loss"), summary.get("excluded_loss")
        losses = (f" (restricted loss {r:.3g}, excluded loss {x:.3g})"
                  if isinstance(r, float) and isinstance(x, float) else "")
        return (f"{n} of {total} frequency pairs (k_x, k_y) carry 90 % of the final logits' "
                f"power{losses}; this describes the tables: no circuit is claimed")


SPECTRUM_PROBES: list[Probe] = [Spectrum2D()]

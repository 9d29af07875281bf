"""Softmax collapse and naïve loss minimisation (Prieto et al. 2025; MEASURES.md §6).

Pure functions of tensors: training-set logits ``(n, C)`` and labels ``(n,)`` in, numbers out.

Conventions (these are mechgrok's; the literature leaves them open):

* **Softmax collapse (SC).** The logits are cast to ``dtype`` (float32 or float64), shifted by
  their row maximum, ``z' = z − max z``, and a row is *collapsed* when ``Σ_j exp(z'_j) == 1``
  exactly in that dtype. By default the sum is ``torch.sum`` on the logits' device (as in Prieto
  et al.'s logger), after making the tensor contiguous. **Footgun:** a floating-point sum depends
  on its order, and torch's order depends on the backend (CPU vector width, GPU) and even on
  the memory layout, so the collapse point of a given row can move between machines. With
  ``exact=True`` the criterion is instead the *correctly rounded* sum of the exponentials:
  ``1 + r`` rounds to 1, where r is the sum of all terms but one maximal one, i.e.
  ``r ≤ eps / 2`` (``eps = torch.finfo(dtype).eps``, ties to even); r is added up in float64, so
  the answer is exact except within a relative ``C · 2⁻⁵³`` of the boundary (float64 only).
  Machine-independent, but not what a training step computes.
* **Thresholds.** For a row of C logits with gap g between the top logit and the rest, the
  worst case (the largest sum at a given gap, so the largest gap needed to collapse) is when
  all the other C − 1 logits are equal: ``[g, 0, …, 0]``, whose sum is ``1 + (C − 1) e^(−g)``.
  Any summation order collapses it somewhere between ``ln(2 / eps)`` (every small term lost on
  its own) and ``ln(C − 1) + ln(2 / eps)`` (the correctly rounded sum): for C = 113 that is
  [16.64, 21.35] in float32 and [36.74, 41.46] in float64. Measured on an x86 CPU with
  torch 2.13: SC at 19.28 (float32) and 40.07 (float64) with ``torch.sum``, 21.35 and 41.46
  with ``exact=True``; the cross-entropy of the top class (``log_softmax``, whose reduction
  adds in yet another order) becomes exactly 0 at 20.66 (float32) and 39.38 (float64), the
  "about 21 / about 39.5" of MEASURES.md §6. The SC and zero-loss thresholds are
  therefore *not* the same number, and neither is portable to another backend to better than
  these intervals: compute them where the run ran (``device=``).
* **Zero loss.** ``F.cross_entropy(logits.to(dtype), labels, reduction="none") == 0`` exactly,
  the same computation as mechgrok's training loss (:mod:`mechgrok.training.losses`). A zero
  loss means a zero gradient for the correct logit.
* **Logit gap** is max − second max per row, in float64 on the CPU; a tie gives 0.
  ``gap_quantiles`` interpolates linearly (``torch.quantile``), so the median of an even
  number of gaps is the mean of the middle two.
* **NLM alignment** is the cosine between −∇L and θ, in float64: +1 means the gradient step
  just scales the weights up. Per tensor and over all tensors concatenated (in the order of
  ``params``); a zero-norm tensor (weights or gradient) gives NaN for its entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from mechgrok.probes.base import Probe

__all__ = [
    "PRECISIONS",
    "collapse_probe",
    "collapse_status",
    "collapse_threshold",
    "gap_quantiles",
    "logit_gap",
    "logit_norm",
    "nlm_alignment",
    "sc_fraction",
    "zero_loss_fraction",
    "zero_loss_threshold",
]

_F64 = torch.float64
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    dt = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype such as torch.float32 or 'float64', "
                         f"got {dtype!r}")
    return dt


def _check_logits(logits: Tensor, min_classes: int = 1) -> None:
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < min_classes:
        raise ValueError(f"expected logits of shape (n ≥ 1, C ≥ {min_classes}), "
                         f"got {tuple(logits.shape)}")


def _check_labels(logits: Tensor, labels: Tensor) -> None:
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"expected labels of shape ({logits.shape[0]},) for logits "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}")


def _f64(t: Tensor) -> Tensor:
    return t.detach().to(device="cpu", dtype=_F64)


# --- softmax collapse ----------------------------------------------------------------------


def _collapsed(logits: Tensor, dt: torch.dtype, exact: bool) -> Tensor:
    """``(n,)`` bool: is ``Σ exp(z − max z) == 1`` in ``dt``, row by row."""
    z = logits.detach().to(dt).contiguous()
    e = torch.exp(z - z.amax(dim=-1, keepdim=True))  # (n, C); a maximal entry is exactly 1
    if not exact:
        return e.sum(dim=-1) == 1
    rest = e.scatter(-1, e.argmax(dim=-1, keepdim=True), 0.0)  # all but one maximal term
    return rest.to(_F64).sum(dim=-1) <= torch.finfo(dt).eps / 2


def sc_fraction(logits: Tensor, dtype: str | torch.dtype, *, exact: bool = False) -> float:
    """Fraction of rows of ``logits (n, C)`` whose softmax has collapsed in ``dtype``.

    A row is collapsed when ``Σ exp(z − max z) == 1`` exactly; ``exact=True`` uses the
    correctly rounded sum instead of ``torch.sum`` (see the module docstring).
    """
    _check_logits(logits)
    return float(_collapsed(logits, _dtype(dtype), exact).to(_F64).mean().item())


def zero_loss_fraction(logits: Tensor, labels: Tensor, dtype: str | torch.dtype) -> float:
    """Fraction of samples whose cross-entropy, computed in ``dtype``, is exactly 0."""
    _check_logits(logits)
    _check_labels(logits, labels)
    loss = F.cross_entropy(logits.detach().to(_dtype(dtype)), labels, reduction="none")
    return float((loss == 0).to(_F64).mean().item())


def logit_gap(logits: Tensor) -> Tensor:
    """``(n,)`` float64: the largest minus the second largest logit of each row."""
    _check_logits(logits, min_classes=2)
    top2 = _f64(logits).topk(2, dim=-1).values  # (n, 2)
    return top2[:, 0] - top2[:, 1]


def gap_quantiles(gaps: Tensor) -> dict[str, float]:
    """``{"min", "q10", "median", "q90", "max"}`` of ``gaps`` (linear interpolation)."""
    g = _f64(gaps).reshape(-1)
    if g.numel() == 0:
        raise ValueError("gap_quantiles needs at least one gap")
    q = torch.quantile(g, torch.tensor([0.1, 0.5, 0.9], dtype=_F64)).tolist()
    return {"min": float(g.min()), "q10": q[0], "median": q[1], "q90": q[2],
            "max": float(g.max())}


def logit_norm(logits: Tensor) -> float:
    """Mean over rows of the L2 norm of each logit row, in float64."""
    _check_logits(logits)
    return float(_f64(logits).norm(dim=-1).mean())


# --- thresholds ----------------------------------------------------------------------------


def _threshold(test: Callable[[float], bool], rel_tol: float = 1e-9) -> float:
    """The smallest g > 0 with ``test(g)``, by bisection; ``test`` must be monotone in g."""
    lo, hi = 0.0, 1.0
    if test(lo):
        return 0.0
    while not test(hi):
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError("no gap up to 1e6 satisfies the criterion")
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _gap_row(g: float, n_classes: int, device: str | torch.device) -> Tensor:
    """``[[g, 0, …, 0]]``, ``(1, n_classes)`` float64: the worst case at gap g."""
    z = torch.zeros(1, n_classes, dtype=_F64, device=device)
    z[0, 0] = g
    return z


def _check_classes(n_classes: int) -> int:
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer ≥ 2, got {n_classes!r}")
    return int(n_classes)


def collapse_threshold(n_classes: int, dtype: str | torch.dtype, *, exact: bool = False,
                       device: str | torch.device = "cpu") -> float:
    """The smallest logit gap at which the worst-case row ``[g, 0, …, 0]`` collapses in ``dtype``.

    Evaluated with the same criterion as :func:`sc_fraction` (``exact`` as there) on
    ``device``; bisection in float64 over g to a relative 1e-9. With the other logits equal the
    sum ``1 + (C − 1) e^(−g)`` is the largest possible at gap g, so any row whose gap exceeds
    this threshold has collapsed too (for the same summation order). For 113 classes on an x86
    CPU: about 19.28 (float32) and 40.07 (float64); with ``exact=True``
    ``ln 112 + ln(2 / eps)``: 21.35 and 41.46.
    """
    n, dt = _check_classes(n_classes), _dtype(dtype)
    return _threshold(lambda g: bool(_collapsed(_gap_row(g, n, device), dt, exact).item()))


def zero_loss_threshold(n_classes: int, dtype: str | torch.dtype, *,
                        device: str | torch.device = "cpu") -> float:
    """The smallest gap g at which the cross-entropy of the top class of ``[g, 0, …, 0]`` is 0.

    The loss is :func:`zero_loss_fraction`'s (``F.cross_entropy`` in ``dtype`` on ``device``).
    For 113 classes on an x86 CPU: about 20.66 (float32) and 39.38 (float64), close to but not
    equal to the SC threshold, because ``log_softmax`` adds its terms in another order.
    """
    n, dt = _check_classes(n_classes), _dtype(dtype)
    label = torch.zeros(1, dtype=torch.long, device=device)

    def zero(g: float) -> bool:
        loss = F.cross_entropy(_gap_row(g, n, device).to(dt), label, reduction="none")
        return bool((loss == 0).item())

    return _threshold(zero)


# --- naïve loss minimisation ---------------------------------------------------------------


def _cosine(a: Tensor, b: Tensor) -> float:
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return math.nan
    return float(torch.dot(a, b) / (na * nb))


def nlm_alignment(params: dict[str, Tensor], grads: dict[str, Tensor]) -> dict[str, Any]:
    """Cosine between −∇L and the weights θ: ``{"overall": float, "per_tensor": {name: float}}``.

    ``params`` and ``grads`` map the same names to tensors of the same shapes (for example
    ``dict(model.named_parameters())`` and their ``.grad``). Computed in float64; a tensor whose
    weights or gradient have zero norm gives NaN for its entry.
    """
    if set(params) != set(grads):
        missing = sorted(set(params) ^ set(grads))
        raise ValueError(f"params and grads must have the same names; these are in only one: "
                         f"{missing}")
    if not params:
        raise ValueError("nlm_alignment needs at least one tensor")
    per: dict[str, float] = {}
    flat_w, flat_g = [], []
    for name, w in params.items():
        g = grads[name]
        if tuple(g.shape) != tuple(w.shape):
            raise ValueError(f"grad {name!r} has shape {tuple(g.shape)}, but the weights have "
                             f"{tuple(w.shape)}")
        w64, ng64 = _f64(w).reshape(-1), -_f64(g).reshape(-1)
        per[name] = _cosine(ng64, w64)
        flat_w.append(w64)
        flat_g.append(ng64)
    return {"overall": _cosine(torch.cat(flat_g), torch.cat(flat_w)), "per_tensor": per}


# --- the probe -----------------------------------------------------------------------------

#: Precisions in which the collapse measures are reported side by side.
PRECISIONS = ("float32", "float64")


def _nan_to_none(v: float) -> float | None:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _collapse_probe() -> Probe:
    from mechgrok.probes.base import CheckpointContext, probe

    @probe("collapse", needs=("all_pairs", "grad"),
           description="softmax collapse in float32 and float64 on the training set, zero-loss "
                       "fraction, logit gap and norm, naive-loss-minimisation alignment")
    def collapse(ctx: CheckpointContext) -> dict[str, Any]:
        """Prieto et al.'s measures at one checkpoint (module docstring for the conventions).

        The training logits are the all-pairs forward's (the model's own precision), restricted
        to the train split, then cast to each precision. NLM: the gradient of the run's own
        training loss (cross-entropy or StableMax, in ``train.loss_dtype``) over the full
        training set with respect to every trainable parameter, by ``torch.autograd.grad`` (the
        parameters' ``.grad`` are left alone); values ``nlm_cosine`` and
        ``nlm_cosine/<parameter>`` (dots in names become slashes).
        """
        from mechgrok.training.losses import loss_function

        run = ctx.run
        ap = ctx.all_pairs()
        idx = run.train_idx
        logits, labels = ap.logits[idx].detach(), run.labels[idx]
        out: dict[str, Any] = {}
        for dt in PRECISIONS:
            out[f"sc_fraction_{dt}"] = sc_fraction(logits, dt)
            out[f"zero_loss_fraction_{dt}"] = zero_loss_fraction(logits, labels, dt)
        gaps = logit_gap(logits)
        for k, v in gap_quantiles(gaps).items():
            out[f"gap_{k}"] = v
        out["logit_norm"] = logit_norm(logits)
        out["gaps"] = gaps.to(torch.float32)

        named = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
        with torch.enable_grad():
            loss = loss_function(ctx.config.train)(ctx.model.forward_last(run.tokens[idx]), labels)
            grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
        grads_d = {n: (g if g is not None else torch.zeros_like(p))
                   for (n, p), g in zip(named.items(), grads)}
        nlm = nlm_alignment({n: p.detach() for n, p in named.items()}, grads_d)
        out["nlm_cosine"] = _nan_to_none(nlm["overall"])
        for n, v in nlm["per_tensor"].items():
            out[f"nlm_cosine/{n.replace('.', '/')}"] = _nan_to_none(v)
        return out

    return collapse


collapse_probe = _collapse_probe()


def collapse_status(sc32: float, sc64: float, test_acc: float | None = None) -> str:
    """One line for the summary: whether float32 softmax collapse is stalling this run."""
    pct = f"{100 * sc32:.0f} % of training samples collapsed in float32, {100 * sc64:.0f} % in " \
          f"float64"
    if sc32 >= 0.5 and (test_acc is None or test_acc < 0.99):
        return f"softmax collapse: {pct}, and the model has not generalised"
    if sc32 >= 0.5:
        return f"collapsed after generalising: {pct}"
    if sc32 > 0:
        return f"partial: {pct}"
    return f"none: {pct}"

"""Clock or pizza (Zhong et al. 2023, MEASURES.md §5): which algorithm a model of add mod p runs.

The *clock* adds angles: its correct-class logit depends on the inputs only through the answer,
and the two operands enter the network asymmetrically. The *pizza* averages the two operands'
circle vectors: its correct-class logit also depends on their distance, and the operands enter
symmetrically. Three measures tell them apart; pure functions of tensors here, one probe below.

Conventions (where the paper leaves room, these are mechgrok's):

* **Correct-logit table over (s, d)** (:func:`logit_table_sd`). The input is ``C[x, y]``, the
  logit of the *correct* class for input (x, y) (one public script used the largest incorrect
  logit by mistake). For ``add``, ``s = x + y`` (the answer) and ``d = x − y`` (mod p); the
  table is ``L[s, d] = C[(s + d)/2, (s − d)/2]``, divisions by 2 mod p. That needs 2 to be
  invertible mod p, so **p must be odd** (even p raises ``ValueError``; the probe says n/a).
  For ``sub`` the roles swap: **"s" is always the answer-determining combination**, so
  ``s = x − y`` (the answer) and ``d = x + y``.
* **Distance irrelevance** (:func:`distance_irrelevance`):
  ``DI = mean_d std_s L[s, d] / std(L)``, with **population** standard deviations (ddof 0, as
  NumPy's default in the public script). Then a logit that depends only on s gives exactly 1,
  one that depends only on d gives 0, and DI ∈ [0, 1] always (law of total variance). A constant
  table (``std(L) ≤ 1e-12 · max|L|``) has no DI: the result is NaN. Note that an *ideal* clock,
  ``logit_c = cos(w(x + y − c))``, has a constant correct logit (1), hence NaN: DI ≈ 1 describes
  real clocks, whose correct logit varies with s (an output bias, unequal radii).
* **Gradient symmetricity** (:func:`gradient_symmetricity`): ``n_triples`` distinct triples
  (a, b, c) drawn uniformly without replacement from all p³ by a seeded ``torch.Generator``
  (same seed, same triples, same number); c is any class, not the answer (as in the public
  scripts). For input ``[a, b, =]`` (``=`` is token p unless ``eq_token`` says otherwise; the
  MLP ignores it), take the gradient of ``logit_c`` at the read-out position with respect to
  the ``hook_embed`` activation, the token embeddings *before* position embeddings (one-hot
  vectors for a one-hot MLP), at position 0 (∂/∂e_a) and 1 (∂/∂e_b); GS is the mean over
  triples of their cosine, computed in float64. A triple with an all-zero gradient contributes
  0. One batched forward, and ``torch.autograd.grad`` with respect to a leaf that replaces the
  ``hook_embed`` activation: the model's parameters, their ``.grad`` and its hooks are left as
  they were. It runs under ``torch.enable_grad()``, whatever the caller's grad mode.
* **Circularity** (:func:`circularity`): PCA (scikit-learn, centred, ``svd_solver="full"``) of
  the (p, d) embedding of the p elements; for each of the top ``n_components`` PCs, the Fourier
  power of its score vector over the p elements per frequency k = 1 … K (orthonormal basis of
  :mod:`mechgrok.probes.fourier`: power_k = cos_k² + sin_k², constant excluded),
  ``best_freq = argmax_k`` and ``power_frac = max_k power_k / Σ_k power_k``. Circularity is the
  mean of ``power_frac`` over the first ``min(4, n_components)`` PCs (Zhong: first 4). A PC with
  no variance (≤ 1e-10 × the first PC's) has no frequency: ``power_frac`` NaN, ``best_freq`` 0,
  and it is left out of the mean; a constant embedding has circularity NaN.
  ``n_components`` must be ≤ min(p, d).

Verdict (:func:`verdict`, thresholds in :class:`VerdictRules`; Zhong gives none, these are
mechgrok's and the raw numbers are always reported beside the verdict):

1. ``"non-circular"`` when ``circularity < circ_min`` (0.5): no clean circle to speak of;
2. else ``"pizza"`` when ``GS > pizza_gs`` (0.98) **and** ``DI < pizza_di`` (0.5);
3. else ``"clock"`` when ``GS < clock_gs`` (0.9) **and** ``DI > clock_di`` (0.6): both measures
   point away from the pizza (the operands enter asymmetrically, and the correct logit depends
   mostly on the answer);
4. else ``"mixed"``.

Calibration (mechgrok-clockpizza-v2): on the ``zhong-clock`` preset (α = 1) seeds 0, 1, 2 gave
GS 0.40 / 0.50 / 0.15 and DI 0.74 / 0.75 / 0.62; on ``zhong-pizza`` (α = 0) seeds 0, 1 gave
GS 1.000 / 1.000 and DI 0.22 / 0.45. A rule asking DI > 0.8 alone (MEASURES.md's example) called every α = 1 model
"mixed"; the GS gap between the two presets (≤ 0.5 vs 1.000) is the larger and more stable one,
so the clock rule leans on it and keeps a DI floor above the pizza's ceiling.

Inequalities are strict: a value exactly on a threshold does not pass it (circularity equal to
``circ_min`` counts as circular). NaN measures have no verdict (``verdict`` raises; the probe
reports ``verdict_code`` None). Codes in the measures table: :data:`VERDICTS` (0 non-circular,
1 clock, 2 pizza, 3 mixed). Zhong's reference numbers: constant attention (α = 0, p = 59)
GS 0.994, DI 0.17 (pizza); their linear model GS 1.000, DI 0.23.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechgrok.errors import ConfigError
from mechgrok.probes import fourier
from mechgrok.probes.base import CheckpointContext, NotApplicable, RunContext, probe
from mechgrok.tasks import token_triples

__all__ = [
    "CLOCKPIZZA_PROBES",
    "VERDICTS",
    "VerdictRules",
    "circularity",
    "clock_pizza",
    "distance_irrelevance",
    "gradient_symmetricity",
    "logit_table_sd",
    "verdict",
]

VERDICTS = ("non-circular", "clock", "pizza", "mixed")
"""``verdict_code`` → verdict name."""

N_TRIPLES = 100  # gradient symmetricity triples (Zhong: 100)
N_COMPONENTS = 4  # PCs for circularity (Zhong: the first 4)


# --- the correct-logit table and distance irrelevance --------------------------------------


def _check_odd_p(p: int) -> int:
    if isinstance(p, bool) or int(p) != p or p < 3:
        raise ValueError(f"p must be an odd integer ≥ 3, got {p!r}")
    if p % 2 == 0:
        raise ValueError(f"the (s, d) = (x + y, x − y) change of variables needs p odd (2 must "
                         f"be invertible mod p to recover x and y); got p = {p}")
    return int(p)


def logit_table_sd(correct_logits: Tensor, p: int, op: str = "add") -> Tensor:
    """``(p, p)`` correct logits ``C[x, y]`` → ``(p, p)`` table ``L[s, d]`` (float64).

    add: ``s = x + y``, ``d = x − y``; sub: ``s = x − y``, ``d = x + y`` (s is the answer). With
    ``h = 2⁻¹ mod p``: add reads ``C[(s + d)·h, (s − d)·h]``, sub ``C[(s + d)·h, (d − s)·h]``.
    """
    p = _check_odd_p(p)
    if op not in ("add", "sub"):
        raise ValueError(f"op must be 'add' or 'sub', got {op!r}")
    if tuple(correct_logits.shape) != (p, p):
        raise ValueError(f"expected correct logits of shape (p, p) = ({p}, {p}) indexed [x, y], "
                         f"got {tuple(correct_logits.shape)}")
    h = (p + 1) // 2  # 2·h = p + 1 ≡ 1 (mod p)
    s = torch.arange(p)[:, None]  # (p, 1)
    d = torch.arange(p)[None, :]  # (1, p)
    x = ((s + d) * h) % p  # (p, p)
    y = (((s - d) if op == "add" else (d - s)) * h) % p
    return correct_logits.detach().to("cpu", torch.float64)[x, y]


def distance_irrelevance(correct_logits: Tensor, p: int, op: str = "add") -> float:
    """``mean_d std_s L[s, d] / std(L)``, population stds; NaN for a constant table."""
    L = logit_table_sd(correct_logits, p, op)  # (s, d)
    total = L.std(correction=0)
    if float(total) <= 1e-12 * float(L.abs().max()):  # constant (also all zeros: 0 ≤ 0)
        return math.nan
    return float(L.std(dim=0, correction=0).mean() / total)


# --- gradient symmetricity -----------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _triples(p: int, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The seeded sample of distinct triples (a, b, c), drawn once per (p, n, seed): the
    permutation of all p³ triples costs ~20 ms at p = 113, and every checkpoint reuses it."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(p**3, generator=gen)[:n]  # distinct triples, a·p² + b·p + c
    return idx // (p * p), (idx // p) % p, idx % p


def gradient_symmetricity(model: Any, p: int, n_triples: int = N_TRIPLES, seed: int = 0,
                          eq_token: int | None = None) -> float:
    """Mean over sampled (a, b, c) of cos(∂logit_c/∂e_a, ∂logit_c/∂e_b) (module docstring)."""
    if isinstance(p, bool) or int(p) != p or p < 2:
        raise ValueError(f"p must be an integer ≥ 2, got {p!r}")
    if isinstance(n_triples, bool) or int(n_triples) != n_triples or not 1 <= n_triples <= p**3:
        raise ValueError(f"n_triples must be an integer in 1..p³ = {p**3}, got {n_triples!r}")
    a, b, c = _triples(p, int(n_triples), int(seed))
    device = next(model.parameters()).device
    eq = p if eq_token is None else int(eq_token)
    tokens = torch.from_numpy(token_triples(a.numpy(), b.numpy(), eq)).to(device)  # (n, 3)
    leaves: list[Tensor] = []

    def as_leaf(act: Tensor, hook: Any) -> Tensor:  # replaces the hook_embed activation
        leaf = act.detach().clone().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    with torch.enable_grad():
        out = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", as_leaf)])
        logits = out[:, -1] if out.ndim == 3 else out  # (n, n_classes) at the read-out position
        chosen = logits.gather(1, c.to(device)[:, None]).sum()  # examples are independent
        (grad,) = torch.autograd.grad(chosen, leaves[0])  # (n, pos, d); no .grad on parameters
    g = grad.detach().to("cpu", torch.float64)
    g_a, g_b = g[:, 0], g[:, 1]  # (n, d): ∂logit_c/∂e_a, ∂logit_c/∂e_b
    norms = g_a.norm(dim=-1) * g_b.norm(dim=-1)  # (n,)
    cos = (g_a * g_b).sum(dim=-1) / torch.where(norms > 0, norms, 1.0)  # 0 for a zero gradient
    return float(cos.mean())


# --- circularity ---------------------------------------------------------------------------


def circularity(embedding: Tensor, p: int, n_components: int = N_COMPONENTS) -> dict[str, Any]:
    """How well the top PCs of the ``(p, d)`` embedding are pure Fourier modes over Z_p.

    Returns ``circularity`` (float), and per PC ``pc_best_freq`` (int, k ≥ 1; 0 for a PC with no
    variance), ``pc_power_frac`` (best-k power / power over k ≥ 1), ``projections`` ``(p, n)``
    and ``explained_variance_ratio`` ``(n,)``.
    """
    from sklearn.decomposition import PCA

    X = embedding.detach().to("cpu", torch.float64).numpy()  # (p, d)
    if X.ndim != 2 or X.shape[0] != p:
        raise ValueError(f"expected an embedding of shape (p = {p}, d), got {X.shape}")
    d = X.shape[1]
    if isinstance(n_components, bool) or int(n_components) != n_components or not (
            1 <= n_components <= min(p, d)):
        raise ValueError(f"n_components must be an integer in 1..min(p, d) = {min(p, d)}, "
                         f"got {n_components!r}")
    n = int(n_components)
    best = np.zeros(n, dtype=np.int64)
    frac = np.full(n, np.nan)
    if not float(((X - X.mean(axis=0)) ** 2).sum()) > 0.0:  # constant: no principal components
        return {"circularity": math.nan, "pc_best_freq": best, "pc_power_frac": frac,
                "projections": np.zeros((p, n)), "explained_variance_ratio": np.zeros(n)}
    pca = PCA(n_components=n, svd_solver="full")
    proj = pca.fit_transform(X)  # (p, n) scores of the p elements, centred
    var = pca.explained_variance_
    for j in range(n):
        if var[j] <= 1e-10 * var[0]:
            continue  # no variance, no frequency
        power = fourier.frequency_norms(torch.from_numpy(proj[:, j:j + 1])).square()  # (K,)
        best[j] = int(power.argmax()) + 1
        frac[j] = float(power.max() / power.sum())
    first = frac[: min(4, n)]
    first = first[~np.isnan(first)]
    circ = float(first.mean()) if first.size else math.nan
    return {"circularity": circ, "pc_best_freq": best, "pc_power_frac": frac,
            "projections": proj, "explained_variance_ratio": pca.explained_variance_ratio_}


# --- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictRules:
    """Thresholds of the clock/pizza verdict (module docstring); mechgrok's, not Zhong's.

    * ``pizza_gs`` (0.98): pizza needs gradient symmetricity above this (a cosine, in [−1, 1]);
    * ``pizza_di`` (0.5): … and distance irrelevance below this;
    * ``clock_gs`` (0.9): clock needs gradient symmetricity below this;
    * ``clock_di`` (0.6): … and distance irrelevance above this (≥ ``pizza_di``);
    * ``circ_min`` (0.5): below this circularity the verdict is "non-circular".
    """

    pizza_gs: float = 0.98
    pizza_di: float = 0.5
    clock_di: float = 0.6
    circ_min: float = 0.5
    clock_gs: float = 0.9

    def __post_init__(self) -> None:
        for name in ("pizza_gs", "pizza_di", "clock_di", "circ_min", "clock_gs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
                raise ConfigError(f"VerdictRules.{name} must be a finite number, got {v!r}")
        for name in ("pizza_gs", "clock_gs"):
            v = getattr(self, name)
            if not -1.0 <= v <= 1.0:
                raise ConfigError(f"VerdictRules.{name} is a cosine threshold in [-1, 1], "
                                  f"got {v!r}")
        for name in ("pizza_di", "clock_di", "circ_min"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"VerdictRules.{name} is a threshold in [0, 1] (the measure's "
                                  f"range), got {v!r}")
        if self.pizza_di > self.clock_di:
            raise ConfigError(f"VerdictRules.pizza_di ({self.pizza_di!r}) must be ≤ clock_di "
                              f"({self.clock_di!r}): a pizza has low distance irrelevance, a "
                              f"clock high")

    def classify(self, gs: float, di: float, circ: float) -> str:
        """The verdict name for these measures (see :func:`verdict`)."""
        for name, v in (("gradient symmetricity", gs), ("distance irrelevance", di),
                        ("circularity", circ)):
            if not math.isfinite(v):
                raise ValueError(f"no verdict: {name} is {v!r}")
        if circ < self.circ_min:
            return "non-circular"
        if gs > self.pizza_gs and di < self.pizza_di:
            return "pizza"
        if gs < self.clock_gs and di > self.clock_di:
            return "clock"
        return "mixed"


def verdict(gs: float, di: float, circ: float, *, pizza_gs: float = 0.98, pizza_di: float = 0.5,
            clock_di: float = 0.6, circ_min: float = 0.5, clock_gs: float = 0.9) -> str:
    """non-circular if circ < circ_min; pizza if gs > pizza_gs and di < pizza_di; clock if
    gs < clock_gs and di > clock_di; otherwise mixed. Non-finite measures raise ``ValueError``."""
    rules = VerdictRules(pizza_gs=pizza_gs, pizza_di=pizza_di, clock_di=clock_di,
                         circ_min=circ_min, clock_gs=clock_gs)
    return rules.classify(gs, di, circ)


# --- the probe -----------------------------------------------------------------------------


def _odd_p(run: RunContext) -> str | None:
    why = run.z_p_reason()
    if why is not None:  # Zhong et al.'s measures are defined on Z_p's residues
        return f"clock/pizza is {why}"
    p = run.p
    if p is None or p % 2 == 0:
        return (f"clock/pizza needs an odd modulus: the (x + y, x − y) change of variables "
                f"divides by 2 mod p; p = {p}")
    return None


@probe("clock_pizza", needs=("fourier", "all_pairs", "grad"), applies=_odd_p,
       description="Zhong's clock-or-pizza measures: gradient symmetricity, distance "
                   "irrelevance (correct logit), embedding circularity, and mechgrok's verdict")
def clock_pizza(ctx: CheckpointContext) -> dict[str, Any]:
    reason = _odd_p(ctx.run)
    if reason is not None:
        raise NotApplicable(reason)
    p, op = ctx.run.z_p()
    ap = ctx.all_pairs()
    correct = ap.logits.gather(1, ap.labels[:, None].to(ap.logits.device))  # (p², 1) row-major
    L = logit_table_sd(correct.reshape(p, p), p, op)  # (s, d)
    di = distance_irrelevance(correct.reshape(p, p), p, op)
    gs = gradient_symmetricity(ctx.model, p, n_triples=min(N_TRIPLES, p**3), seed=0)
    with torch.no_grad():
        emb = ctx.model.token_embedding().detach()  # (p, d)
    c = circularity(emb, p, n_components=min(N_COMPONENTS, p, emb.shape[1]))
    finite = all(math.isfinite(v) for v in (gs, di, c["circularity"]))
    code = VERDICTS.index(verdict(gs, di, c["circularity"])) if finite else None
    return {
        "gradient_symmetricity": gs,
        "distance_irrelevance": di,
        "circularity": c["circularity"],
        "verdict_code": code,
        "logit_sd": L,
        "pc_projections": c["projections"],
        "pc_best_freq": c["pc_best_freq"],
        "pc_power_frac": c["pc_power_frac"],
        "explained_variance_ratio": c["explained_variance_ratio"],
    }


CLOCKPIZZA_PROBES = [clock_pizza]

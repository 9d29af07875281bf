"""Numerical-stability tools for grokking runs: StableMax, ⊥Grad and Grokfast (MEASURES.md §3).

Standalone PyTorch pieces to import into any training loop; nothing here knows about mechgrok's
models, configs or run directories.

Conventions (where public implementations differ, these are mechgrok's):

* **StableMax** (Prieto et al. 2025). ``s(x) = x + 1`` for ``x ≥ 0`` and ``1 / (1 − x)`` for
  ``x < 0``; ``StableMax(z)_i = s(z_i) / Σ_j s(z_j)`` over the last axis (or ``dim``). The public
  code computes ``log(s / Σ s)`` directly, which gives ``log 0 = −inf`` once a ratio underflows
  (``s = 1e−30`` beside ``s = 1e30`` in float32) and needs an ``epsilon`` against ``1 / 0``.
  Here ``log s(z)`` is ``log1p(z)`` for ``z ≥ 0`` and ``−log1p(−z)`` for ``z < 0`` (each branch
  evaluated on a clamped input, so the branch that ``torch.where`` discards never makes an inf
  or a NaN gradient), and the normalisation is a max-shifted log-sum-exp of those logs
  (``log_softmax(log s)``). Values and gradients stay finite for logits up to ±1e30 in float32,
  with no epsilon; ``stablemax`` is ``exp`` of that, so tiny probabilities may round to 0.
* **⊥Grad** (Prieto et al. 2025). Per parameter tensor (the only mode):
  ``g⊥ = g − (⟨w, g⟩ / (⟨w, w⟩ + eps)) w``, then ``g⊥`` is rescaled to ``‖g‖``. Dot products
  and norms are taken in float64. Where ``w = 0`` or ``g⊥ = 0`` the gradient is left exactly as
  it was. :class:`OrthoGrad` *wraps* an optimiser the caller built (its betas, eps, learning
  rate and weight decay are untouched; a public version rebuilt the optimiser and silently
  dropped the betas). Weight decay inside the base optimiser is applied after the projection:
  decoupled decay (AdamW) shrinks the weights as usual; L2 decay (Adam, SGD ``weight_decay``)
  adds ``λw`` to the projected gradient inside the base step.
* **Grokfast** (Lee et al. 2024), applied between ``backward()`` and ``optimizer.step()``, in
  place on ``.grad``. EMA: ``μ ← α μ + (1 − α) g`` then ``g ← g + λ μ``; on a parameter's first
  gradient μ starts at that gradient (as ``gradfilter_ema`` does with ``grads=None``), so the
  first filtered gradient is ``(1 + λ) g``. MA: ``g ← g + λ · mean`` of the last ``window``
  gradients (the current one included), applied only once ``window`` gradients have been seen;
  before that the gradient is unchanged (``gradfilter_ma`` with ``warmup=True``). The filters
  keep their own copies of the gradients (the MA filter holds ``window`` copies per parameter).
  Their state goes to and from flat ``{name: tensor}`` dicts (:meth:`GrokfastEMA.tensors`,
  :meth:`GrokfastEMA.load_tensors`) that safetensors can store.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from mechgrok.errors import ConfigError

__all__ = [
    "GrokfastEMA",
    "GrokfastMA",
    "OrthoGrad",
    "log_stablemax",
    "orthogonalize_",
    "stablemax",
    "stablemax_cross_entropy",
    "stablemax_s",
]

_REDUCTIONS = ("mean", "sum", "none")


# --- StableMax -----------------------------------------------------------------------------


def stablemax_s(x: Tensor) -> Tensor:
    """``s(x) = x + 1`` for ``x ≥ 0``, ``1 / (1 − x)`` for ``x < 0``, elementwise."""
    neg = x.clamp(max=0)  # 1 − neg ≥ 1: the discarded branch never divides by zero
    return torch.where(x >= 0, x + 1, 1 / (1 - neg))


def _log_s(x: Tensor) -> Tensor:
    """``log s(x)``: ``log1p(x)`` for ``x ≥ 0``, ``−log1p(−x)`` for ``x < 0``."""
    return torch.where(x >= 0, torch.log1p(x.clamp(min=0)), -torch.log1p((-x).clamp(min=0)))


def log_stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    """``log StableMax(logits)`` along ``dim``, in the logits' dtype; finite up to ±1e30."""
    # log_softmax of log s: (log s − max) − log Σ exp(log s − max), so equal logits stay exact
    return torch.log_softmax(_log_s(logits), dim=dim)


def stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    """``StableMax(logits)_i = s(z_i) / Σ_j s(z_j)`` along ``dim`` (sums to one)."""
    return log_stablemax(logits, dim=dim).exp()


def stablemax_cross_entropy(logits: Tensor, labels: Tensor, dtype: torch.dtype | None = None,
                            reduction: str = "mean") -> Tensor:
    """``−log StableMax(logits)_y`` for ``logits (..., C)`` and integer ``labels (...)``.

    With ``dtype`` (for example ``torch.float64``, as Prieto et al. do) the logits are cast first
    and the loss comes back in that dtype. ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}, "
                         f"got {reduction!r}")
    if logits.ndim < 1 or tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels must have the shape of logits without its class axis: logits "
                         f"{tuple(logits.shape)} needs labels {tuple(logits.shape[:-1])}, "
                         f"got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    z = logits if dtype is None else logits.to(dtype)
    logp = log_stablemax(z, dim=-1)
    loss = -logp.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# --- ⊥Grad ---------------------------------------------------------------------------------


@torch.no_grad()
def orthogonalize_(params: Iterable[Tensor], eps: float = 1e-30) -> None:
    """Replace each ``p.grad`` by its component orthogonal to ``p``, rescaled to ``‖p.grad‖``.

    Per tensor: ``g⊥ = g − (⟨w, g⟩ / (⟨w, w⟩ + eps)) w``, then ``g⊥ · ‖g‖ / ‖g⊥‖``, computed in
    float64 and written back in the gradient's dtype. Parameters without a gradient are skipped;
    where ``w = 0`` or ``g⊥ = 0`` the gradient is left unchanged. No host synchronisation.
    """
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise ValueError("orthogonalize_ does not support sparse gradients")
        w = p.detach().reshape(-1).to(torch.float64)
        g = p.grad.reshape(-1).to(torch.float64)
        ww = torch.dot(w, w)
        g_orth = g - (torch.dot(w, g) / (ww + eps)) * w
        n_orth = torch.linalg.vector_norm(g_orth)
        ok = (ww > 0) & (n_orth > 0)
        scale = torch.where(ok, torch.linalg.vector_norm(g) / torch.where(ok, n_orth, 1.0), 1.0)
        new = torch.where(ok, g_orth * scale, g)
        p.grad.copy_(new.view_as(p.grad))


class OrthoGrad(torch.optim.Optimizer):
    """⊥Grad around an existing optimiser: ``OrthoGrad(torch.optim.AdamW(params, ...))``.

    ``step()`` projects every gradient in the base optimiser's parameter groups with
    :func:`orthogonalize_`, then calls ``base.step()``. ``param_groups``, ``state``,
    ``defaults``, ``zero_grad``, ``state_dict``, ``load_state_dict``, ``add_param_group`` and
    the hook registrations all act on ``base`` (so a saved state dict is the base optimiser's,
    and an LR scheduler built on the wrapper changes the base's learning rate). Step hooks run
    around ``base.step()``, that is after the projection.
    """

    base: torch.optim.Optimizer
    eps: float

    def __init__(self, base: torch.optim.Optimizer, eps: float = 1e-30) -> None:
        # Deliberately no super().__init__: every piece of optimiser state lives in ``base``.
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"OrthoGrad wraps a torch.optim.Optimizer, got {type(base).__name__}")
        if isinstance(base, OrthoGrad):
            raise TypeError("OrthoGrad is already applied; do not wrap it twice")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
                math.isfinite(eps) and eps >= 0):
            raise ConfigError(f"OrthoGrad eps must be a finite number ≥ 0, got {eps!r}")
        self.base = base
        self.eps = float(eps)

    # delegated state: reads and writes go to ``base`` (writable, as an Optimizer's are)
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.base.param_groups = value

    @property
    def state(self) -> Any:
        return self.base.state

    @state.setter
    def state(self, value: Any) -> None:
        self.base.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.base.defaults = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"OrthoGrad(eps={self.eps!r}, base={self.base!r})"

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluate ``closure`` (if any), project the gradients, then step the base optimiser."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.base.param_groups:
            orthogonalize_(group["params"], self.eps)
        self.base.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.base.add_param_group(param_group)

    def register_step_pre_hook(self, hook: Any) -> Any:
        return self.base.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Any) -> Any:
        return self.base.register_step_post_hook(hook)

    def register_state_dict_pre_hook(self, hook: Any, prepend: bool = False) -> Any:
        return self.base.register_state_dict_pre_hook(hook, prepend=prepend)

    def register_state_dict_post_hook(self, hook: Any, prepend: bool = False) -> Any:
        return self.base.register_state_dict_post_hook(hook, prepend=prepend)

    def register_load_state_dict_pre_hook(self, hook: Any, prepend: bool = False) -> Any:
        return self.base.register_load_state_dict_pre_hook(hook, prepend=prepend)

    def register_load_state_dict_post_hook(self, hook: Any, prepend: bool = False) -> Any:
        return self.base.register_load_state_dict_post_hook(hook, prepend=prepend)


# --- Grokfast ------------------------------------------------------------------------------


def _check_lamb(lamb: float, what: str) -> float:
    if isinstance(lamb, bool) or not isinstance(lamb, numbers.Real) or not math.isfinite(lamb):
        raise ConfigError(f"{what} lamb must be a finite number, got {lamb!r}")
    return float(lamb)


def _param_list(params: Iterable[Tensor], what: str) -> list[Tensor]:
    if isinstance(params, Tensor):
        params = [params]
    out = list(params)
    for p in out:
        if not isinstance(p, Tensor):
            raise TypeError(f"{what} expects tensors (model.parameters()), got {type(p).__name__}")
    return out


def _scalar(d: dict[str, Tensor], key: str) -> float | None:
    return float(d[key].item()) if key in d else None


def _check_saved(d: dict[str, Tensor], what: str, settings: dict[str, float]) -> None:
    """Refuse a saved filter state whose settings differ from this filter's."""
    for key, mine in settings.items():
        saved = _scalar(d, key)
        if saved is not None and saved != mine:
            raise ConfigError(f"{what} state was saved with {key} = {saved!r}, but this filter "
                              f"has {key} = {mine!r}; use the same setting to resume")


def _check_index(name: str, i: int, n: int, what: str) -> None:
    if not 0 <= i < n:
        raise ValueError(f"{what} state has {name!r}, but the filter holds {n} parameters")


class GrokfastEMA:
    """Grokfast EMA filter: ``μ ← α μ + (1 − α) g``, then ``g ← g + λ μ``, per parameter.

    Call :meth:`apply` after ``loss.backward()`` and before ``optimizer.step()``. Parameters
    whose ``.grad`` is None at a call are skipped (their μ is kept).
    """

    alpha: float
    lamb: float
    params: list[Tensor]
    mu: list[Tensor | None]

    def __init__(self, params: Iterable[Tensor], alpha: float = 0.98, lamb: float = 2.0) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
            raise ConfigError(f"Grokfast EMA alpha must be in the open interval (0, 1), "
                              f"got {alpha!r}")
        self.alpha = float(alpha)
        self.lamb = _check_lamb(lamb, "Grokfast EMA")
        self.params = _param_list(params, "GrokfastEMA")
        self.mu: list[Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def apply(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            mu = self.mu[i]
            if mu is None:
                mu = self.mu[i] = g.detach().clone()
            mu.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
            g.add_(mu, alpha=self.lamb)

    def tensors(self) -> dict[str, Tensor]:
        """``{"mu.<i>": μ_i}`` for every started parameter i, plus ``"alpha"`` and ``"lamb"``."""
        out = {f"mu.{i}": m.detach().clone() for i, m in enumerate(self.mu) if m is not None}
        out["alpha"] = torch.tensor(self.alpha, dtype=torch.float64)
        out["lamb"] = torch.tensor(self.lamb, dtype=torch.float64)
        return out

    def load_tensors(self, d: dict[str, Tensor]) -> None:
        """Restore what :meth:`tensors` returned; the filter's alpha and lamb must match."""
        _check_saved(d, "Grokfast EMA", {"alpha": self.alpha, "lamb": self.lamb})
        mu: list[Tensor | None] = [None] * len(self.params)
        for name, t in d.items():
            if not name.startswith("mu."):
                continue
            i = int(name.split(".", 1)[1])
            _check_index(name, i, len(self.params), "Grokfast EMA")
            p = self.params[i]
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"Grokfast EMA state {name!r} has shape {tuple(t.shape)}, but "
                                 f"parameter {i} has shape {tuple(p.shape)}")
            mu[i] = t.detach().to(device=p.device, dtype=p.dtype).clone()
        self.mu = mu


class GrokfastMA:
    """Grokfast MA filter: ``g ← g + λ · mean(last window gradients)`` once the window is full.

    Call :meth:`apply` after ``loss.backward()`` and before ``optimizer.step()``. Each call
    pushes a copy of the current gradient; until ``window`` gradients have been seen for a
    parameter its gradient is left unchanged. Parameters whose ``.grad`` is None are skipped.
    """

    window: int
    lamb: float
    params: list[Tensor]
    grads: list[deque[Tensor]]

    def __init__(self, params: Iterable[Tensor], window: int = 100, lamb: float = 5.0) -> None:
        if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
            raise ConfigError(f"Grokfast MA window must be an integer ≥ 1, got {window!r}")
        self.window = int(window)
        self.lamb = _check_lamb(lamb, "Grokfast MA")
        self.params = _param_list(params, "GrokfastMA")
        self.grads: list[deque[Tensor]] = [deque(maxlen=self.window) for _ in self.params]

    @torch.no_grad()
    def apply(self) -> None:
        for p, buf in zip(self.params, self.grads):
            if p.grad is None:
                continue
            buf.append(p.grad.detach().clone())
            if len(buf) == self.window:
                total = buf[0].clone()
                for t in list(buf)[1:]:  # oldest first, as sum(deque) in the reference
                    total.add_(t)
                p.grad.add_(total / self.window, alpha=self.lamb)

    def tensors(self) -> dict[str, Tensor]:
        """``{"grads.<i>": (k, *shape)}`` (oldest first) per parameter, plus window and lamb."""
        out = {f"grads.{i}": torch.stack(list(buf)) for i, buf in enumerate(self.grads) if buf}
        out["window"] = torch.tensor(self.window, dtype=torch.int64)
        out["lamb"] = torch.tensor(self.lamb, dtype=torch.float64)
        return out

    def load_tensors(self, d: dict[str, Tensor]) -> None:
        """Restore what :meth:`tensors` returned; the filter's window and lamb must match."""
        _check_saved(d, "Grokfast MA", {"window": float(self.window), "lamb": self.lamb})
        grads: list[deque[Tensor]] = [deque(maxlen=self.window) for _ in self.params]
        for name, t in d.items():
            if not name.startswith("grads."):
                continue
            i = int(name.split(".", 1)[1])
            _check_index(name, i, len(self.params), "Grokfast MA")
            p = self.params[i]
            if t.ndim != p.ndim + 1 or tuple(t.shape[1:]) != tuple(p.shape) or not (
                    1 <= t.shape[0] <= self.window):
                raise ValueError(f"Grokfast MA state {name!r} has shape {tuple(t.shape)}; "
                                 f"expected (1 … {self.window}, {', '.join(map(str, p.shape))})")
            for row in t.detach().to(device=p.device, dtype=p.dtype):
                grads[i].append(row.clone())
        self.grads = grads

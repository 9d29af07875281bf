"""Training at a fixed total weight norm (Liu, Michaud and Tegmark 2023, "Omnigrok", their
constrained runs): after every optimiser step every parameter is multiplied by one number, so that
the model's total L2 norm ‖θ‖ = √(Σ_tensors Σ θ²) equals a target.

The target is ``train.weight_norm_target``, or, when that is none, the norm of the run's own
weights at epoch 0: its initialisation (with ``model.init_scale``, Omnigrok's α, so α·‖θ₀‖ as in
their runs), or the checkpoint a ``train --from`` run starts from. A resumed run takes it again
from its epoch-0 checkpoint, so it continues with exactly the number it started with. Epoch 0 is
not rescaled; from the first step on the norm is the target (up to the model dtype's rounding:
a float32 model is within about 1e-7 of it).

The norm is taken over the trained parameters; frozen ones (``train.freeze_biases``) are zero, so
it is the norm of all of them, the square root of the metrics' ``sum_sq_weights``. Norms are
summed in float64; the scale is applied in the parameters' dtype. One function,
:func:`rescale_to_norm_`, serves both trainers: one model's parameters with a float target
(:mod:`~mechgrok.training.single`), or K seeds' stacked parameters ``(K, *shape)`` with one target
per seed (:mod:`~mechgrok.training.vmap`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from mechgrok.config import RunConfig, TrainConfig
from mechgrok.store import RunWriter
from mechgrok.training.parts import trained_model

__all__ = ["rescale_to_norm_", "start_norm", "total_norm", "weight_norm_target"]


@torch.no_grad()
def total_norm(tensors: Iterable[Tensor]) -> float:
    """√(Σ ‖t‖²) over ``tensors``, in float64 (the same tensors in the same order give the same
    number, bit for bit)."""
    sq = 0.0
    for t in tensors:
        sq += float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2
    return sq ** 0.5


def weight_norm_target(tc: TrainConfig, at_start: Callable[[], float]) -> float | None:
    """The total norm ``tc`` holds the weights at: None when ``train.fixed_weight_norm`` is off,
    else ``train.weight_norm_target``, else ``at_start()`` (the norm of the run's weights at
    epoch 0; called only then)."""
    if not tc.fixed_weight_norm:
        return None
    if tc.weight_norm_target is not None:
        return float(tc.weight_norm_target)
    return at_start()


@torch.no_grad()
def rescale_to_norm_(params: Sequence[Tensor], target: float | Tensor) -> None:
    """Multiply ``params`` in place by one number so that their total L2 norm is ``target``.

    ``target`` a float: ``params`` are one model's. ``target`` a float64 tensor ``(K,)``:
    ``params`` are K models' stacked ``(K, *shape)``, and slice k of every tensor is scaled to
    total norm ``target[k]``. Weights whose norm is 0 are left as they are (there is no direction
    to scale)."""
    if isinstance(target, Tensor):
        k = target.shape[0]
        sq = torch.zeros(k, dtype=torch.float64, device=target.device)
        for p in params:
            sq += torch.linalg.vector_norm(p.reshape(k, -1), dim=1, dtype=torch.float64) ** 2
        norm = sq.sqrt()  # (K,)
        scale = torch.where(norm > 0, target / torch.where(norm > 0, norm, 1.0), 1.0)
        for p in params:
            p.mul_(scale.to(p.dtype).view(k, *([1] * (p.ndim - 1))))
        return
    total = total_norm(params)
    if total > 0:
        s = target / total
        for p in params:
            p.mul_(s)


def start_norm(writer: RunWriter, cfg: RunConfig) -> float:
    """The total norm of the trained parameters in the epoch-0 checkpoint of ``writer``'s run
    (the target of a resumed run with ``train.fixed_weight_norm`` and no
    ``train.weight_norm_target``), checked against the model ``cfg`` builds."""
    from mechgrok.errors import CheckpointError
    from mechgrok.store import check_tensors, read_verified

    model, _ = trained_model(cfg)
    cks = writer.manifest["checkpoints"]
    if not cks or cks[0]["epoch"] != 0:
        raise CheckpointError(f"run {writer.path} has no epoch-0 checkpoint, whose total weight "
                              f"norm train.fixed_weight_norm holds the weights at; it cannot be "
                              f"resumed")
    f = writer.path / cks[0]["file"]
    state, _ = read_verified(f, cks[0]["size"], cks[0]["sha256"])
    check_tensors(state, model.state_dict(), f"checkpoint {f}",
                  "the model its run's config.json describes")
    return total_norm(state[n] for n, p in model.named_parameters() if p.requires_grad)

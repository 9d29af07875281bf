"""Optimisers and the learning-rate schedule.

The schedule is stateless: ``lr(step) = lr · min(1, (step + 1) / warmup_steps)`` (linear warm-up,
then constant). Nanda's code uses ``min(step / 10, 1)``, whose first step has learning rate 0;
mechgrok's first step already moves, and step ``warmup_steps − 1`` reaches the full rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mechgrok.config import TrainConfig

__all__ = ["check_optimizer_state", "load_optimizer_state", "lr_at", "make_optimizer",
           "optimizer_state_tensors", "set_lr"]


def make_optimizer(params: Iterable[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names (AdamW, Adam or SGD) on ``params``, at ``cfg.lr``."""
    params = list(params)
    # fused kernels: one pass over all parameters (about 5 % faster per nanda epoch on CPU)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 betas=cfg.betas, eps=cfg.eps, fused=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=cfg.betas, eps=cfg.eps, fused=True)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           momentum=cfg.momentum, foreach=True)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate used by optimiser step ``step`` (0-based)."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr``."""
    for group in opt.param_groups:
        group["lr"] = lr


def optimizer_state_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as flat named tensors (for safetensors)."""
    out: dict[str, torch.Tensor] = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"optim.{idx}.{key}"] = t
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Load what :func:`optimizer_state_tensors` returned (other names are ignored)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def _state_keys(cfg: TrainConfig) -> tuple[str, ...]:
    if cfg.optimizer in ("adamw", "adam"):
        return ("step", "exp_avg", "exp_avg_sq")
    return ("momentum_buffer",) if cfg.momentum else ()


def check_optimizer_state(tensors: dict[str, torch.Tensor], params: list[torch.Tensor],
                          cfg: TrainConfig, what: str) -> None:
    """Refuse saved optimiser state that does not fit ``params`` under ``cfg`` before it reaches
    an optimiser kernel (a wrongly shaped tensor would crash the fused AdamW step in native
    code). Each parameter's state is absent (never stepped: no gradient yet) or complete, with
    the parameter's shape and dtype (the step count: a float32 scalar)."""
    from mechgrok.errors import CheckpointError

    keys = _state_keys(cfg)
    seen: dict[int, set[str]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in keys:
            raise CheckpointError(f"{what}: {name!r} is not optimiser state of a "
                                  f"{cfg.optimizer} optimiser")
        idx = int(parts[1])
        if idx >= len(params):
            raise CheckpointError(f"{what}: {name!r} names parameter {idx}, but the model has "
                                  f"{len(params)} trained parameters")
        p = params[idx]
        shape, dtype = ((), torch.float32) if parts[2] == "step" else (tuple(p.shape), p.dtype)
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise CheckpointError(f"{what}: {name} is {tuple(t.shape)} {t.dtype}, expected "
                                  f"{shape} {dtype}")
        if parts[2] == "step" and not (torch.isfinite(t) and t >= 0):
            raise CheckpointError(f"{what}: {name} is {float(t)}, not a step count")
        seen.setdefault(idx, set()).add(parts[2])
    for idx, got in seen.items():
        if got != set(keys):
            raise CheckpointError(f"{what}: the optimiser state of parameter {idx} is incomplete "
                                  f"(has {sorted(got)}, needs {list(keys)})")

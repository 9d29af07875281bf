"""Optimisers and the learning-rate schedule.

The schedule is stateless: ``lr(step) = lr · min(1, (step + 1) / warmup_steps)`` (linear warm-up,
then constant). Nanda's code uses ``min(step / 10, 1)``, whose first step has learning rate 0;
mechgrok's first step already moves, and step ``warmup_steps − 1`` reaches the full rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mechgrok.config import TrainConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
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
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})

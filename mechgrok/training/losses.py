"""Losses on the read-out logits.

``cross_entropy(logits, labels, dtype)`` casts the logits to ``dtype`` (float32 or float64) before
the log-softmax: Nanda et al. compute the loss in float64; Prieto et al. show that in float32 the
softmax of a confidently-correct example rounds to exactly one (softmax collapse), which zeroes
its gradient. The choice is the run's ``train.loss_dtype``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DTYPES", "cross_entropy", "loss_function"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def cross_entropy(logits: Tensor, labels: Tensor, dtype: str | torch.dtype = "float32") -> Tensor:
    """Mean cross-entropy of ``logits (batch, classes)`` against ``labels (batch,)`` in ``dtype``."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    return F.cross_entropy(logits.to(dt), labels)


def loss_function(train_cfg: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """The run's training loss as ``f(logits, labels)``: softmax cross-entropy or StableMax
    (``train.loss``), computed in ``train.loss_dtype``."""
    dt = DTYPES[train_cfg.loss_dtype]
    if train_cfg.loss == "stablemax":
        from mechgrok.stability import stablemax_cross_entropy

        return lambda logits, labels: stablemax_cross_entropy(logits, labels, dtype=dt)
    return lambda logits, labels: cross_entropy(logits, labels, dt)

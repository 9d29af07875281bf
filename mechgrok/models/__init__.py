"""mechgrok's hooked models: the transformer (Nanda; Zhong's α) and the MLP."""

from __future__ import annotations

import torch

from mechgrok.config import MLPConfig, RunConfig, TransformerConfig
from mechgrok.models.base import HookedModel
from mechgrok.models.mlp import MLPModel
from mechgrok.models.protocol import GrokModel, check_model
from mechgrok.models.transformer import Transformer

__all__ = ["GrokModel", "HookedModel", "MLPModel", "Transformer", "build_model", "check_model"]


def build_model(cfg: RunConfig) -> HookedModel:
    """The model a run config describes, initialised from ``cfg.train.seed``, in its dtype."""
    n = cfg.task.n
    model: HookedModel
    if isinstance(cfg.model, TransformerConfig):
        model = Transformer(cfg.model, n, seed=cfg.train.seed)
    elif isinstance(cfg.model, MLPConfig):
        model = MLPModel(cfg.model, n, seed=cfg.train.seed)
    else:  # pragma: no cover - RunConfig validates this
        raise TypeError(type(cfg.model))
    dtype = torch.float64 if cfg.train.model_dtype == "float64" else torch.float32
    return model.to(dtype)

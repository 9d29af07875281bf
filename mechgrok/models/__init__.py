"""mechgrok's hooked models: the transformer (Nanda; Zhong's α) and the MLP, and which model class
each ``model.kind`` builds.

The kinds have one registry per side: :data:`mechgrok.config.MODEL_KINDS` maps a kind to its
config class, :data:`MODEL_CLASSES` maps it to the model class that config builds. A new model
kind is one entry in each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mechgrok.config import RunConfig
from mechgrok.models.base import HookedModel
from mechgrok.models.mlp import MLPModel
from mechgrok.models.protocol import GrokModel, check_model
from mechgrok.models.transformer import Transformer

__all__ = ["MODEL_CLASSES", "GrokModel", "HookedModel", "MLPModel", "Transformer", "build_model",
           "check_model"]

#: ``model.kind`` → the model class it builds, called as ``cls(model_config, n_classes, seed)``
#: (the models' side of :data:`mechgrok.config.MODEL_KINDS`).
MODEL_CLASSES: dict[str, Callable[[Any, int, int], HookedModel]] = {
    "transformer": Transformer,
    "mlp": MLPModel,
}


def build_model(cfg: RunConfig) -> HookedModel:
    """The model a run config describes, initialised from ``cfg.train.seed``, in its dtype."""
    kind = cfg.model.kind
    if kind not in MODEL_CLASSES:  # pragma: no cover - a kind registered on one side only
        raise TypeError(f"model kind {kind!r} has no model class: add it to "
                        f"mechgrok.models.MODEL_CLASSES (its config class is in "
                        f"mechgrok.config.MODEL_KINDS)")
    model = MODEL_CLASSES[kind](cfg.model, cfg.task.n, cfg.train.seed)
    dtype = torch.float64 if cfg.train.model_dtype == "float64" else torch.float32
    return model.to(dtype)

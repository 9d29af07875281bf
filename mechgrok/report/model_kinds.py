"""How the report speaks of each model kind: one entry per ``model.kind``.

:data:`mechgrok.config.MODEL_KINDS` lists the kinds a config may name; :data:`KIND_VIEWS` says,
for each, how a sentence names such a model (``an MLP``), the line that describes it in a
report's summary, and which layer's attention pattern the report draws (``None``: it has no
attention). A new model kind adds one entry here; a kind without one is still described, by its
kind name and its settings, and is never mistaken for another kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mechgrok.config import MLPConfig, TransformerConfig

__all__ = ["KIND_VIEWS", "KindView", "attention_layer", "describe_model", "kind_view"]


@dataclass(frozen=True)
class KindView:
    """What the report says and draws for one model kind."""

    #: how a sentence names a model of this kind ("run … is an MLP")
    a_name: str
    #: the summary card's description of a model config of this kind
    describe: Callable[[Any], str]
    #: the layer whose attention from ``=`` the report draws; None: the kind has no attention
    attention_layer: Callable[[Any], int] | None = None


def _transformer(m: TransformerConfig) -> str:
    return (f"transformer, {m.n_layers} layer(s), d_model {m.d_model}, {m.n_heads} heads, "
            f"d_mlp {m.d_mlp}, {m.act}, attention rate α {m.attn_alpha}")


def _last_layer(m: TransformerConfig) -> int:
    return m.n_layers - 1


def _mlp(m: MLPConfig) -> str:
    return (f"MLP, {m.embed} inputs ({m.combine}), hidden {list(m.hidden)}, "
            f"bias {'on' if m.bias else 'off'}")


KIND_VIEWS: dict[str, KindView] = {
    "transformer": KindView("a transformer", _transformer, _last_layer),
    "mlp": KindView("an MLP", _mlp),
}


def _generic(m: Any) -> str:
    """A kind the report has no entry for: its name, then its settings as they are."""
    kind = str(getattr(m, "kind", "model"))
    if not dataclasses.is_dataclass(m):
        return kind
    settings = [f"{f.name} {getattr(m, f.name)}" for f in dataclasses.fields(m) if f.name != "kind"]
    return ", ".join([kind, *settings])


def kind_view(kind: str) -> KindView:
    """The entry of ``kind`` (an unknown kind: named by its kind name, described generically,
    without attention)."""
    return KIND_VIEWS.get(kind) or KindView(f"a model of kind {kind!r}", _generic)


def describe_model(model: Any) -> str:
    """The summary card's line for a model config (``cfg.model``)."""
    return kind_view(model.kind).describe(model)


def attention_layer(model: Any) -> int | None:
    """The layer whose attention pattern the report draws, or None when the kind has none."""
    view = kind_view(model.kind)
    return None if view.attention_layer is None else view.attention_layer(model)

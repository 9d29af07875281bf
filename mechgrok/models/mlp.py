"""An MLP on the two operands: embeddings (learned or one-hot), concatenated or summed, then
ReLU/GELU hidden layers and an unembedding to the n answer classes.

Input: tokens ``(batch, 2)`` = ``[x, y]`` (a third column, the ``=`` token of the sequence format,
is ignored, so the same dataset tensors feed both model kinds). Hook names:

* ``hook_embed`` ``(batch, 2, d)``: the two operand vectors (one-hot vectors when ``embed='onehot'``);
* ``hook_in`` ``(batch, d_in)``: their concatenation or sum;
* ``layers.{i}.hook_pre`` / ``layers.{i}.hook_post`` ``(batch, width_i)``: hidden layer i;
* output: logits ``(batch, n)``.

Parameters: ``embed.W_E (n, d_embed)`` (learned only), ``layers.{i}.W (d_in, width)``,
``layers.{i}.b``, ``unembed.W_U (width, n)``, ``unembed.b_U`` (biases only when ``bias=True``).
Init (``model.init``): ``'normal'`` (the default) weights ~ N(0, 1/fan_in), biases 0;
``'torch'`` what PyTorch's default ``nn.Linear.reset_parameters`` does, as Prieto et al.'s code
trains it: ``kaiming_uniform_(a=√5)``, i.e. weights ~ U(±1/√fan_in), and biases ~ U(±1/√fan_in),
drawn in ``nn.Linear``'s order and layout (weight ``(d_out, d_in)``, then bias; mechgrok stores the
weight transposed). The learned embedding is N(0, 1) either way (``nn.Embedding``'s default).
Every draw comes from the run's seeded generator, in float64 (so a seed gives the same model in
every dtype: the values are those of a float64 ``nn.Linear`` reset from the same generator state,
not a float32 one's, whose draws differ), in parameter order. ``init_scale``
multiplies every parameter drawn (Omnigrok's α). The transformer has no ``init`` choice: PyTorch
has no one default for it (``nn.MultiheadAttention`` draws its input projections Xavier-uniform,
its output ``nn.Linear`` Kaiming-uniform) and mechgrok's follows Nanda's hand-written init.

Fast path: the first layer's pre-activation is a sum of two gathered rows,
``T_x[x] + T_y[y] + b`` with tables ``T = W_E @ W`` of n rows, instead of a (batch, d_in) matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from mechgrok.config import MLPConfig
from mechgrok.models.base import Embed, HookedModel, Unembed, init_normal_

__all__ = ["Dense", "MLPModel"]


def _init_linear_weight_(w: Tensor, scale: float, gen: torch.Generator) -> Tensor:
    """Fill ``w`` ``(d_in, d_out)`` in place as ``nn.Linear(d_in, d_out).reset_parameters``
    fills its weight ``(d_out, d_in)`` (``kaiming_uniform_(a=√5)``: U(±1/√d_in)), drawn from
    ``gen`` in float64 in that layout, transposed, times ``scale``."""
    t = torch.empty(w.shape[1], w.shape[0], dtype=torch.float64)
    nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=gen)
    with torch.no_grad():
        w.copy_((t.T * scale).to(w.dtype))
    return w


def _init_linear_bias_(b: Tensor, fan_in: int, scale: float, gen: torch.Generator) -> Tensor:
    """Fill ``b`` in place as ``nn.Linear(fan_in, …).reset_parameters`` fills its bias
    (U(±1/√fan_in)), drawn from ``gen`` in float64, times ``scale``."""
    bound = 1 / math.sqrt(fan_in)
    u = torch.empty(b.shape, dtype=torch.float64)
    nn.init.uniform_(u, -bound, bound, generator=gen)
    with torch.no_grad():
        b.copy_((u * scale).to(b.dtype))
    return b


class Dense(nn.Module):
    """One hidden layer's affine map, ``x @ W (+ b)``, with its ``hook_pre`` and ``hook_post``."""

    def __init__(self, d_in: int, d_out: int, bias: bool):
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_in, d_out))
        self.b = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def linear(self, x: Tensor) -> Tensor:
        return torch.addmm(self.b, x, self.W) if self.b is not None else x @ self.W


class MLPModel(HookedModel):
    """The hooked MLP on the two operands. ``forward(tokens) -> (batch, n_classes)`` logits."""

    def __init__(self, cfg: MLPConfig, n_classes: int, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.n_classes = n = n_classes
        self.act: Callable[[Tensor], Tensor] = F.relu if cfg.act == "relu" else F.gelu
        d = n if cfg.embed == "onehot" else cfg.d_embed
        self.d_operand = d
        self.embed = Embed(n, d) if cfg.embed == "learned" else None
        self.hook_embed = HookPoint()  # (batch, 2, d)
        self.hook_in = HookPoint()  # (batch, d_in)
        d_in = 2 * d if cfg.combine == "concat" else d
        widths = [d_in, *cfg.hidden]
        self.layers = nn.ModuleList(
            [Dense(a, b, cfg.bias) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.unembed = Unembed(widths[-1], n, cfg.bias)
        self.neuron_hook = f"layers.{len(cfg.hidden) - 1}.hook_post"
        self.reset_parameters(seed)
        self.setup()

    def dense(self) -> list[Dense]:
        """The hidden layers, in order (``self.layers`` as the type checker should see it)."""
        return cast("list[Dense]", list(self.layers))

    def reset_parameters(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        s = self.cfg.init_scale
        torch_init = self.cfg.init == "torch"
        fan_in = 0  # of the weight just drawn: its bias follows it in parameter order
        for name, p in self.named_parameters():
            if name == "embed.W_E":
                init_normal_(p, s, gen)
            elif p.ndim == 2:
                fan_in = p.shape[0]
                if torch_init:
                    _init_linear_weight_(p, s, gen)
                else:
                    init_normal_(p, s / math.sqrt(fan_in), gen)
            elif torch_init:
                _init_linear_bias_(p, fan_in, s, gen)
            else:
                nn.init.zeros_(p)

    def token_embedding(self) -> Tensor:
        """Learned: ``W_E``. One-hot: the first layer's rows for the x operand, which is what a
        one-hot input's embedding amounts to. (n, d)"""
        if self.embed is not None:
            return self.embed.W_E
        return self.dense()[0].W[: self.n_classes]

    def neuron_logit_map(self) -> Tensor:
        """W_L = W_U: the last hidden layer writes straight to the logits. (width, n)"""
        return self.unembed.W_U

    def _operands(self, tokens: Tensor) -> Tensor:
        """The two operand vectors. (batch, 2, d)"""
        xy = tokens[:, :2]
        if self.embed is None:
            return F.one_hot(xy, self.n_classes).to(self.unembed.W_U.dtype)
        return F.embedding(xy, self.embed.W_E)

    def forward(self, tokens: Tensor) -> Tensor:
        e = self.hook_embed(self._operands(tokens))  # (batch, 2, d)
        x = self.hook_in(e.flatten(1) if self.cfg.combine == "concat" else e.sum(1))
        for layer in self.dense():
            x = layer.hook_post(self.act(layer.hook_pre(layer.linear(x))))
        return self.unembed(x)  # (batch, n)

    def forward_last(self, tokens: Tensor, *, same_query: bool | None = None) -> Tensor:
        """Same logits as ``forward``, without hooks; first layer by table lookup. (batch, n)

        ``same_query`` is accepted for the transformer's signature and ignored."""
        first, *rest = self.dense()
        W = first.W
        d = self.d_operand
        if self.cfg.combine == "concat":
            W_x, W_y = W[:d], W[d:]
        else:
            W_x = W_y = W
        if self.embed is not None:
            W_E = self.embed.W_E
            if self.cfg.combine == "concat":
                tab = W_E @ torch.cat([W_x, W_y], dim=1)  # (n, 2·width) in one matmul
                T_x, T_y = tab.split(W.shape[1], dim=1)
            else:
                T_x = T_y = W_E @ W
        else:
            T_x, T_y = W_x, W_y  # one-hot rows select rows of W
        pre = F.embedding(tokens[:, 0], T_x) + F.embedding(tokens[:, 1], T_y)
        if first.b is not None:
            pre = pre + first.b
        x = self.act(pre)
        for layer in rest:
            x = self.act(layer.linear(x))
        return self.unembed(x)

"""What every mechgrok model shares: TransformerLens hooks, a typed cache, a fast training path.

Models subclass TransformerLens's :class:`HookedRootModule` and put a :class:`HookPoint` at every
activation, named by TransformerLens conventions, so ``run_with_hooks`` works as TransformerLens
users expect and ``run_with_cache`` returns a TransformerLens :class:`ActivationCache`.

Each model has two forwards that compute the same function:

* ``forward(tokens)``, the *hooked* forward, used by probes: every hook fires.
* ``forward_last(tokens)``, the *fast* path, used by the trainer: logits at the read-out position
  only, no hooks, with per-token tables instead of per-example work where the maths allows.
  ``tests/test_models.py`` holds its logits and gradients equal to the hooked forward's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.HookedRootModule import HookedRootModule

__all__ = ["Embed", "HookedModel", "Unembed", "init_normal_"]


class HookedModel(HookedRootModule):
    """Base class: ``run_with_cache`` returns an :class:`ActivationCache`, as TransformerLens does."""

    #: the hook holding the neurons probes cluster by frequency (the last hidden layer's output)
    neuron_hook: str = ""
    #: number of answer classes (p, or 120 for S5)
    n_classes: int = 0

    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False,
        **kwargs: Any,
    ) -> tuple[Tensor, ActivationCache | dict[str, Tensor]]:
        out, cache_dict = super().run_with_cache(
            *model_args, remove_batch_dim=remove_batch_dim, **kwargs
        )
        if return_cache_object:
            return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache_dict

    def forward_last(self, tokens: Tensor, *,
                     same_query: bool | None = None) -> Tensor:  # pragma: no cover - abstract
        """Logits at the last position, without hooks (the training fast path). ``same_query``:
        every example's last token is ``=`` (None: check)."""
        raise NotImplementedError

    # -- what probes read, the same way for every model kind ------------------------------------
    def token_embedding(self) -> Tensor:  # pragma: no cover - abstract
        """The n answer elements' input vectors. (n, d)"""
        raise NotImplementedError

    def neuron_logit_map(self) -> Tensor:  # pragma: no cover - abstract
        """W_L: how each neuron of ``neuron_hook`` writes to the logits. (n_neurons, n)"""
        raise NotImplementedError

    def neurons(self, cache: Any) -> Tensor:
        """The ``neuron_hook`` activations at the read-out position. (batch, n_neurons)"""
        acts = cache[self.neuron_hook]
        return acts[:, -1] if acts.ndim == 3 else acts

    def last_logits(self, tokens: Tensor) -> Tensor:
        """Logits at the read-out position from the hooked forward. (batch, n_classes)"""
        out = self(tokens)
        return out[:, -1] if out.ndim == 3 else out

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def sum_sq_weights(self) -> float:
        """Total sum of squared parameters (the 'weight norm' curve of the grokking papers)."""
        with torch.no_grad():
            return float(sum((p.detach().double() ** 2).sum() for p in self.parameters()))


class Embed(nn.Module):
    """The learned token embedding, ``W_E (d_vocab, d)`` (TransformerLens's ``embed.W_E``)."""

    def __init__(self, d_vocab: int, d: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d))


class Unembed(nn.Module):
    """The unembedding to the n answer classes: ``W_U (d, n)`` and, with ``bias``, ``b_U (n,)``
    (TransformerLens's names). ``forward(x)`` takes ``(..., d)`` and returns ``(..., n)``."""

    def __init__(self, d: int, n_classes: int, bias: bool):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d, n_classes))
        self.b_U = nn.Parameter(torch.zeros(n_classes)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.b_U is not None:
            return torch.addmm(self.b_U, x.reshape(-1, x.shape[-1]),
                               self.W_U).view(*x.shape[:-1], -1)
        return x @ self.W_U


def init_normal_(t: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """Fill ``t`` in place with N(0, std²) draws from ``gen`` (drawn in float64, so a seed gives
    the same values in every dtype)."""
    with torch.no_grad():
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) * std)
    return t

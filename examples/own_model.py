"""Analyse a model class of your own with mechgrok's probes (docs/hooked-models.md).

A clock for addition mod P built by hand at one frequency K: the embedding puts element x on a
circle at angle w·x (w = 2πK/P), four neurons multiply the two operands' coordinates, and the
logit of z is SCALE·cos(w(x + y − z)), largest at z = x + y.
"""

import math

import numpy as np
import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from mechgrok.analysis import analyze_model
from mechgrok.models import check_model

P, K, SCALE = 23, 5, 300.0


class ClockModel(HookedRootModule):
    neuron_hook = "hook_neurons"  # the hook the probes read the neurons from

    def __init__(self, p: int, k: int, scale: float):
        super().__init__()
        self.n_classes = p  # answer classes; the `=` token (ignored here) is p
        w = 2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p
        self.W_E = nn.Parameter(torch.stack([w.cos(), w.sin()], 1))  # (p, 2)
        # neurons cx·cy, sx·sy, sx·cy, cx·sy → logit z = scale·cos(w(x + y − z))
        self.W_L = nn.Parameter(scale * torch.stack([w.cos(), -w.cos(), w.sin(), w.sin()]))
        self.hook_embed = HookPoint()  # (batch, 2, 2): x's and y's vectors
        self.hook_neurons = HookPoint()  # (batch, 4)
        self.setup()  # TransformerLens: registers the hook points

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens (batch, 3) = [x, y, =]
        e = self.hook_embed(self.W_E[tokens[:, :2]])
        (cx, sx), (cy, sy) = e[:, 0].unbind(-1), e[:, 1].unbind(-1)
        h = self.hook_neurons(torch.stack([cx * cy, sx * sy, sx * cy, cx * sy], -1))
        return h @ self.W_L  # logits (batch, p)

    def token_embedding(self) -> torch.Tensor:  # (p, d)
        return self.W_E

    def neuron_logit_map(self) -> torch.Tensor:  # (n_neurons, p)
        return self.W_L

    def neurons(self, cache) -> torch.Tensor:  # (batch, n_neurons)
        return cache[self.neuron_hook]


model = ClockModel(P, K, SCALE)
check_model(model)  # raises, naming what is missing, if the model lacks a member
results = analyze_model(model, "add", P, frac_train=0.3, data_seed=0)

key_freqs = (np.flatnonzero(results["key_freqs"]["neurons_rule"]) + 1).tolist()
print("key frequencies:", key_freqs)  # noqa: T201  [5]
print("test accuracy:", results["loss"]["test_acc"])  # noqa: T201  1.0
r = results["restricted"]
print("full, restricted, excluded loss:", r["full_loss"], r["restricted_loss"],  # noqa: T201
      r["excluded_loss"])  # tiny, the same tiny, log(23) ≈ 3.14
print("collapse:", results["collapse"])  # noqa: T201  n/a: the model has no forward_last

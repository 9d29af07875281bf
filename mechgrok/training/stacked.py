"""K models of one config as stacked parameters ``(K, *shape)``, and their state per seed.

:class:`StackedModels` builds each seed's model as a separate run would and stacks the K models'
parameters with ``torch.func.stack_module_state``; :class:`FastPath` lets ``functional_call``
run the fast path on them. Seed k's slice of the stacked optimiser and Grokfast state is what a
single-seed run of it stores (:func:`slice_state`, :func:`grokfast_slice`) and what resuming
stacks back (:func:`restore_stacked`); ⊥Grad runs per slice (:func:`orthogonalize_stacked_`).
:mod:`mechgrok.training.vmap` trains with them.

How close to separate runs
--------------------------
The batched model does, per seed, the same arithmetic as a separate run, but through vmap's
batched kernels (``bmm`` instead of ``mm``, batched gathers, one fused AdamW kernel over K times
the elements, ⊥Grad's dot products as batched sums): results agree up to floating-point rounding,
and are not guaranteed to be bit for bit the same. Measured by ``tests/test_vmap.py`` (tiny
configs, one thread, 40 epochs, 3 seeds; max abs difference over every tensor of every
checkpoint of every seed, against ``loop.train`` of that seed):

* float64 model and loss: 2.2e-16 (transformer, full batch), 4.4e-16 (MLP, minibatches of 8),
  3.3e-16 (⊥Grad), 3.2e-15 (Grokfast EMA), 0 (MLP, frozen biases, Grokfast MA); accuracies in the
  metrics identical, losses within 4.4e-16. The tests assert 1e-9.
* float32 model (float64 loss, the defaults): 0 for the full-batch transformer (the same values
  bit for bit) and 2.4e-7 for the MLP with minibatches, a few float32 ulps; the tests assert 1e-4.

Grokking dynamics amplify any rounding difference, exactly as a change of thread count does in
a single run: at lr 1e-2 on add mod 23, a relative difference of 1e-15 in the train loss grows to
1e-8 by epoch ~750 and 1e-3 by epoch ~850 (the same for a one-seed batched model), after which
two seeds can grok a few evaluations apart. A long batched run is therefore a faithful sample of
its seed, equal to the separate run at first and statistically equivalent later, not a bitwise
copy of it.

Resuming a killed :func:`~mechgrok.training.vmap.train_seeds` with the same arguments continues
each seed from its last checkpoint with the restored state. When the resumed group has the K of
the interrupted one (all seeds stopped at the same checkpoint), the continuation is bit-identical
to an uninterrupted ``train_seeds`` (same kernels on the same numbers; tested, including
Grokfast, ⊥Grad and minibatch orders). With another K it is close but not guaranteed bitwise
(batched kernels may round a slice differently at another batch size; seen once, 1.8e-7, for the
MLP in float32). A vmapped run's directory resumed by the normal
:func:`~mechgrok.training.resume` continues as a single-seed run, within the closeness above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from mechgrok.config import RunConfig
from mechgrok.errors import CheckpointError, RunDirError
from mechgrok.models import HookedModel
from mechgrok.stability import GrokfastEMA, GrokfastMA
from mechgrok.store import RunWriter
from mechgrok.training.optim import load_optimizer_state
from mechgrok.training.parts import read_resume_checked, trained_model
from mechgrok.training.stepper import Start

__all__ = ["FastPath", "StackedModels", "grokfast_slice", "orthogonalize_stacked_",
           "restore_stacked", "slice_state"]


class FastPath(nn.Module):
    """``forward`` = the wrapped model's ``forward_last(tokens, same_query=True)``, so that
    ``functional_call`` can run the fast path with substituted parameters (the last token is
    always ``=``, and the data-dependent check it skips cannot run under vmap)."""

    def __init__(self, model: HookedModel):
        super().__init__()
        self.m = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.m.forward_last(tokens, same_query=True)


class StackedModels:
    """The models of ``cfgs`` (one config, K seeds), each built as a separate run of it builds
    it, stacked: one leaf tensor ``(K, *shape)`` per parameter and persistent buffer."""

    def __init__(self, cfgs: Sequence[RunConfig]):
        models = [trained_model(c)[0] for c in cfgs]
        self.base = base = models[0]  # whose architecture functional_call runs
        self.all_names = [n for n, _ in base.named_parameters()]
        grad_names = [n for n, p in base.named_parameters() if p.requires_grad]
        stacked, stacked_bufs = stack_module_state(models)
        del models
        self.stacked: dict[str, Tensor] = stacked
        self.state_keys = list(base.state_dict())
        persistent = {n: b for n, b in stacked_bufs.items() if n in self.state_keys}
        self.source: dict[str, Tensor] = {**stacked, **persistent}  # a checkpoint's, stacked
        absent = [n for n in self.state_keys if n not in self.source]
        if absent:  # pragma: no cover - every model's state is parameters and persistent buffers
            raise RuntimeError(f"cannot batch the model: state {absent[:3]} is not stacked")
        self.params = [stacked[n] for n in grad_names]  # a normal run's optimiser order

    def state(self, k: int) -> dict[str, Tensor]:
        """Seed k's state dict (a copy)."""
        return {n: self.source[n][k].detach().clone() for n in self.state_keys}

    @torch.no_grad()
    def sum_sq_weights(self, k: int) -> float:
        """Seed k's sum of squared parameters, as ``HookedModel.sum_sq_weights``."""
        return float(sum((self.stacked[n][k].detach().double() ** 2).sum()
                         for n in self.all_names))


@torch.no_grad()
def orthogonalize_stacked_(params: Sequence[Tensor], eps: float = 1e-30) -> None:
    """:func:`mechgrok.stability.orthogonalize_` applied to every slice ``[k]`` of stacked
    parameters ``(K, *shape)``: ``grad[k]`` becomes its component orthogonal to ``param[k]``,
    rescaled to ``‖grad[k]‖`` (float64 maths; unchanged where ``param[k] = 0`` or the projection
    is 0), for all k at once."""
    for p in params:
        if p.grad is None:
            continue
        k = p.shape[0]
        w = p.detach().reshape(k, -1).to(torch.float64)
        g = p.grad.reshape(k, -1).to(torch.float64)
        ww = (w * w).sum(1)
        g_orth = g - ((w * g).sum(1) / (ww + eps)).unsqueeze(1) * w
        n_orth = torch.linalg.vector_norm(g_orth, dim=1)
        ok = (ww > 0) & (n_orth > 0)
        scale = torch.where(ok, torch.linalg.vector_norm(g, dim=1) / torch.where(ok, n_orth, 1.0),
                            1.0)
        new = torch.where(ok.unsqueeze(1), g_orth * scale.unsqueeze(1), g)
        p.grad.copy_(new.view_as(p.grad))


def slice_state(tensors: dict[str, Tensor], params: Sequence[Tensor], k: int,
                prefix: str) -> dict[str, Tensor]:
    """Seed k's part of stacked optimiser state ``{prefix}{idx}.{key}``: tensors shaped like
    parameter ``idx`` are sliced, scalars (``step``) copied."""
    out = {}
    for name, t in tensors.items():
        idx = int(name[len(prefix):].split(".", 1)[0])
        out[name] = (t[k] if t.shape == params[idx].shape else t).detach().clone()
    return out


def grokfast_slice(tensors: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """Seed k's part of a stacked Grokfast filter's ``tensors()``, named as a run's resume file
    names them (``grokfast.*``)."""
    out = {}
    for name, t in tensors.items():
        if name.startswith("mu."):  # EMA: (K, *shape)
            t = t[k]
        elif name.startswith("grads."):  # MA: (n, K, *shape), oldest first
            t = t[:, k]
        out[f"grokfast.{name}"] = t.detach().clone()
    return out


def restore_stacked(writers: Sequence[RunWriter], cfgs: Sequence[RunConfig],
                    models: StackedModels, opt: torch.optim.Optimizer,
                    gfilter: GrokfastEMA | GrokfastMA | None,
                    shuffles: Sequence[torch.Generator]) -> Start:
    """Load each run's last checkpoint into its slice of ``models``, and the runs' optimiser
    state, Grokfast state and shuffling generators; where they start. The runs must have
    stopped at the same step."""
    rstates = []
    metas = []
    for k, w in enumerate(writers):
        state, rstate, meta = read_resume_checked(w, cfgs[k])
        with torch.no_grad():
            for n in models.state_keys:
                models.source[n][k].copy_(state[n])
        rstates.append(rstate)
        metas.append(meta)
    if len({(int(m["epoch"]), int(m["step"])) for m in metas}) != 1:
        raise RunDirError(f"runs {', '.join(str(w.path) for w in writers)} stopped at "
                          f"different steps and cannot resume together; resume them one by "
                          f"one with `mechgrok train --resume`")
    where = [w.path for w in writers]
    load_optimizer_state(opt, _stack_optimizer_state(rstates, models.params, where))
    if gfilter is not None:
        gfilter.load_tensors(_grokfast_stack(rstates, where))
    for g, rstate in zip(shuffles, rstates):
        g.set_state(rstate["rng.shuffle"])
    return Start(int(metas[0]["epoch"]), int(metas[0]["step"]),
                 [int(m["grok_streak"]) for m in metas], [float(m["elapsed_s"]) for m in metas])


def _stack_optimizer_state(rstates: list[dict[str, Tensor]], params: Sequence[Tensor],
                           where: Sequence[object]) -> dict[str, Tensor]:
    keys = sorted({n for r in rstates for n in r if n.startswith("optim.")})
    out: dict[str, Tensor] = {}
    for name in keys:
        missing = [str(w) for w, r in zip(where, rstates) if name not in r]
        if missing:
            raise CheckpointError(f"resume state of {missing[0]} has no {name!r} while the other "
                                  f"runs' have it; resume the runs one by one")
        ts = [r[name] for r in rstates]
        idx = int(name.split(".")[1])
        if idx >= len(params):
            raise CheckpointError(f"resume state {name!r} of {where[0]} names parameter {idx}, "
                                  f"but the model has {len(params)} trained parameters")
        if tuple(ts[0].shape) == tuple(params[idx].shape[1:]) and ts[0].ndim > 0:
            out[name] = torch.stack(ts)
        else:
            if any(not torch.equal(t, ts[0]) for t in ts[1:]):
                raise CheckpointError(f"resume states of {where[0]} and others differ in "
                                      f"{name!r}; resume the runs one by one")
            out[name] = ts[0]
    return out


def _grokfast_stack(rstates: list[dict[str, Tensor]], where: Sequence[object]
                    ) -> dict[str, Tensor]:
    names = sorted({n for r in rstates for n in r if n.startswith("grokfast.")})
    out: dict[str, Tensor] = {}
    for full in names:
        name = full[len("grokfast."):]
        try:
            ts = [r[full] for r in rstates]
            if name.startswith("mu."):
                out[name] = torch.stack(ts)
            elif name.startswith("grads."):
                out[name] = torch.stack(ts, dim=1)
            else:
                out[name] = ts[0]
        except (KeyError, RuntimeError):
            raise CheckpointError(f"the Grokfast states of {', '.join(map(str, where))} do not "
                                  f"match ({full!r}); resume the runs one by one") from None
    return out

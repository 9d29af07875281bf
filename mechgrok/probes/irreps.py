"""The ``irreps`` probe: a task that is a rule in a group, read in the group's irreducible
representations (Chughtai, Chan & Nanda 2023; MEASURES.md §7), over the pure functions of
:mod:`mechgrok.measures`.

It reads the tasks in S_n (``s5``, ``s5conj``, ``s5aba``, any degree). A cyclic group's irreps
are its Fourier frequencies (Z_p for add/sub; Z_{p−1} by discrete log for mul/div), and the
Fourier probes read those runs already with the same numbers (the representation core,
:mod:`mechgrok.measures.circuit`, equals Nanda's restricted and excluded loss to 1e-9, tested on
a trained model), so this probe says n/a there instead of paying for them twice; the pure
functions of :mod:`mechgrok.measures` read any group (``irreps("Z97*")``). The task is read on
its group's pairs and classes (:func:`~mechgrok.measures.group_pairs`,
:func:`~mechgrok.measures.group_tokens`); the losses keep every class the model outputs.

Per checkpoint:

* ``similarity``: each irrep's logit similarity (Chughtai's centring; one per irrep, in
  :func:`~mechgrok.measures.irreps` order); ``key``: those above their 0.005 threshold (a cosine:
  "not zero", see :mod:`mechgrok.measures.metrics`); ``logits_explained``: Σ similarity², the
  share of the centred logits' squared norm the irreps' templates carry;
* ``restricted_loss`` / ``excluded_loss`` / ``excluded_loss_per_irrep`` over the **final**
  checkpoint's key irreps (:mod:`mechgrok.measures.circuit`): for S_n Chughtai's rule on the
  final logits (for a cyclic group, when the functions are used directly, the Fourier probes'
  key frequencies, Nanda's neuron-cluster rule). With no final key irreps (a run that formed no circuit) they are None, and everything else
  is still measured;
* ``embed_var``, ``unembed_var``, ``neuron_var``: the share of the embedding's rows, the
  neuron-logit map's columns (both centred over the elements) and the neurons (centred over the
  pairs; their answer directions) in each irrep's span.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechgrok.measures import (
    Group,
    group_pairs,
    group_tokens,
    irreps,
    key_irreps,
    logit_similarities,
    task_group,
    variance_explained,
)
from mechgrok.measures.circuit import (
    answer_variance_explained,
    cross_entropy,
    restricted_and_excluded,
)
from mechgrok.probes.base import CheckpointContext, NotApplicable, Probe, RunContext
from mechgrok.tasks import get_task

__all__ = ["GroupView", "IrrepsProbe", "final_key_irreps", "group_reason", "group_view",
           "irreps_probe"]


@dataclass(frozen=True)
class GroupView:
    """A task as a table of its group: the group, the rule, the task's token of each element
    ``(order,)`` and the row of each group pair ``(order²,)`` (row-major)."""

    group: Group
    rule: str
    tokens: np.ndarray
    pairs: np.ndarray

    @property
    def names(self) -> list[str]:
        """The irreps' names, in :func:`~mechgrok.measures.irreps` order."""
        return [r.name for r in irreps(self.group)]


def group_reason(run: RunContext) -> str | None:
    """None when the run's task is a rule in S_n, else why this probe does not read it: a
    cyclic group's irreps are its Fourier frequencies, which the Fourier probes read already
    (the same numbers: :mod:`mechgrok.measures.circuit` equals them to 1e-9), and a task with
    no group has none."""
    task = get_task(run.config.task.name)
    data = getattr(run, "data", None)  # the run's own algebra: S_n at its degree
    alg = data.algebra if data is not None else task.algebra
    if alg.kind == "symmetric":
        return None
    if alg.is_group:
        return (f"{task.name} is a rule in the {alg.group_name}, whose irreps are its Fourier "
                f"frequencies: the Fourier probes read them (key_freqs, restricted, gini)")
    return (f"{task.name} is not a rule in a group, so it has no irreducible representations "
            f"(it is read in the 2-D Fourier basis: see the spectrum2d probe)")


@functools.lru_cache(maxsize=16)
def _view(task: str, p: int | None, degree: int | None) -> GroupView:
    g = task_group(task, p, degree=degree)
    tokens, pairs = group_tokens(task, p, degree=degree), group_pairs(task, p, degree=degree)
    if g is None or tokens is None or pairs is None:  # group_reason keeps such runs away
        raise NotApplicable(f"{task} is not a rule in a group")
    return GroupView(g, get_task(task).algebra.rule, tokens, pairs)


def group_view(run: RunContext) -> GroupView:
    """The run's :class:`GroupView` (computed once per task and modulus)."""
    why = group_reason(run)
    if why is not None:
        raise NotApplicable(why)
    return _view(run.config.task.name, run.p, run.config.task.degree)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def final_key_irreps(run_ctx: RunContext, final_model: Any) -> dict[str, Any]:
    """The final checkpoint's key irreps by Chughtai et al.'s rule (logit similarity above
    0.005), most similar first: ``{"irreps": [...]}`` (the key-frequency finder's answer for a
    group that is not read in Fourier)."""
    v = group_view(run_ctx)
    with torch.no_grad():
        out, _ = final_model.run_with_cache(run_ctx.tokens[torch.from_numpy(v.pairs.copy())],
                                            names_filter=lambda name: False)
    logits = out[:, -1] if out.ndim == 3 else out
    sims = logit_similarities(_np(logits)[:, v.tokens], v.group, rule=v.rule)
    return {"irreps": key_irreps(sims)}


def _final_irreps(ctx: CheckpointContext, v: GroupView) -> list[str]:
    final = ctx.run.final_key_frequencies()
    if "irreps" in final:
        keys = list(final["irreps"])
    else:  # Z_p, Z_p*: the Fourier probes' key frequencies (neuron rule, else embedding rule)
        keys = [f"k={k}" for k in (final.get("neurons") or final.get("embedding") or [])]
    return keys  # none: the run formed no circuit in its irreps; the losses are then None


def _train_positions(train_idx: torch.Tensor, pairs: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(pairs, train_idx.cpu().numpy()))


def _multi_hot(names: list[str], chosen: list[str]) -> np.ndarray:
    return np.array([n in chosen for n in names], dtype=np.int8)


class IrrepsProbe(Probe):
    """The ``irreps`` probe (see the module docstring); its summary names the final key irreps
    and the share of each part of the network they explain."""

    name = "irreps"
    needs = ("all_pairs", "key_freqs")
    description = ("a group task in its irreps (Chughtai et al.): logit similarity per irrep, key "
                   "irreps, restricted/excluded loss over the final key irreps, variance of "
                   "embedding, neurons and unembedding explained per irrep")

    def applies(self, run: RunContext) -> str | None:
        return group_reason(run)

    def compute(self, ctx: CheckpointContext) -> dict[str, Any]:
        return _compute(ctx)

    def summarise(self, run: RunContext, values: list[tuple[int, dict[str, Any]]],
                  arrays: Callable[[int], dict[str, Any]]) -> dict[str, Any] | None:
        if not values:
            return None
        epoch, last = values[-1]
        arr = arrays(epoch)
        v = group_view(run)
        reps = irreps(v.group)
        if "similarity" not in arr or len(arr["similarity"]) != len(reps):
            return None
        per = {r.name: {"dim": r.dim, "alias": r.alias,
                        **{k: _num(arr[k][i]) for k in _PER_IRREP if k in arr}}
               for i, r in enumerate(reps)}
        return {"epoch": epoch, "group": v.group.name, "rule": v.rule,
                "key": [r.name for i, r in enumerate(reps) if arr.get("key", [])[i]],
                "final_key": [r.name for i, r in enumerate(reps) if arr.get("final_key", [])[i]],
                **{k: last.get(k) for k in ("restricted_loss", "excluded_loss", "full_loss",
                                            "logits_explained")},
                "irreps": per}

    def headline(self, summary: dict[str, Any]) -> str | None:
        keys = summary.get("final_key") or []
        per = summary.get("irreps") or {}
        if not keys:
            return f"no key irreps in {summary.get('group')} at epoch {summary.get('epoch')}"
        named = ", ".join(f"{k}{_alias(per.get(k, {}))} {_pct(per.get(k, {}).get('similarity'))}"
                          for k in keys[:6]) + (" …" if len(keys) > 6 else "")
        return (f"key irreps of {summary.get('group')} at epoch {summary.get('epoch')}: {named} "
                f"(logit similarity); restricted loss {_fmt(summary.get('restricted_loss'))}, "
                f"excluded loss {_fmt(summary.get('excluded_loss'))}, full "
                f"{_fmt(summary.get('full_loss'))}")


_PER_IRREP = ("similarity", "excluded_loss_per_irrep", "embed_var", "neuron_var", "unembed_var")


def _num(v: Any) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


def _alias(d: dict[str, Any]) -> str:
    return f" ({d['alias']})" if d.get("alias") else ""


def _pct(v: Any) -> str:
    return "" if v is None else f"{v:.2f}"


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3g}"


def _compute(ctx: CheckpointContext) -> dict[str, Any]:
    v = group_view(ctx.run)
    ap = ctx.all_pairs()
    rows = torch.from_numpy(v.pairs.copy())
    L = _np(ap.logits[rows])  # (order², C): every class the model outputs
    names, reps = v.names, irreps(v.group)
    sims = logit_similarities(L[:, v.tokens], v.group, rule=v.rule)
    sim = np.array([sims[n] for n in names])
    now = key_irreps(sims)
    final = _final_irreps(ctx, v)
    labels = ap.labels[rows].numpy()
    r: dict[str, Any] = {"restricted_loss": None, "excluded_loss": None,
                         "excluded_loss_per_irrep": {}}
    if final:  # over no key irreps, restricted and excluded loss say nothing
        r = restricted_and_excluded(L, labels, v.group, final, v.rule,
                                    _train_positions(ctx.run.train_idx, v.pairs))
    per = np.array([r["excluded_loss_per_irrep"].get(n, np.nan) for n in names])
    with torch.no_grad():
        W_E = _np(ctx.model.token_embedding())[v.tokens]
        W_L = _np(ctx.model.neuron_logit_map())[:, v.tokens]
    return {
        "n_key": len(now),
        "top_similarity": float(sim.max()),
        "logits_explained": float(np.square(sim).sum()),
        "restricted_loss": r["restricted_loss"],
        "excluded_loss": r["excluded_loss"],
        "full_loss": cross_entropy(L, labels),
        "n_final_keys": len(final),
        "similarity": sim,
        "key": _multi_hot(names, now),
        "final_key": _multi_hot(names, final),
        "excluded_loss_per_irrep": per,
        "embed_var": variance_explained(W_E, reps),
        "unembed_var": variance_explained(W_L.T, reps),
        "neuron_var": answer_variance_explained(_np(ap.neurons[rows]), v.group, reps, v.rule),
    }


irreps_probe = IrrepsProbe()

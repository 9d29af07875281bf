"""What the probes of one analysis share, and the checks that keep one probe from changing it
for the others.

Each checkpoint's all-pairs forward pass runs once and is shared by every probe that needs it;
one model object is reused for every checkpoint (:class:`Workspace`). After each probe the
analysis checks that the probe left the model (every parameter and buffer, bit for bit; its
structure, hooks and mode), the run's shared tensors (``ctx.run.tokens`` …) and the shared
all-pairs results as it found them (:meth:`Workspace.check`); what it changed is rebuilt from the
checkpoint for the probes after it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from mechgrok.analysis.identity import SIMPLE_TYPES
from mechgrok.probes.base import AllPairs, CheckpointContext, RunContext
from mechgrok.store import CheckpointInfo, Run

__all__ = ["AnalysisRunContext", "GuardedContext", "Workspace", "run_context"]


class AnalysisRunContext(RunContext):
    """The run context probes get: notes which probe asked for the final key frequencies, and
    hands each a copy of them (a probe cannot change them for the others)."""

    used_final = False

    def final_key_frequencies(self) -> dict[str, Any]:
        self.used_final = True
        return copy.deepcopy(super().final_key_frequencies())


def run_context(run: Run, final: CheckpointInfo | None = None) -> AnalysisRunContext:
    """The shared context of a run's probes; key frequencies from ``final`` (default: the last
    checkpoint). Probes see their own copy of the Run object."""
    from mechgrok.probes.builtin import final_key_frequency_finder

    final = final if final is not None else run.checkpoint()

    def finder() -> dict[str, Any]:
        return final_key_frequency_finder(ctx, run.load_model(final))

    ctx = AnalysisRunContext(copy.deepcopy(run), run.dataset(), finder)
    return ctx


# --------------------------------------------------------------------------------------------
# Keeping probes from changing what the others see
# --------------------------------------------------------------------------------------------
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")
_RUN_TENSORS = ("tokens", "labels", "train_idx", "test_idx")
_RUN_OBJECTS = ("config", "data", "run", "_final_key_freqs")


def _tensor_sig(t: Any) -> tuple:
    if t is None:
        return (None,)
    return id(t), t.dtype, tuple(t.shape), str(t.device), t.requires_grad


def _structure(mods: Sequence[tuple[str, Any]]) -> tuple:
    """Everything about a model but its numbers that a probe could change, from its modules
    (``mods``, as ``named_modules()`` gave them): each module's identity, class, plain attributes
    (``training`` included), hooks, submodules, and its tensors' identity, dtype, shape, device
    and ``requires_grad``; and torch's global module hooks."""
    import torch

    out: list[Any] = []
    for _, m in mods:
        d = m.__dict__
        out.append((
            id(m), type(m),
            tuple((k, v) for k, v in d.items() if k[:1] != "_" and isinstance(v, SIMPLE_TYPES)),
            tuple(len(d.get(a) or ()) for a in _HOOK_DICTS),
            tuple((k, id(v)) for k, v in (d.get("_modules") or {}).items()),
            tuple((k, *_tensor_sig(v)) for k, v in (d.get("_parameters") or {}).items()),
            tuple((k, *_tensor_sig(v)) for k, v in (d.get("_buffers") or {}).items()),
        ))
    out.append(tuple(len(getattr(torch.nn.modules.module, f"_global{a}", None) or ())
                     for a in _HOOK_DICTS[:4]))
    return tuple(out)


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit the same values (NaN equal to NaN)."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return False


def _all_pairs_signature(ap: Any) -> tuple:
    cache = getattr(ap.cache, "cache_dict", ap.cache if isinstance(ap.cache, dict) else {})
    tensors = [ap.tokens, ap.labels, ap.logits, ap.neurons, *cache.values()]
    return (id(ap), id(cache), tuple(sorted(cache)),
            tuple((id(t), getattr(t, "_version", None)) for t in tensors))


class GuardedContext(CheckpointContext):
    """A checkpoint context that remembers what its all-pairs results were when computed."""

    _ap_sig: tuple | None = None

    def all_pairs(self) -> AllPairs:
        fresh = self.cached_all_pairs is None
        ap = super().all_pairs()
        if fresh:
            self._ap_sig = (id(ap), _all_pairs_signature(ap))
        return ap

    def all_pairs_changed(self) -> bool:
        ap = self.cached_all_pairs
        if self._ap_sig is None:
            return ap is not None  # set from outside
        return ap is None or self._ap_sig != (id(ap), _all_pairs_signature(ap))


class Workspace:
    """The model, run context and checkpoint context every probe of an analysis shares, and the
    checks, after each probe, that it left them as it found them (else they are rebuilt)."""

    def __init__(self, run: Run, final: CheckpointInfo):
        self.run = run
        self.final = final
        self.model: Any = None
        self.ck: CheckpointInfo | None = None
        self.ctx: GuardedContext | None = None
        self._new_run_context()

    # -- building ------------------------------------------------------------------------------
    def _new_run_context(self) -> None:
        self.run_ctx = run_context(self.run, self.final)
        rc = self.run_ctx
        self._rc_ids = tuple(id(getattr(rc, k, None)) for k in (*_RUN_TENSORS, *_RUN_OBJECTS))
        self._rc_tensors = {k: getattr(rc, k).clone() for k in _RUN_TENSORS}
        d = rc.data
        self._rc_arrays = {k: getattr(d, k).copy() for k in ("pairs", "labels", "train_idx",
                                                              "test_idx")}

    def _new_model(self) -> None:
        from mechgrok.models import build_model

        self.model = build_model(self.run.config).eval()

    def load(self, ck: CheckpointInfo) -> None:
        """Load a checkpoint into the shared model (a CheckpointError when it is bad)."""
        if self.model is None:
            self._new_model()
        self.ck = None
        self.run.load_into(self.model, ck)
        self.ck = ck
        self._snapshot(ck)

    @property
    def context(self) -> GuardedContext:
        """The loaded checkpoint's context, which the probes share (after :meth:`load`)."""
        if self.ctx is None:
            raise RuntimeError("no checkpoint is loaded")
        return self.ctx

    def _snapshot(self, ck: CheckpointInfo) -> None:
        self._mods = list(self.model.named_modules())
        self._structure = _structure(self._mods)
        self._tensors = [(f"{name}.{k}" if name else k, t) for name, m in self._mods
                         for k, t in (*m._parameters.items(), *m._buffers.items())
                         if t is not None]
        self._values = [t.detach().clone() for _, t in self._tensors]
        self.ctx = GuardedContext(self.run_ctx, ck, self.model)

    # -- checking ------------------------------------------------------------------------------
    def _model_change(self) -> str | None:
        if _structure(self._mods) != self._structure:
            return "its modules, parameters, hooks or mode"
        for (name, t), v in zip(self._tensors, self._values, strict=True):
            if not _same(t.detach(), v):
                return name
        return None

    def _run_context_changed(self) -> bool:
        rc = self.run_ctx
        if tuple(id(getattr(rc, k, None)) for k in (*_RUN_TENSORS, *_RUN_OBJECTS)) != self._rc_ids:
            return True
        if not all(_same(getattr(rc, k), v) for k, v in self._rc_tensors.items()):
            return True
        import numpy as np

        return not all(np.array_equal(getattr(rc.data, k), v) for k, v in self._rc_arrays.items())

    def check(self) -> list[str]:
        """What the last probe changed of what the others share, each rebuilt (none: [])."""
        import torch

        problems = []
        what = self._model_change() if self.ck is not None else None
        if what is not None:
            problems.append(f"it modified the model ({what}), which the other probes share; the "
                            f"checkpoint was loaded again for them")
            self._new_model()
            with torch.no_grad():
                self.run.load_into(self.model, self.ck)
        if self._run_context_changed():
            problems.append("it modified the run's shared data (ctx.run), which the other probes "
                            "share; it was made again for them")
            self._new_run_context()
        if self.ctx is not None and self.ctx.all_pairs_changed() and what is None:
            problems.append("it modified the shared all-pairs results (ctx.all_pairs()); they "
                            "were computed again for the other probes")
        if problems and self.ck is not None:
            self._snapshot(self.ck)
        return problems

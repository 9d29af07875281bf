"""The probe API (a **contract**: users' probes depend on it).

A probe has a ``name``, a one-line ``description``, declares what it ``needs`` and maps one
checkpoint (plus its run's context) to named results: **scalars** (Python/NumPy numbers, bools)
and **arrays** (NumPy arrays or torch tensors). Scalars become columns of the measures table
(``<probe>.<name>``); arrays go to a sibling file. A probe that does not apply to a run (Fourier
measures on ``quad1``, say) says why, and the table records that instead of numbers.

Two ways to write one, both registered the same way::

    from mechgrok.probes import Probe, probe

    @probe("logit_norm", needs=("all_pairs",), description="mean L2 norm of the logits")
    def logit_norm(ctx):
        return {"mean": ctx.all_pairs().logits.norm(dim=-1).mean().item()}

    class MaxNeuron(Probe):
        name = "max_neuron"
        needs = ("all_pairs",)
        def compute(self, ctx):
            return {"max": ctx.all_pairs().neurons.max().item()}

Run a probe from your own module without installing anything:
``mechgrok analyze RUN --probe mymodule:MaxNeuron``; or install it under the entry-point group
``mechgrok.probes`` (``[project.entry-points."mechgrok.probes"] max_neuron = "mymodule:MaxNeuron"``).
Names are unique: registering a duplicate is an error, and an installed probe never replaces a
built-in. A name is a letter or ``_`` followed by up to 63 letters, digits, ``_`` or ``-``
(:data:`PROBE_NAME_RE`): it becomes part of column names, file contents and the HTML report's
element ids, so nothing else is accepted.

``needs`` (what the analysis prepares, once per checkpoint, shared by every probe):

* ``"all_pairs"``: one hooked forward over every valid input, cached (``ctx.all_pairs()``);
* ``"key_freqs"``: the key frequencies found on the run's final checkpoint
  (``ctx.run.final_key_frequencies()``);
* ``"fourier"``: the task is a rule in the cyclic group Z_p (its ``algebra``: ``add``, ``sub``),
  where Fourier analysis over Z_p applies (other tasks get "n/a" with the reason);
* ``"grad"``: the probe runs with autograd enabled (others run under ``torch.no_grad()``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mechgrok.errors import MechgrokError
from mechgrok.store.analysis import PROBE_NAME_RE, PROBE_NAME_RULE, is_probe_name
from mechgrok.tasks import TASKS, Task, get_task

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mechgrok.config import RunConfig
    from mechgrok.models import HookedModel
    from mechgrok.store import CheckpointInfo, Run
    from mechgrok.tasks import TaskData

__all__ = [
    "FOURIER_TASKS",
    "KNOWN_NEEDS",
    "PROBE_NAME_RE",
    "PROBE_NAME_RULE",
    "AllPairs",
    "CheckpointContext",
    "FunctionProbe",
    "NotApplicable",
    "Probe",
    "ProbeError",
    "ProbeOutput",
    "RunContext",
    "as_probe",
    "check_output",
    "fourier_op",
    "is_probe_name",
    "probe",
]

# What a probe's name may be (PROBE_NAME_RE, PROBE_NAME_RULE, is_probe_name) is defined with the
# measures records it is written into (mechgrok.store.analysis) and re-exported here.
KNOWN_NEEDS = frozenset({"all_pairs", "key_freqs", "fourier", "grad"})
_CYCLIC_OPS = {"xy": "add", "xy^-1": "sub"}  # a rule in Z_p, as the Fourier maths names it


def fourier_op(task: Task) -> str | None:
    """The operation over Z_p (``"add"`` or ``"sub"``) the Fourier probes compute for ``task``,
    read from its algebra: a rule in the cyclic group Z_p; None for every other task."""
    alg = task.algebra
    return _CYCLIC_OPS.get(alg.rule) if alg.kind == "cyclic" else None


#: the tasks Fourier analysis over Z_p reads, and their operation (derived from their algebra)
FOURIER_TASKS = {name: op for name, t in TASKS.items() if (op := fourier_op(t)) is not None}


class ProbeError(MechgrokError):
    """A probe that cannot be found, loaded or registered."""


class NotApplicable(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a probe (or its ``applies``) when it does not apply; the message says why."""


class Probe:
    """Base class. Subclasses set ``name`` (and ``description``, ``needs``) and implement
    :meth:`compute`; override :meth:`applies` to refuse runs it does not fit."""

    name: str = ""
    description: str = ""
    needs: tuple[str, ...] = ()
    builtin: bool = False

    def applies(self, run: RunContext) -> str | None:
        """None if the probe applies to this run, else the reason it does not."""
        if "fourier" in self.needs or "key_freqs" in self.needs:
            return run.fourier_reason()
        return None

    def compute(self, ctx: CheckpointContext) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<probe {self.name!r}>"


class FunctionProbe(Probe):
    """A probe made from a function of the checkpoint context (:func:`probe`, or a plain function
    given to :func:`as_probe`): ``fn`` computes it, ``applies_fn`` (when set) refuses runs."""

    def __init__(self, fn: Callable[[CheckpointContext], dict[str, Any]], name: str,
                 needs: Iterable[str], description: str,
                 applies: Callable[[RunContext], str | None] | None):
        self.fn = fn
        self.name = name
        self.needs = tuple(needs)
        self.description = description
        self._applies = applies
        functools.update_wrapper(self, fn)

    @property
    def applies_fn(self) -> Callable[[RunContext], str | None] | None:
        """The function given as ``applies=`` (None when there was none)."""
        return self._applies

    def applies(self, run: RunContext) -> str | None:
        base = super().applies(run)
        if base is not None or self._applies is None:
            return base
        return self._applies(run)

    def compute(self, ctx: CheckpointContext) -> dict[str, Any]:
        return self.fn(ctx)

    def __call__(self, ctx: CheckpointContext) -> dict[str, Any]:
        return self.fn(ctx)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by reference, as a function is: its name in the registry when it is the
        registered probe of that name, else the module and name of the decorated function
        (``mechgrok analyze --workers`` sends the probes to its worker processes this way)."""
        from mechgrok.probes import registry

        if registry().get(self.name) is self:
            return (_registered_probe, (self.name,))
        ref = (self.fn.__module__, self.fn.__qualname__, self.name)
        try:
            found = _probe_by_reference(*ref)
        except Exception as e:  # a probe made inside a function, or under another name
            raise TypeError(f"probe {self.name!r} cannot be sent by reference "
                            f"({self.fn.__module__}:{self.fn.__qualname__}: {e})") from None
        if found is not self and getattr(found, "fn", None) is not self.fn:
            raise TypeError(f"probe {self.name!r} is not what {self.fn.__module__}:"
                            f"{self.fn.__qualname__} names")
        return (_probe_by_reference, ref)


def _registered_probe(name: str) -> Probe:
    from mechgrok.probes import get_probe

    return get_probe(name)


def _probe_by_reference(module: str, qualname: str, name: str) -> Probe:
    """The probe a module defines at ``qualname`` (a ``@probe`` function, or a plain function
    turned into one by :func:`as_probe`)."""
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    p = as_probe(obj, f"{module}:{qualname}")
    if p.name != name:
        raise ProbeError(f"{module}:{qualname} is probe {p.name!r} now, not {name!r}")
    return p


def probe(name: str | None = None, *, needs: Iterable[str] = (), description: str = "",
          applies: Callable[[RunContext], str | None] | None = None
          ) -> Callable[[Callable[[CheckpointContext], dict[str, Any]]], Probe]:
    """Decorator: turn ``fn(ctx) -> dict`` into a :class:`Probe` (registered by the caller)."""

    def wrap(fn: Callable[[CheckpointContext], dict[str, Any]]) -> Probe:
        desc = description or (fn.__doc__ or "").strip().split("\n")[0]
        return FunctionProbe(fn, name or fn.__name__, needs, desc, applies)

    return wrap


def as_probe(obj: Any, where: str) -> Probe:
    """A Probe from a Probe instance, a Probe subclass, or a plain function."""
    if isinstance(obj, Probe):
        p = obj
    elif isinstance(obj, type) and issubclass(obj, Probe):
        p = obj()
    elif callable(obj):
        p = FunctionProbe(obj, getattr(obj, "__name__", "probe"), (), "", None)
    else:
        raise ProbeError(f"{where} is not a probe (a Probe subclass, a @probe function or a "
                         f"function of ctx), it is a {type(obj).__name__}")
    if not p.name or not isinstance(p.name, str):
        raise ProbeError(f"{where}: a probe needs a name ({PROBE_NAME_RULE}), got {p.name!r}")
    if not is_probe_name(p.name):
        hint = (" (give the function a name: a def, or @probe(\"name\"))"
                if p.name == "<lambda>" else "")
        raise ProbeError(f"{where}: probe name {p.name!r} is not allowed; a probe name is "
                         f"{PROBE_NAME_RULE}{hint}")
    unknown = set(p.needs) - KNOWN_NEEDS
    if unknown:
        raise ProbeError(f"probe {p.name!r} ({where}) needs {sorted(unknown)}; mechgrok provides "
                         f"{sorted(KNOWN_NEEDS)}")
    return p


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class ProbeOutput:
    scalars: dict[str, float | int | bool | None] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def check_output(p: Probe, out: Any) -> ProbeOutput:
    """Split a probe's dict into scalars and arrays; anything else is a clear TypeError."""
    if not isinstance(out, dict):
        raise TypeError(f"probe {p.name!r} returned {type(out).__name__}; it must return a dict "
                        f"of name → number or array")
    res = ProbeOutput()
    for k, v in out.items():
        if not isinstance(k, str) or not k or "." in k:
            raise TypeError(f"probe {p.name!r} returned a result named {k!r}; names are "
                            f"non-empty strings without dots")
        if hasattr(v, "detach"):  # torch tensor
            v = v.detach().cpu().numpy()
        if isinstance(v, (bool, np.bool_)):
            res.scalars[k] = bool(v)
        elif isinstance(v, (int, np.integer)):
            res.scalars[k] = int(v)
        elif isinstance(v, (float, np.floating)):
            res.scalars[k] = float(v)
        elif v is None:
            res.scalars[k] = None
        elif isinstance(v, np.ndarray):
            if v.ndim == 0:
                res.scalars[k] = v.item()
            elif v.dtype.kind in "biuf":
                res.arrays[k] = np.ascontiguousarray(v)
            else:
                raise TypeError(f"probe {p.name!r}: array {k!r} has dtype {v.dtype}; "
                                f"only numeric arrays are stored")
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            res.arrays[k] = np.asarray(v)
        else:
            raise TypeError(f"probe {p.name!r}: result {k!r} is a {type(v).__name__}; "
                            f"return numbers or numeric arrays")
    return res


# --------------------------------------------------------------------------------------------
# Contexts
# --------------------------------------------------------------------------------------------
@dataclass
class AllPairs:
    """One hooked forward over every valid input of the task (row-major pairs)."""

    tokens: torch.Tensor  # (N, 3)
    labels: torch.Tensor  # (N,)
    logits: torch.Tensor  # (N, n) at the read-out position
    cache: Any  # a TransformerLens ActivationCache of the hooks probes asked for
    neurons: torch.Tensor  # (N, n_neurons): the model's neuron_hook at the read-out position


class RunContext:
    """What every checkpoint of one run shares: config, data, split, final key frequencies."""

    def __init__(self, run: Run, data: TaskData, final_key_freqs: Callable[[], dict] | None = None):
        import torch

        self.run = run
        self.config: RunConfig = run.config
        self.data = data
        self.tokens = torch.from_numpy(data.tokens)  # (N, 3): [x, y, =] per pair
        self.labels = torch.from_numpy(data.labels)
        self.train_idx = torch.as_tensor(data.train_idx)
        self.test_idx = torch.as_tensor(data.test_idx)
        self._final_key_freqs = final_key_freqs
        self._final_cache: dict | Exception | None = None

    @property
    def p(self) -> int | None:
        return self.config.task.p

    @property
    def op(self) -> str | None:
        return fourier_op(get_task(self.config.task.name))

    def z_p(self) -> tuple[int, str]:
        """The run's modulus p and its operation over Z_p (add or sub); any other task raises
        :class:`NotApplicable` with :meth:`fourier_reason`'s reason (the ``fourier`` need keeps
        such runs away from Fourier probes already)."""
        p, op = self.p, self.op
        if p is None or op is None:
            raise NotApplicable(self.fourier_reason() or f"task {self.config.task.name} has no "
                                                         f"modulus")
        return p, op

    def fourier_reason(self) -> str | None:
        """None when Fourier analysis over Z_p applies to this run, else why not (from the
        task's algebra)."""
        task = get_task(self.config.task.name)
        name, alg = task.name, task.algebra
        if fourier_op(task) is not None:
            return None
        if alg.kind == "symmetric":
            return (f"Fourier analysis over Z_p does not apply to {name} (a group of "
                    f"permutations; its natural basis is S{alg.degree}'s representations)")
        if alg.kind == "multiplicative":
            return (f"Fourier analysis over Z_p does not apply to {name} directly (a rule in "
                    f"the multiplicative group Z_p*, whose natural basis is Fourier over "
                    f"Z_{{p−1}} by a discrete logarithm; these probes do not compute it yet)")
        return (f"Fourier analysis over Z_p applies to {' and '.join(FOURIER_TASKS)}; {name} is "
                f"not a group operation on Z_p")

    def final_key_frequencies(self) -> dict[str, list[int]]:
        """Key frequencies found on the final checkpoint, by each rule (computed once)."""
        if self._final_cache is None:
            if self._final_key_freqs is None:
                raise NotApplicable("no final checkpoint to take key frequencies from")
            try:
                self._final_cache = self._final_key_freqs()
            except Exception as e:  # remembered: every checkpoint reports the same cause
                self._final_cache = e
        if isinstance(self._final_cache, Exception):
            raise self._final_cache
        return self._final_cache


class CheckpointContext:
    """One checkpoint: its model, and the shared all-pairs forward (computed on first use)."""

    def __init__(self, run: RunContext, checkpoint: CheckpointInfo, model: HookedModel,
                 hooks: Iterable[str] | None = None):
        self.run = run
        self.checkpoint = checkpoint
        self.epoch = checkpoint.epoch
        self.model = model
        self._hooks = set(hooks or ())
        self._all_pairs: AllPairs | None = None

    @property
    def config(self) -> RunConfig:
        return self.run.config

    @property
    def cached_all_pairs(self) -> AllPairs | None:
        """The all-pairs results when :meth:`all_pairs` has computed them (or something set
        them), else None; computes nothing."""
        return self._all_pairs

    def all_pairs(self) -> AllPairs:
        if self._all_pairs is None:
            import torch

            names = {self.model.neuron_hook, *self._hooks}
            with torch.no_grad():
                out, cache = self.model.run_with_cache(
                    self.run.tokens, names_filter=lambda n: n in names)
            logits = out[:, -1] if out.ndim == 3 else out
            self._all_pairs = AllPairs(self.run.tokens, self.run.labels, logits, cache,
                                       self.model.neurons(cache))
        return self._all_pairs

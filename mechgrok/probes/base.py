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
* ``"key_freqs"``: the keys found on the run's final checkpoint, in the task's basis
  (``ctx.run.final_key_frequencies()``): for a task read in Fourier, key frequencies by each rule
  (``neurons``, ``embedding``, ``logit_map``); for S_n, key irreps (``irreps``); a task with
  neither raises :class:`NotApplicable`. Every record of such a probe depends on the final
  checkpoint (it is recomputed when the run trains further);
* ``"fourier"``: the task is a rule x·y or x·y⁻¹ in a cyclic group, where Fourier analysis
  applies: Z_p (``add``, ``sub``) or Z_p* read as Z_{p−1} through the discrete log (``mul``,
  ``div``); ``ctx.run.fourier_view()`` gives the group's order n, the operation and the task's
  tokens and pairs in the group's order (other tasks get "n/a" with the reason);
* ``"grad"``: the probe runs with autograd enabled (others run under ``torch.no_grad()``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mechgrok.errors import MechgrokError
from mechgrok.measures.taskgroups import FourierView, fourier_view
from mechgrok.probes.output import ProbeOutput, check_output
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
    "FOURIER_VIEW_TASKS",
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
#: every task the Fourier probes read: Z_p's, and Z_p*'s through the discrete log
FOURIER_VIEW_TASKS = tuple(name for name, t in TASKS.items()
                           if t.algebra.kind in ("cyclic", "multiplicative")
                           and t.algebra.rule in _CYCLIC_OPS)


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
        if "fourier" in self.needs:
            return run.fourier_reason()
        return None

    def compute(self, ctx: CheckpointContext) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def summarise(self, run: RunContext, values: list[tuple[int, dict[str, Any]]],
                  arrays: Callable[[int], dict[str, Any]]) -> dict[str, Any] | None:
        """The probe's run-level summary (JSON data, kept in ``summary.json`` under
        ``probes.<name>``) from its results: ``values``, (epoch, scalars) by epoch, and
        ``arrays(epoch)``, its arrays at an epoch; None when there is nothing to say."""
        return None

    def headline(self, summary: dict[str, Any]) -> str | None:
        """One line from :meth:`summarise`'s summary: ``analyze`` prints it, the report's card
        and ``compare`` show it."""
        return None

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
        self._view: FourierView | None = None

    @property
    def p(self) -> int | None:
        return self.config.task.p

    @property
    def degree(self) -> int | None:
        """The n of S_n of a symmetric task (5 for S5); None for a modular one."""
        return self.data.degree

    @property
    def op(self) -> str | None:
        return fourier_op(get_task(self.config.task.name))

    def z_p(self) -> tuple[int, str]:
        """The run's modulus p and its operation over Z_p (add or sub) for the measures defined
        on Z_p itself (clock or pizza); any other task raises :class:`NotApplicable`."""
        p, op = self.p, self.op
        if p is None or op is None:
            raise NotApplicable(self.z_p_reason() or f"task {self.config.task.name} has no "
                                                     f"modulus")
        return p, op

    def z_p_reason(self) -> str | None:
        """None for a rule in the cyclic group Z_p (add, sub), else why a measure defined on
        Z_p's residues does not apply."""
        if self.op is not None:
            return None
        name = self.config.task.name
        return (f"defined on Z_p's residues ({' and '.join(FOURIER_TASKS)}); {name} is "
                f"a rule in the {self.data.algebra.group_name}")

    def fourier_view(self) -> FourierView:
        """The run's task read as a rule in the cyclic group Z_n (:func:`mechgrok.measures.
        fourier_view`): Z_p for add/sub (the identity view), Z_{p−1} in discrete-log order for
        mul/div (the (p − 1)² pairs with x, y ≠ 0). Any other task raises
        :class:`NotApplicable` with :meth:`fourier_reason`'s reason."""
        if self._view is None:
            view = fourier_view(get_task(self.config.task.name), self.p)
            if view is None:
                raise NotApplicable(self.fourier_reason() or "no Fourier view")
            self._view = view
        return self._view

    def fourier_reason(self) -> str | None:
        """None when Fourier analysis over a cyclic group (Z_p, or Z_p* by discrete log)
        applies to this run, else why not (from the task's algebra)."""
        task = get_task(self.config.task.name)
        name, alg = task.name, self.data.algebra
        if alg.kind in ("cyclic", "multiplicative") and alg.rule in _CYCLIC_OPS:
            return None
        if alg.kind == "symmetric":
            return (f"Fourier analysis over Z_p does not apply to {name} (a group of "
                    f"permutations; its natural basis is S{alg.degree}'s representations: "
                    f"see the irreps probe)")
        return (f"Fourier analysis applies to rules in a cyclic group ("
                f"{', '.join(FOURIER_VIEW_TASKS)}); {name} is not a group operation on Z_p "
                f"(read in the 2-D Fourier basis: see the spectrum2d probe)")

    def final_key_frequencies(self) -> dict[str, Any]:
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

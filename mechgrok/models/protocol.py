"""What a model must offer mechgrok's probes: the :class:`GrokModel` protocol.

mechgrok's own models (:class:`~mechgrok.models.HookedModel`) satisfy it, and so can a model
class of your own, without being rebuilt in mechgrok: give it the members below, then
``mechgrok.analysis.analyze_model(model, "add", p)`` runs the probes on it
(``docs/hooked-models.md`` has a worked example).

Conventions every member shares:

* **Tokens** are ``(batch, 3)`` int64 tensors ``[x, y, =]`` on the CPU: the two operands
  (``0 … n − 1``) and the ``=`` token, whose id is ``n`` (the number of answer classes). A
  model that does not need the ``=`` token may ignore the third column.
* **Logits** are ``(batch, pos, n)`` (a sequence model; the probes read the last position) or
  ``(batch, n)``.
* **Hook names** follow TransformerLens: ``hook_embed`` is the token embeddings before position
  embeddings ``(batch, pos, d)`` (position 0 is x, position 1 is y); the neurons' hook is any
  name you choose, given by ``neuron_hook`` (mechgrok's transformer uses
  ``blocks.0.mlp.hook_post``, its MLP ``layers.0.hook_post``).

A TransformerLens :class:`~transformer_lens.HookedRootModule` subclass with a
:class:`~transformer_lens.hook_points.HookPoint` named ``hook_embed`` and one on the neurons
already has ``run_with_cache``, ``run_with_hooks``, ``parameters`` and ``named_parameters``;
it then needs ``neuron_hook``, ``n_classes``, ``token_embedding``, ``neuron_logit_map`` and
``neurons``. A plain :class:`torch.nn.Module` works as well if it implements the two ``run_with_*``
methods itself (the cache may be a plain dict).

Which probes use what is :data:`PROBE_MEMBERS`. ``forward_last(tokens)`` is the one optional
member: only the ``collapse`` probe needs it, and on a model without it that probe reports
"n/a" with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from mechgrok.errors import MechgrokError

__all__ = ["MEMBERS", "OPTIONAL_MEMBERS", "PROBE_MEMBERS", "GrokModel", "check_model",
           "missing_members"]


@runtime_checkable
class GrokModel(Protocol):
    """What the built-in probes need from a model (see the module docstring for conventions).

    ``isinstance(model, GrokModel)`` checks only that the members exist; :func:`check_model`
    also checks their kinds and says what is missing. ``forward_last`` is optional and so is not
    part of this class (see :data:`OPTIONAL_MEMBERS`).
    """

    #: Name of the hook holding the neurons, e.g. ``"blocks.0.mlp.hook_post"``: the activations
    #: the probes cluster by frequency. ``run_with_cache`` must be able to cache it, with shape
    #: ``(batch, pos, n_neurons)`` or ``(batch, n_neurons)``.
    neuron_hook: str
    #: Number of answer classes n (p for the modular tasks, 120 for S5); also the ``=`` token's id.
    n_classes: int

    def run_with_cache(self, tokens: Tensor, *, names_filter: Callable[[str], bool] | None = None
                       ) -> tuple[Tensor, Any]:
        """A hooked forward that records activations: ``(logits, cache)``.

        ``tokens`` ``(batch, 3)`` int64; ``logits`` ``(batch, pos, n)`` or ``(batch, n)``;
        ``cache`` maps each hook name that ``names_filter(name)`` accepts (every hook when
        None) to its activation tensor: a TransformerLens ``ActivationCache`` or a plain dict.
        Used by every probe that reads ``ctx.all_pairs()`` and to find key frequencies.
        """
        ...

    def run_with_hooks(self, tokens: Tensor, *,
                       fwd_hooks: list[tuple[str, Callable[[Tensor, Any], Tensor | None]]]
                       ) -> Tensor:
        """A forward with hooks: for each ``(name, fn)``, ``fn(activation, hook)`` is called at
        that hook and a tensor it returns replaces the activation. Returns the logits.

        The clock/pizza probe's gradient symmetricity calls it with
        ``fwd_hooks=[("hook_embed", fn)]`` (``fn`` returns a leaf tensor to differentiate by),
        under ``torch.enable_grad()``: ``hook_embed`` must be ``(batch, pos, d)`` with the x
        operand at position 0 and y at 1, and the logits must depend on it differentiably.
        """
        ...

    def token_embedding(self) -> Tensor:
        """The n answer elements' input vectors, ``(n, d)``: row i is element i's embedding
        (for a one-hot input, the first layer's weights for the x operand). Used by
        ``fourier_embed``, ``gini``, ``clock_pizza`` (circularity) and the key frequencies'
        embedding rule."""
        ...

    def neuron_logit_map(self) -> Tensor:
        """``W_L`` ``(n_neurons, n)``: how each neuron of ``neuron_hook`` writes to the logits
        (``W_out @ W_U`` in a transformer, ``W_U`` in an MLP). Used by ``gini`` and the key
        frequencies' logit-map rule."""
        ...

    def neurons(self, cache: Any) -> Tensor:
        """The ``neuron_hook`` activations at the read-out position, ``(batch, n_neurons)``,
        from a cache ``run_with_cache`` returned. Typically
        ``acts = cache[self.neuron_hook]; return acts[:, -1] if acts.ndim == 3 else acts``."""
        ...

    def parameters(self) -> Iterator[nn.Parameter]:
        """The trainable tensors (``torch.nn.Module.parameters``); at least one. The
        clock/pizza probe puts its inputs on the first one's device."""
        ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, tensor)`` pairs (``torch.nn.Module.named_parameters``): the ``weights``
        probe's per-tensor norms and the ``collapse`` probe's gradients."""
        ...


#: Every member of the protocol and what the probes use it for (for messages and the docs).
MEMBERS: dict[str, str] = {
    "neuron_hook": "the name of the hook holding the neurons",
    "n_classes": "the number of answer classes",
    "run_with_cache": "run_with_cache(tokens, names_filter=...) -> (logits, cache), the hooked "
                      "forward every all-pairs probe reads",
    "run_with_hooks": "run_with_hooks(tokens, fwd_hooks=[('hook_embed', fn)]), for clock_pizza's "
                      "gradient symmetricity",
    "token_embedding": "token_embedding() -> (n, d), the element embeddings",
    "neuron_logit_map": "neuron_logit_map() -> (n_neurons, n), the neuron-to-logit map W_L",
    "neurons": "neurons(cache) -> (batch, n_neurons), the neurons at the read-out position",
    "parameters": "parameters(), as torch.nn.Module has",
    "named_parameters": "named_parameters(), as torch.nn.Module has",
    "forward_last": "forward_last(tokens) -> (batch, n), the read-out logits as a plain "
                    "differentiable forward, for the collapse probe's training-loss gradient",
}

#: Members a model may lack: a probe that needs one reports "n/a" instead.
OPTIONAL_MEMBERS: frozenset[str] = frozenset({"forward_last"})

_ALL_PAIRS = ("run_with_cache", "neuron_hook", "neurons")
_KEYS = (*_ALL_PAIRS, "token_embedding", "neuron_logit_map")
#: The members each built-in probe uses (``key_freqs`` on the final model included where the
#: probe needs the final key frequencies). ``tests/test_protocol.py`` holds it to what the probes
#: really touch.
PROBE_MEMBERS: dict[str, tuple[str, ...]] = {
    "weights": ("named_parameters",),
    "loss": _ALL_PAIRS,
    "fourier_embed": ("token_embedding",),
    "key_freqs": _KEYS,
    "restricted": _KEYS,
    "gini": ("token_embedding", "neuron_logit_map"),
    "clock_pizza": (*_ALL_PAIRS, "run_with_hooks", "parameters", "token_embedding"),
    "collapse": (*_ALL_PAIRS, "named_parameters", "forward_last"),
    "irreps": _KEYS,
    "spectrum2d": _ALL_PAIRS,
}

_METHODS = ("run_with_cache", "run_with_hooks", "token_embedding", "neuron_logit_map", "neurons",
            "parameters", "named_parameters")


def missing_members(model: Any, *, optional: bool = False) -> list[str]:
    """The protocol members ``model`` lacks or has in the wrong kind, each as ``name (what it is
    for)``; with ``optional``, the optional ones (``forward_last``) too. [] when it has them all."""
    out = []
    hook = getattr(model, "neuron_hook", None)
    if not (isinstance(hook, str) and hook):
        out.append("neuron_hook")
    n = getattr(model, "n_classes", None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        out.append("n_classes")
    for name in _METHODS:
        if not callable(getattr(model, name, None)):
            out.append(name)
    if optional:
        out += [name for name in sorted(OPTIONAL_MEMBERS) if not callable(getattr(model, name, None))]
    return out


def check_model(model: Any) -> None:
    """Raise a :class:`~mechgrok.errors.MechgrokError`, one line naming every missing member
    and what it is for, unless ``model`` offers the whole :class:`GrokModel` protocol
    (``neuron_hook`` a non-empty string, ``n_classes`` an integer ≥ 2, the methods callable)."""
    missing = missing_members(model)
    if not missing:
        return
    what = "; ".join(f"{name} ({MEMBERS[name]})" for name in missing)
    raise MechgrokError(f"{type(model).__name__} is not a GrokModel (what mechgrok's probes need "
                        f"of a model); missing or wrong: {what}; see mechgrok.models.GrokModel "
                        f"and docs/hooked-models.md")

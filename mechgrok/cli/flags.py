"""The config's settings as command-line flags, derived from the config's own fields: every field
of :class:`~mechgrok.config.TaskConfig`, the model configs (of every kind in
:data:`~mechgrok.config.MODEL_KINDS`) and :class:`~mechgrok.config.TrainConfig` is a flag
``--field-name`` (``--task`` for ``task.name``, ``--model`` for ``model.kind``), typed by the
field's type hint: numbers, a choice for a ``Literal``, ``--x/--no-x`` for a boolean, several
values for a list, ``none`` where the field may be none. ``train``, ``run`` and ``sweep`` take the
same flags from this one definition, plus ``--preset`` and ``--set section.field=value``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from mechgrok.config import MODEL_KINDS, PRESETS, TaskConfig, TrainConfig
from mechgrok.config.fields import field_types
from mechgrok.errors import MechgrokError

__all__ = [
    "ConfigFlag",
    "add_config_flags",
    "add_settings_flags",
    "config_flags",
    "given_config_keys",
    "overrides",
    "parse_value",
]

#: flags spelled otherwise than their field (``--name`` is the run's name, ``--kind`` says little)
_RENAMED = {"task.name": "task", "model.kind": "model"}
#: the training settings that get their own group in ``--help``
_STABILITY = {"train.loss", "train.orthograd", "train.grokfast", "train.grokfast_alpha",
              "train.grokfast_lamb", "train.grokfast_window"}
#: help (and metavar) of the flags that need more than their field's name
_HELP: dict[str, tuple[str, str | None]] = {
    "task.name": ("task name (see `mechgrok tasks`)", None),
    "task.p": ("modulus", None),
    "task.degree": ("n of S_n for the symmetric tasks s5, s5conj, s5aba: 3 to 6 (default 5)",
                    "N"),
    "task.frac_train": ("fraction of pairs in the train split", None),
    "task.data_seed": ("seed of the split", None),
    "model.kind": ("model kind", None),
    "model.init": ("MLP initialisation: normal (N(0, 1/fan_in), biases 0) or torch (PyTorch's "
                   "nn.Linear default, U(±1/√fan_in))", None),
    "train.fixed_weight_norm": ("rescale all parameters to a fixed total L2 norm after every "
                                "step (Omnigrok)", None),
    "train.weight_norm_target": ("that norm (default: the norm at epoch 0)", "NORM"),
    "train.batch_size": ("minibatch size (default: full batch)", None),
    "train.seed": ("model initialisation seed", None),
    "train.freeze_biases": ("zero and freeze every bias", None),
    "train.eval_every": ("evaluate every N epochs", "N"),
    "train.checkpoint_every": ("checkpoint every N epochs", "N"),
    "train.stop_after_grok": ("stop once test accuracy has been ≥ 99 %% at K evaluations in a "
                              "row", "K"),
    "train.threads": ("torch threads (default: torch's own choice)", None),
    "train.loss": ("training loss (default cross_entropy)", None),
    "train.orthograd": ("⊥Grad: remove the gradient's component along the weights, per tensor, "
                        "before the optimiser's own step", None),
    "train.grokfast": ("Grokfast gradient filter: amplify the slow gradient component", None),
    "train.grokfast_alpha": ("EMA momentum α in (0, 1) (default 0.98)", "A"),
    "train.grokfast_lamb": ("amplification λ (default 2 for ema, 5 for ma)", "L"),
    "train.grokfast_window": ("MA window in steps (default 100)", "W"),
}
_GROUPS = {"task": "task", "model": f"model ({', '.join(MODEL_KINDS)})", "train": "training",
           "stability": "numerical stability (Prieto et al.; Grokfast, Lee et al.)"}


@dataclass(frozen=True)
class ConfigFlag:
    """One config field as a flag: ``--lr`` sets ``train.lr``."""

    key: str  # section.field; also the flag's dest, so flags and command options never clash
    flag: str
    group: str  # a key of _GROUPS
    kwargs: dict[str, Any]


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert``, or the text ``none`` (the config reads it as None) for an optional field."""
    def parse(text: str) -> Any:
        return text if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = f"{convert.__name__} (or none)"  # argparse's "invalid int (or none) value"
    return parse


def _kwargs(hint: Any) -> dict[str, Any]:
    """argparse settings for a field of type ``hint``."""
    args = get_args(hint)
    optional = type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
        args = get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(hint) is Literal:
        return {"choices": [*args, *(["none"] if optional else [])]}
    if get_origin(hint) is tuple:
        return {"type": args[0], "nargs": "+" if args[-1] is Ellipsis else len(args)}
    convert = hint if hint in (int, float) else str
    return {"type": _or_none(convert) if optional else convert}


def _fields() -> Iterator[tuple[str, Any]]:
    """Every config field as (section.field, type hint), the model kinds' fields merged."""
    seen: set[str] = set()
    for section, classes in (("task", [TaskConfig]), ("model", list(MODEL_KINDS.values())),
                             ("train", [TrainConfig])):
        for cls in classes:
            hints = field_types(cls)
            for name in cls.field_names():
                key = f"{section}.{name}"
                if key not in seen:
                    seen.add(key)
                    yield key, hints[name]


@functools.cache
def config_flags() -> tuple[ConfigFlag, ...]:
    """The flags of every config field, in the config's own order."""
    out = []
    for key, hint in _fields():
        section, _, name = key.partition(".")
        flag_name = _RENAMED.get(key, name)
        kw = _kwargs(hint)
        if key == "model.kind":  # every kind, not only the first class's Literal
            kw = {"choices": list(MODEL_KINDS)}
        help_, metavar = _HELP.get(key, (f"sets {key}", None))
        kw.update(dest=key, default=argparse.SUPPRESS, help=help_)
        if metavar or ("choices" not in kw and "action" not in kw):
            kw["metavar"] = metavar or flag_name.upper()
        group = "stability" if key in _STABILITY else section
        out.append(ConfigFlag(key, "--" + flag_name.replace("_", "-"), group, kw))
    return tuple(out)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every config field, in one help group per section."""
    groups = {name: parser.add_argument_group(title) for name, title in _GROUPS.items()}
    for f in config_flags():
        groups[f.group].add_argument(f.flag, **f.kwargs)


def add_settings_flags(parser: argparse.ArgumentParser, where: str) -> None:
    """``--preset``, ``--set`` and every config field's flag; ``where``: what they layer over."""
    parser.add_argument("--preset", help=f"a named preset: {', '.join(PRESETS)} ({where}; see "
                                         f"`mechgrok presets`)")
    parser.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                        help="any config field, e.g. --set model.d_mlp=256 --set "
                             "train.betas=[0.9,0.99]")
    add_config_flags(parser)


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def given_config_keys(args: argparse.Namespace) -> list[str]:
    """The config fields given as flags on this command line."""
    return [f.key for f in config_flags() if hasattr(args, f.key)]


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``{"section.field": value}`` from the config flags, then ``--set`` (which wins)."""
    out: dict[str, Any] = {k: getattr(args, k) for k in given_config_keys(args)}
    for item in getattr(args, "set", None) or []:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise MechgrokError(f"--set {item!r} must look like section.field=value "
                                f"(e.g. --set train.lr=3e-4)")
        out[key.strip()] = parse_value(value.strip())
    return out

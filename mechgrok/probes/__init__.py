"""Probes: progress measures computed on every checkpoint. See :mod:`mechgrok.probes.base` for
the API and ``mechgrok probes`` for the list.

The registry holds built-in probes and those installed under the ``mechgrok.probes``
entry-point group (discovered lazily, on first use). A duplicate name is an error; an installed
probe never replaces a built-in (it is reported by ``mechgrok probes`` instead).
"""

from __future__ import annotations

import importlib
from typing import Any

from mechgrok.probes.base import (
    AllPairs,
    CheckpointContext,
    NotApplicable,
    Probe,
    ProbeError,
    RunContext,
    as_probe,
    probe,
)

__all__ = [
    "AllPairs",
    "CheckpointContext",
    "NotApplicable",
    "Probe",
    "ProbeError",
    "RunContext",
    "get_probe",
    "load_probe",
    "probe",
    "register",
    "registry",
    "registry_problems",
]

ENTRY_POINT_GROUP = "mechgrok.probes"
_REGISTRY: dict[str, Probe] = {}
_PROBLEMS: list[str] = []
_LOADED = False


def register(p: Any, where: str = "register()") -> Probe:
    """Add a probe (instance, subclass or function) to the registry; duplicates are refused."""
    pr = as_probe(p, where)
    if pr.name in _REGISTRY:
        raise ProbeError(f"a probe named {pr.name!r} is already registered "
                         f"({_REGISTRY[pr.name]!r}); choose another name")
    _REGISTRY[pr.name] = pr
    return pr


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from mechgrok.probes import builtin

    for p in builtin.BUILTIN_PROBES:
        p.builtin = True
        register(p, "mechgrok.probes.builtin")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            pr = as_probe(obj, f"entry point {ep.name} = {ep.value}")
            if pr.name in _REGISTRY:
                _PROBLEMS.append(f"installed probe {ep.value} is named {pr.name!r}, which is "
                                 f"taken by {_REGISTRY[pr.name]!r}; it was not registered")
                continue
            _REGISTRY[pr.name] = pr
        except Exception as e:  # a broken third-party package must not break mechgrok
            _PROBLEMS.append(f"installed probe {ep.name} = {ep.value} failed to load: "
                             f"{type(e).__name__}: {e}")


def registry() -> dict[str, Probe]:
    """Every registered probe by name: built-ins first, then installed ones."""
    _load()
    return dict(_REGISTRY)


def registry_problems() -> list[str]:
    _load()
    return list(_PROBLEMS)


def load_probe(spec: str) -> Probe:
    """``module:Name`` (a user's probe, imported now) or a registered probe's name."""
    if ":" not in spec:
        return get_probe(spec)
    module, _, attr = spec.partition(":")
    import os
    import sys

    # `mechgrok analyze RUN --probe myprobes:MyProbe` finds myprobes.py in the current folder
    # with no install and no PYTHONPATH (searched after everything else, so it never shadows
    # an installed module)
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        raise ProbeError(f"cannot import {module!r} for probe {spec!r}: {type(e).__name__}: {e} "
                         f"(is it on PYTHONPATH?)") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ProbeError(f"module {module!r} has no {attr!r} (probe {spec!r})")
        obj = getattr(obj, part)
    pr = as_probe(obj, spec)
    builtin = registry().get(pr.name)
    if builtin is not None and builtin.builtin:
        raise ProbeError(f"probe {spec!r} is named {pr.name!r}, like a built-in probe; "
                         f"give it another name")
    return pr


def get_probe(name: str) -> Probe:
    reg = registry()
    if name not in reg:
        raise ProbeError(f"unknown probe {name!r}; `mechgrok probes` lists them, and "
                         f"`--probe module:Name` runs your own")
    return reg[name]

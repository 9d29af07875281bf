"""Mapping files for ``mechgrok import --format state-dicts``: any loop's parameter names to
mechgrok's (``docs/import.md`` has a worked example).

A mapping file (TOML or JSON) holds ``[params]`` (source name = mechgrok name, or ``{to = NAME,
transpose = true}``), optionally ``ignore`` (source names to leave out), ``state_key`` (the entry
of each file holding the state dict), and ``[task]`` and ``[model]`` (mechgrok config sections).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechgrok.errors import SourceError
from mechgrok.interop.formats import read_table_file

__all__ = ["apply_mapping", "read_mapping"]

_ALLOWED = frozenset({"params", "ignore", "state_key", "task", "model"})


def _params(params: Any, path: Path) -> dict[str, tuple[str, bool]]:
    """``[params]`` as source name → (mechgrok name, transpose), each target named once."""
    if not isinstance(params, dict) or not params:
        raise SourceError(f"mapping file {path} needs a [params] table: your parameter name = "
                          f"mechgrok's (or {{to = NAME, transpose = true}})")
    norm: dict[str, tuple[str, bool]] = {}
    for src, dst in params.items():
        if isinstance(dst, str):
            norm[src] = (dst, False)
        elif isinstance(dst, dict) and isinstance(dst.get("to"), str) and set(dst) <= {
                "to", "transpose"} and isinstance(dst.get("transpose", False), bool):
            norm[src] = (dst["to"], bool(dst.get("transpose", False)))
        else:
            raise SourceError(f"mapping file {path}: params.{src} must be a mechgrok parameter "
                              f"name or {{to = NAME, transpose = true}}")
    targets = [t for t, _ in norm.values()]
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise SourceError(f"mapping file {path}: {dup[0]} is the target of more than one "
                          f"parameter")
    return norm


def read_mapping(path: Path) -> dict[str, Any]:
    """A mapping file (module docstring), checked: ``{"params": {source: (target, transpose)},
    "ignore": set, "state_key", "task", "model", "path"}``."""
    m = read_table_file(path, "mapping file")
    unknown = sorted(set(m) - _ALLOWED)
    if unknown:
        raise SourceError(f"mapping file {path}: unknown entr{'ies' if len(unknown) > 1 else 'y'} "
                          f"{', '.join(unknown)}; allowed: {', '.join(sorted(_ALLOWED))}")
    norm = _params(m.get("params"), path)
    ignore = m.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
        raise SourceError(f"mapping file {path}: ignore must be a list of parameter names")
    key = m.get("state_key")
    if key is not None and not isinstance(key, str):
        raise SourceError(f"mapping file {path}: state_key must be a string")
    for section in ("task", "model"):
        if section in m and not isinstance(m[section], dict):
            raise SourceError(f"mapping file {path}: [{section}] must be a table")
    return {"params": norm, "ignore": set(ignore), "state_key": key, "task": m.get("task"),
            "model": m.get("model"), "path": str(path)}


def apply_mapping(state: dict[str, Any], mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """``state`` in mechgrok's parameter names, by a mapping from :func:`read_mapping`. Every
    source name must be mapped or ignored, and every mapped name present."""
    params: dict[str, tuple[str, bool]] = mapping["params"]
    missing = sorted(set(params) - set(state))
    if missing:
        have = ", ".join(sorted(state)[:6])
        raise SourceError(f"{where}: the mapping names {missing[0]}, which is not in it (it has "
                          f"{have}{' …' if len(state) > 6 else ''})")
    unmapped = sorted(set(state) - set(params) - mapping["ignore"])
    if unmapped:
        raise SourceError(f"{where} has {unmapped[0]}, which the mapping neither maps nor "
                          f"ignores; add it to [params] or to ignore")
    out = {}
    for src, (dst, transpose) in params.items():
        t = state[src]
        if transpose:
            if t.ndim != 2:
                raise SourceError(f"{where}: {src} is {t.ndim}-D; only a 2-D tensor can be "
                                  f"transposed")
            t = t.T.contiguous()
        out[dst] = t
    return out

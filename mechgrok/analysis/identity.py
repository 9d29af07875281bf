"""Which code a probe is (:func:`probe_identity`), stored with every record it computes.

``mechgrok:<name>/<version>`` for a built-in (its ``version`` attribute, 1 unless set: bump it
when a built-in's numbers change), ``<module>:<qualname>#<hash>`` for any other probe, the hash
covering its source (its class's, or its function's and its ``applies``'s), the simple values of
its module-level names and closure it reads, its ``needs`` and its instance's simple attributes.
A different probe registered under the same name is therefore computed again, not served the
other's values.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import marshal
from typing import Any

from mechgrok.probes import Probe
from mechgrok.probes.base import FunctionProbe

__all__ = ["SIMPLE_TYPES", "probe_identity", "record_identity"]

#: plain values, whose ``repr`` is stable from one process to the next
SIMPLE_TYPES = (int, float, str, bool, bytes, type(None))
_SKIP_ATTRS = frozenset({"description", "builtin", "fn", "_applies", "__wrapped__", "__doc__",
                         "__name__", "__qualname__", "__module__", "__dict__", "__annotations__",
                         "__type_params__"})


def _simple(v: Any, depth: int = 0) -> str | None:
    """A stable text for plain data (numbers, strings, and tuples, lists, sets and dicts of
    them), None for anything else."""
    if isinstance(v, SIMPLE_TYPES):
        return repr(v)
    if depth >= 4 or not isinstance(v, (tuple, list, set, frozenset, dict)) or len(v) > 10_000:
        return None
    if isinstance(v, dict):
        pairs = [(_simple(k, depth + 1), _simple(x, depth + 1)) for k, x in v.items()]
        if any(a is None or b is None for a, b in pairs):
            return None
        return "{" + ",".join(sorted(f"{a}:{b}" for a, b in pairs)) + "}"
    items = [_simple(x, depth + 1) for x in v]
    if any(x is None for x in items):
        return None
    if isinstance(v, (set, frozenset)):
        items.sort()
    return f"{type(v).__name__}({','.join(items)})"  # type: ignore[arg-type]


def _code_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if inspect.iscode(c):
            names |= _code_names(c)
    return names


def _fingerprint(obj: Any, h: Any, seen: set[int], module: str | None) -> None:
    """Feed ``h`` with what defines ``obj`` (a function or class): its source, and the simple
    values and same-module functions and classes it refers to."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                _fingerprint(f, h, seen, module)
        return
    if id(obj) in seen or not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return
    seen.add(id(obj))
    try:
        src: bytes = inspect.getsource(obj).encode()
    except Exception:  # no source (a REPL, exec): its code objects stand in for it
        src = b""
    h.update(f"<{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}>".encode())
    if inspect.isfunction(obj):
        code = obj.__code__
        h.update(src or marshal.dumps(code))
        refs: list[tuple[str, Any]] = []
        for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            with contextlib.suppress(ValueError):  # an empty cell
                refs.append((name, cell.cell_contents))
        g = getattr(obj, "__globals__", {})
        refs += [(n, g[n]) for n in sorted(_code_names(code)) if n in g]
        home = module or obj.__module__
        for name, v in refs:
            s = _simple(v)
            if s is not None:
                h.update(f"{name}={s};".encode())
            elif ((inspect.isfunction(v) or inspect.isclass(v))
                  and getattr(v, "__module__", None) == home):
                _fingerprint(v, h, seen, home)
    else:
        h.update(src)
        for name, v in sorted(vars(obj).items()):
            s = _simple(v) if not name.startswith("__") else None
            if s is not None:
                h.update(f"{name}={s};".encode())
                continue
            f = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
            if isinstance(f, property) or getattr(f, "__module__", None) == obj.__module__:
                _fingerprint(v, h, seen, obj.__module__)


def probe_identity(p: Probe) -> str:
    """Which code a probe is, for the records it writes: ``mechgrok:<name>/<version>`` for a
    built-in, ``<module>:<qualname>#<hash of its code and settings>`` for any other."""
    from mechgrok.probes.builtin import BUILTIN_PROBES

    if any(p is b for b in BUILTIN_PROBES):
        return f"mechgrok:{p.name}/{getattr(p, 'version', 1)}"
    h = hashlib.sha256()
    h.update(f"name={p.name!r};needs={sorted(map(str, p.needs))!r};".encode())
    seen: set[int] = set()
    if isinstance(p, FunctionProbe):
        target: Any = p.fn
        _fingerprint(p.fn, h, seen, None)
        if p.applies_fn is not None:
            _fingerprint(p.applies_fn, h, seen, None)
    else:
        target = type(p)
        for cls in type(p).__mro__:
            if cls not in (Probe, FunctionProbe, object):
                _fingerprint(cls, h, seen, None)
    for k, v in sorted(vars(p).items()):
        s = _simple(v)
        if k not in _SKIP_ATTRS and s is not None:
            h.update(f"{k}={s};".encode())
    where = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
    return f"{where}#{h.hexdigest()[:16]}"


def record_identity(p: Probe) -> str:
    """:func:`probe_identity`, or, for an object ``inspect`` cannot read, its class and name."""
    try:
        return probe_identity(p)
    except Exception:  # an object inspect cannot read: its class and name, at least
        return f"{type(p).__module__}:{type(p).__qualname__}#name={p.name}"

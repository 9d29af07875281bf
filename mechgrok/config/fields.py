"""What every config section shares: the limits, the value checks that make one-line messages,
and :class:`Section`, the mixin that gives a frozen dataclass its dict round trip (unknown keys
refused, TOML/JSON values coerced to the field's type and type-checked, naming the field)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from mechgrok.errors import ConfigError

__all__ = [
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_THREADS",
    "SECTIONS",
    "Dtype",
    "Section",
    "check",
    "field_types",
    "is_int",
    "is_num",
    "short",
    "type_name",
]

#: seeds (``train.seed``, ``task.data_seed``) are 0 … MAX_SEED: an int64 that torch's
#: ``Generator.manual_seed`` takes, also after the loop adds 1_000_003 for its shuffling generator,
#: and that TOML can write
MAX_SEED = 2**63 - 1
#: ``train.threads`` above this is refused (torch accepts more, then OpenMP crashes: 100000 segfaults)
MAX_THREADS = 1024
#: sizes and counts (widths, layers, epochs, intervals, batch size) stay below int32 overflow;
#: whether the run fits in memory is :mod:`mechgrok.resources`' question
MAX_SIZE = 2**31 - 1
SECTIONS = ("task", "model", "train")

Dtype = Literal["float32", "float64"]


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def short(v: Any, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters (a message stays one readable line)."""
    r = repr(list(v) if isinstance(v, tuple) else v)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def type_name(v: Any) -> str:
    return {list: "a list", dict: "a table", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "none"}.get(type(v), type(v).__name__)


def _check_type(hint: Any, value: Any, name: str, shown: Any) -> None:
    """Refuse a value of the wrong type for a field, naming the field (ranges come later).
    ``shown`` is the value as the user wrote it."""
    if not _fits(hint, value):
        raise ConfigError(f"{name} must be {_describe(hint)}, got {type_name(shown)}: "
                          f"{short(shown)}")


def _fits(hint: Any, value: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return isinstance(value, str)
    if hint is str:
        return isinstance(value, str)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], v) for v in value)
        if len(args) != len(value):
            return True  # a wrong length is the section's own check, with its own message
        return all(_fits(a, v) for a, v in zip(args, value))
    if type(None) in args:  # X | None
        return value is None or any(_fits(a, value) for a in args if a is not type(None))
    return True


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        inner = args[0] if args else Any
        return f"a list of {'integers' if inner is int else 'numbers'}"
    if type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or none"
    return {str: "a string", bool: "true or false", int: "an integer", float: "a number"}.get(
        hint, str(hint))


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """A config section's fields → their type hints, resolved (cached)."""
    if cls not in _FIELD_TYPES:
        _FIELD_TYPES[cls] = get_type_hints(cls)
    return _FIELD_TYPES[cls]


class Section:
    """Mixin: dict round trip with unknown-key rejection and type coercion from TOML/JSON."""

    section: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        if not isinstance(data, Mapping):
            raise ConfigError(f"[{cls.section}] must be a table of settings "
                              f"({cls.section}.field = value), got {type_name(data)}: "
                              f"{short(data)}")
        hints = field_types(cls)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(f'{cls.section}.{k}' for k in unknown)}; "
                f"allowed in [{cls.section}]: {', '.join(sorted(known))}"
            )
        kwargs = {k: _coerce(hints[k], v, f"{cls.section}.{k}") for k, v in data.items()}
        for k, v in kwargs.items():
            _check_type(hints[k], v, f"{cls.section}.{k}", data[k])
        return cls(**kwargs)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    def replace(self, **changes: Any):
        return self.from_dict({**self.to_dict(), **changes})


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """Make TOML/JSON/CLI values fit a field's type: lists → tuples, ints → floats, 'none' → None."""
    origin = get_origin(hint)
    args = get_args(hint)
    if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
        return None
    if origin is tuple or hint is tuple:
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else Any
            return tuple(_coerce(inner, v, name) for v in value)
        return value
    if hint is float and is_int(value):
        return float(value)
    if origin is not None and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        if value is not None and len(inner) == 1:
            return _coerce(inner[0], value, name)
    return value


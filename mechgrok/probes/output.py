"""A probe's results: :func:`check_output` splits the dict a probe returns into scalars (columns
of the measures table) and arrays (a sibling file), refusing anything else in one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mechgrok.probes.base import Probe

__all__ = ["ProbeOutput", "check_output"]


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

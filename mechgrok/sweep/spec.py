"""A sweep file parsed: :class:`SweepSpec` (the shared settings, the grid's axes, the seeds, the
probes) and :class:`SweepPoint` (one resolved run of the grid). Shape checks only; the values
are checked when the grid is expanded (:mod:`mechgrok.sweep.expand`)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.config import MAX_SEED, SECTIONS, SWEEP_CHECKPOINTS, RunConfig, load_config_file
from mechgrok.errors import ConfigError
from mechgrok.store.sweep import SWEEP_NAME_RE

__all__ = [
    "SweepPoint",
    "SweepSpec",
    "canon",
    "is_int",
    "load_sweep_spec",
    "short",
]


# --------------------------------------------------------------------------------------------
# Small helpers the sweep's modules share
# --------------------------------------------------------------------------------------------
def canon(v: Any) -> str:
    """A value's canonical JSON (grid values compared, grid points grouped by it)."""
    return json.dumps(v, sort_keys=True)


def short(v: Any, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters (a message stays one readable line)."""
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file: the shared settings, the grid's axes, the seeds, the probes."""

    name: str
    base: dict[str, Any]  # a run file's content: preset, task, model, train
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # (section.field, values), in file order
    #: None: every run keeps the base config's seed; a count N is kept as range(N) (never
    #: materialised before the run count is checked), a list as a tuple
    seeds: Sequence[int] | None
    probes: tuple[str, ...] | None = None  # None: every applicable probe
    #: "economy": runs take :data:`~mechgrok.config.SWEEP_CHECKPOINTS` for the checkpoint
    #: settings the file leaves unset; "full": the single-run defaults (and what sweep
    #: directories written before this setting existed keep, so their run ids do not change)
    checkpoints: str = "economy"
    #: ``{"section.field": value}`` from the command line (``mechgrok sweep``'s flags): every
    #: run takes them, over the file's settings (see :meth:`with_settings`)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return math.prod(len(v) for _, v in self.axes) * (len(self.seeds) if self.seeds else 1)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "base": self.base,
               "grid": {k: list(v) for k, v in self.axes},
               "seeds": list(self.seeds) if self.seeds is not None else None,
               "probes": list(self.probes) if self.probes is not None else None,
               "checkpoints": self.checkpoints}
        if self.settings:  # only when given: sweep.json stays as it was without them
            out["settings"] = dict(self.settings)
        return out

    def with_settings(self, preset: str | None, settings: Mapping[str, Any]) -> SweepSpec:
        """This sweep with the command line's settings over its file's: ``preset`` replaces the
        file's preset; ``settings`` (``{"section.field": value}``) apply to every run. A setting
        may not name one of the grid's axes, nor ``train.seed`` when the sweep has seeds."""
        axes = {k for k, _ in self.axes}
        for key in settings:
            if key in axes:
                raise ConfigError(f"{key} is an axis of the sweep's grid; set it there, not "
                                  f"on the command line")
            if key == "train.seed" and self.seeds is not None:
                raise ConfigError("train.seed is given by the sweep's seeds; set them there, "
                                  "not on the command line")
        base = {**self.base, "preset": preset} if preset is not None else self.base
        return dataclasses.replace(self, base=base, settings={**self.settings, **settings})

    def checkpoint_overrides(self) -> dict[str, Any]:
        """The economical checkpoint settings this sweep's runs take (those the file sets in
        its ``[train]`` table, its grid or the command line stay as they say)."""
        if self.checkpoints != "economy":
            return {}
        train = self.base.get("train") or {}
        axes = {k for k, _ in self.axes}
        return {k: v for k, v in SWEEP_CHECKPOINTS.items()
                if k not in axes and k not in self.settings and k.partition(".")[2] not in train}


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: its resolved config, its id and where it sits in the grid."""

    run_id: str
    config: RunConfig
    point: dict[str, Any]  # axis key -> value (the seed is not an axis)
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "point": self.point, "seed": self.seed}


# --------------------------------------------------------------------------------------------
# Parsing a sweep file
# --------------------------------------------------------------------------------------------
def _flatten_grid(grid: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in grid.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten_grid(v, key + "."))
        else:
            out.append((key, v))
    return out


def _parse_seeds(seeds_v: Any) -> Sequence[int]:
    """``sweep.seeds``: a count N (→ ``range(N)``, not a list: the run count is checked against
    ``--max-runs`` before any seed is materialised) or a list of distinct seeds."""
    if is_int(seeds_v):
        if seeds_v < 1:
            raise ConfigError(f"sweep.seeds must be a positive count or a list of seeds, "
                              f"got {seeds_v}")
        if seeds_v - 1 > MAX_SEED:
            raise ConfigError(f"sweep.seeds = {seeds_v} asks for seeds beyond 2**63 - 1, the "
                              f"largest seed; a count that large could never run")
        return range(seeds_v)
    if isinstance(seeds_v, float):
        raise ConfigError(f"sweep.seeds must be a whole number of seeds (an integer, e.g. 3) or "
                          f"a list of seeds, got the number {seeds_v!r}")
    if isinstance(seeds_v, list) and seeds_v:
        bad = [s for s in seeds_v if not (is_int(s) and 0 <= s <= MAX_SEED)]
        if bad:
            raise ConfigError(f"sweep.seeds lists {short(bad[0])}; every seed must be an integer "
                              f"from 0 to 2**63 - 1")
        if len(set(seeds_v)) != len(seeds_v):
            raise ConfigError(f"sweep.seeds lists a seed twice: {short(seeds_v, 120)}")
        return tuple(seeds_v)
    raise ConfigError(f"sweep.seeds must be a positive count or a non-empty list of "
                      f"non-negative integers, got {short(seeds_v)}")


_PROBE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_MODULE_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                          r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _parse_probe_specs(probes: Any) -> tuple[str, ...]:
    """``sweep.probes``: names (``loss``) or ``module:Name`` specs; shape only, nothing imported."""
    if not (isinstance(probes, list) and all(isinstance(p, str) for p in probes)):
        raise ConfigError(f"sweep.probes must be a list of probe names, got {short(probes)}")
    for p in probes:
        if not (_MODULE_SPEC.match(p) if ":" in p else _PROBE_NAME.match(p)):
            raise ConfigError(f"sweep.probes: {short(p)} is neither a probe name (see `mechgrok "
                              f"probes`) nor module:Name (a probe of your own)")
    dup = sorted({p for p in probes if probes.count(p) > 1})
    if dup:
        raise ConfigError(f"sweep.probes lists {dup[0]!r} twice")
    return tuple(probes)


def _parse_axes(grid: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """``[sweep.grid]``: ``section.field = [values]`` (or nested tables), in file order."""
    if not isinstance(grid, Mapping):
        raise ConfigError("[sweep.grid] must be a table of section.field = [values]")
    axes: list[tuple[str, tuple[Any, ...]]] = []
    for key, values in _flatten_grid(grid):
        section, _, fld = key.partition(".")
        if section not in SECTIONS or not fld or "." in fld:
            raise ConfigError(f"grid axis {key!r} must name a config field as section.field "
                              f"(section: task, model or train), e.g. train.weight_decay")
        if not isinstance(values, list):
            raise ConfigError(f"grid axis {key} must be a list of values, got {short(values)}")
        if not values:
            raise ConfigError(f"grid axis {key} has no values: the grid would be empty")
        seen: set[str] = set()
        for v in values:
            c = canon(v)
            if c in seen:
                raise ConfigError(f"grid axis {key} lists {v!r} twice")
            seen.add(c)
        axes.append((key, tuple(values)))
    return axes


def _check_sweep_table(sweep: Any, data: Mapping[str, Any], where: str) -> str:
    """The ``[sweep]`` table's keys and the file's tables; returns ``sweep.checkpoints``."""
    if sweep is None:
        raise ConfigError(f"{where} has no [sweep] table; a sweep file is a run file plus "
                          f"[sweep] (name, seeds, probes) and [sweep.grid] (the axes)")
    if not isinstance(sweep, Mapping):
        raise ConfigError(f"[sweep] in {where} must be a table")
    unknown = sorted(set(sweep) - {"name", "seeds", "grid", "probes", "checkpoints"})
    if unknown:
        raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join('sweep.' + k for k in unknown)}; allowed in [sweep]: "
                          f"name, seeds, probes, grid, checkpoints")
    checkpoints = sweep.get("checkpoints", "economy")
    if checkpoints not in ("economy", "full"):
        raise ConfigError(f"sweep.checkpoints must be \"economy\" (log-spaced checkpoints: "
                          f"the default) or \"full\" (every run as a single run), got "
                          f"{short(checkpoints)}")
    extra = sorted(set(data) - {"preset", *SECTIONS})
    if extra:
        raise ConfigError(f"unknown table{'s' if len(extra) > 1 else ''} {', '.join(extra)} in "
                          f"{where}; allowed: preset, task, model, train, sweep")
    return str(checkpoints)


def _read_source(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The file's content, the sweep's default name and how messages name the file."""
    if isinstance(source, Mapping):
        return dict(source), "sweep", "the sweep"
    path = Path(source)
    return load_config_file(path), path.stem, str(path)


def load_sweep_spec(source: str | Path | Mapping[str, Any], name: str | None = None) -> SweepSpec:
    """Parse and check a sweep file (TOML or JSON) or an equivalent dict.

    Checks the shape only (the ``[sweep]`` table, the grid's keys and lists, the seeds); the
    values are checked by :func:`~mechgrok.sweep.expand`, which resolves every run's config.
    """
    data, default_name, where = _read_source(source)
    sweep = data.pop("sweep", None)
    checkpoints = _check_sweep_table(sweep, data, where)
    sweep_name = name or sweep.get("name") or default_name
    if not isinstance(sweep_name, str) or not SWEEP_NAME_RE.match(sweep_name):
        raise ConfigError(f"sweep name {sweep_name!r} must be letters, digits, '.', '_' or '-' "
                          f"(it names the sweep's directory)")
    axes = _parse_axes(sweep.get("grid", {}))
    seeds_v = sweep.get("seeds")
    seeds: Sequence[int] | None = None
    seed_axis = [v for k, v in axes if k == "train.seed"]
    if seed_axis:  # a train.seed axis is the seeds: averaged over, batched by --vmap-seeds
        if seeds_v is not None:
            raise ConfigError("give the seeds once: either sweep.seeds or a train.seed grid axis")
        seeds_v = list(seed_axis[0])
        axes = [(k, v) for k, v in axes if k != "train.seed"]
    if seeds_v is not None:
        seeds = _parse_seeds(seeds_v)
    if not axes and seeds is None:
        raise ConfigError(f"the grid in {where} is empty: add axes under [sweep.grid] (e.g. "
                          f"\"train.weight_decay\" = [0.3, 1.0]) or sweep.seeds")
    probes = sweep.get("probes")
    if probes is not None:
        probes = _parse_probe_specs(probes)
    return SweepSpec(sweep_name, data, tuple(axes), seeds, probes, checkpoints)

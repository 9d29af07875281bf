"""A sweep's grid expanded into runs, and everything checked before any run starts: the
options, the run count, every point's config and memory estimate, then the probes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from mechgrok.config import resolve_config
from mechgrok.errors import ConfigError
from mechgrok.resources import available_memory, check_memory, estimate_memory
from mechgrok.sweep.spec import SweepPoint, SweepSpec, canon, is_int, short

__all__ = [
    "DEFAULT_MAX_RUNS",
    "DEFAULT_RETRIES",
    "MAX_RETRIES",
    "MAX_RUNS",
    "MAX_VMAP_SEEDS",
    "MAX_WORKERS",
    "check_probes",
    "expand",
    "validate_sweep",
]

DEFAULT_MAX_RUNS = 1000
DEFAULT_RETRIES = 2
#: ceilings of the sweep's options (a grid of more runs than MAX_RUNS is not resolved at all)
MAX_RUNS = 100_000
MAX_WORKERS = 4096
MAX_RETRIES = 100
MAX_VMAP_SEEDS = 1024


def check_probes(probes: Sequence[str] | None) -> None:
    """Resolve a sweep's probes: every name first (built-in names without loading any other
    code; other names from the installed probes), then the ``module:Name`` specs, which import
    user code, so this runs after everything else of the sweep is validated. Raises a one-line
    :class:`MechgrokError` for a probe that is not there."""
    if not probes:
        return
    from mechgrok.probes import get_probe
    from mechgrok.probes.builtin import BUILTIN_PROBES

    builtin = {p.name for p in BUILTIN_PROBES}
    for p in probes:
        if ":" not in p and p not in builtin:
            get_probe(p)  # an installed probe (entry points are loaded now), or an error
    from mechgrok.analysis import resolve_probes

    resolve_probes(list(probes))  # imports module:Name specs; duplicate probe names refused


def _check_max_runs(max_runs: Any) -> None:
    if not is_int(max_runs) or not 1 <= max_runs <= MAX_RUNS:
        raise ConfigError(f"--max-runs must be an integer from 1 to {MAX_RUNS:,}, "
                          f"got {short(max_runs)}")


def expand(spec: SweepSpec, max_runs: int = DEFAULT_MAX_RUNS, *,
           analyse: bool | None = True) -> list[SweepPoint]:
    """Every run of the grid, resolved and validated, in a fixed order (axes, then seeds).

    Raises :class:`ConfigError`, naming the grid point, for an unknown field or a bad value, and
    before resolving anything (or listing a single seed) when the grid makes more than
    ``max_runs`` runs. Each point's memory estimate is checked too, once per point (the seed
    does not change it): with the probes' all-pairs analysis when ``analyse`` is True, training
    only when False, not at all when None (:func:`mechgrok.resources.check_memory`).
    """
    _check_max_runs(max_runs)
    n = spec.n_runs
    if n > max_runs:
        raise ConfigError(f"the grid makes {n} runs, more than --max-runs {max_runs}; raise "
                          f"--max-runs or shrink the grid")
    available: int | None = None
    if analyse is not None:
        available = available_memory()[0]
    keys = [k for k, _ in spec.axes]
    points: list[SweepPoint] = []
    ids: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(v for _, v in spec.axes)):
        point = dict(zip(keys, combo))
        for pt in _resolve_point(spec, point, available, analyse):
            if pt.run_id in ids:
                raise ConfigError(f"grid points {ids[pt.run_id]} and {point} give the same run "
                                  f"(the config ignores the difference); drop one")
            ids[pt.run_id] = point
            points.append(pt)
    return points


def _resolve_point(spec: SweepSpec, point: dict[str, Any], available: int | None,
                   analyse: bool | None) -> list[SweepPoint]:
    """One grid point's runs (one per seed), each config resolved; the memory checked once."""
    where = ", ".join(f"{k}={short(v)}" for k, v in point.items()) or "the base settings"
    economy = spec.checkpoint_overrides()
    checked = False
    out = []
    for seed in spec.seeds or (None,):
        over = {**economy, **spec.settings, **point}
        if seed is not None:
            over["train.seed"] = seed
        try:
            cfg = resolve_config(None, spec.base, over)
            if available is not None and not checked:  # the seed does not change memory
                check_memory(cfg, available, analysis=bool(analyse))
                checked = True
        except ConfigError as e:
            raise ConfigError(f"sweep grid point {where}: {e}") from None
        out.append(SweepPoint(cfg.run_id(), cfg, point, cfg.train.seed))
    return out


def _check_options(*, backend: str, workers: int | None, address: str | None, retries: int,
                   vmap_seeds: int, max_runs: int) -> None:
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend {short(backend)}; choose local or ray")
    if workers is not None and not (is_int(workers) and 1 <= workers <= MAX_WORKERS):
        raise ConfigError(f"--workers must be an integer from 1 to {MAX_WORKERS}, "
                          f"got {short(workers)}")
    if not is_int(retries) or not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"--retries must be an integer from 0 to {MAX_RETRIES}, "
                          f"got {short(retries)}")
    if not is_int(vmap_seeds) or not 1 <= vmap_seeds <= MAX_VMAP_SEEDS:
        raise ConfigError(f"--vmap-seeds must be an integer from 1 to {MAX_VMAP_SEEDS}, "
                          f"got {short(vmap_seeds)}")
    if backend == "local" and address is not None:
        raise ConfigError("--address is for --backend ray")
    _check_max_runs(max_runs)


def validate_sweep(spec: SweepSpec, max_runs: int = DEFAULT_MAX_RUNS, *, backend: str = "local",
                   workers: int | None = None, address: str | None = None,
                   retries: int = DEFAULT_RETRIES, analyse: bool = True, vmap_seeds: int = 1,
                   ) -> list[SweepPoint]:
    """Everything :func:`~mechgrok.sweep.run_sweep` checks before it creates anything, but the
    Ray backend's reachability; what ``--dry-run`` runs. In order: the options, the run count,
    every point's config and memory estimate (× ``vmap_seeds`` seeds batched, × ``workers`` at
    once), then the probes: names first, ``module:Name`` specs (user code, imported) last."""
    _check_options(backend=backend, workers=workers, address=address, retries=retries,
                   vmap_seeds=vmap_seeds, max_runs=max_runs)
    points = expand(spec, max_runs, analyse=analyse)
    _check_concurrent_memory(points, backend, workers, analyse, vmap_seeds)
    check_probes(spec.probes)
    return points


def _check_concurrent_memory(points: Sequence[SweepPoint], backend: str, workers: int | None,
                             analyse: bool, vmap_seeds: int) -> None:
    """The memory of the largest run × the seeds batched in one job × the jobs running at once
    (local workers given with --workers; a Ray cluster's memory is not this machine's)."""
    per_point: dict[str, int] = {}
    for pt in points:
        per_point[canon(pt.point)] = per_point.get(canon(pt.point), 0) + 1
    K = min(vmap_seeds, max(per_point.values(), default=1))
    at_once = min(workers, len(points)) if (backend == "local" and workers) else 1
    if K == 1 and at_once == 1:
        return
    available = available_memory()[0]
    if available is None:
        return
    key = "peak" if analyse else "training"
    worst = max(points, key=lambda pt: estimate_memory(pt.config, n_models=K)[key])
    where = f"one job of {K} seeds batched (--vmap-seeds)" if K > 1 else "largest run"
    check_memory(worst.config, available, analysis=analyse, n_models=K, copies=at_once,
                 where=f"the sweep's {where}")

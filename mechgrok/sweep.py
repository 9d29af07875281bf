"""Sweeps: a grid of runs (any config fields × seeds), trained and analysed on worker processes
or on a Ray cluster, into one sweep directory (``mechgrok sweep sweep.toml``).

A sweep file is a run file (``preset``, ``[task]``, ``[model]``, ``[train]``: the settings every
run shares) plus a ``[sweep]`` table::

    preset = "quick"
    [train]
    epochs = 400

    [sweep]
    name = "wd-x-frac"          # default: the file's stem
    seeds = 3                   # train.seed values 0, 1, 2 (or a list: [0, 7, 9])
    probes = ["loss", "key_freqs"]   # default: every applicable probe
    checkpoints = "economy"     # default (log-spaced checkpoints); "full": as single runs
    [sweep.grid]
    "train.weight_decay" = [0.3, 1.0]
    "task.frac_train" = [0.3, 0.5]

Grid keys are ``section.field`` of any config field (a nested ``[sweep.grid.train]`` table works
too); each value is the list of values on that axis (a list-valued field takes a list of lists,
``"model.hidden" = [[128], [256, 256]]``). The grid expands to the cartesian product of its axes
times the seeds; every point is resolved and validated (preset ← file ← point) *before* any run
starts, and each run gets the id its config derives (:meth:`RunConfig.run_id`).

The sweep directory ``<out-dir>/<name>/`` holds ``sweep.json`` (the spec, the axes and every run:
its id, grid point, seed and last known state) and ``runs/<run-id>/``, ordinary run directories.
Relaunching the same command skips runs that are finished and analysed, resumes runs that were
interrupted (from their last checkpoint) and retries runs that failed, so a crash loses at most
the epochs since each run's last checkpoint.

Backends (:func:`run_sweep`):

* ``local``: ``workers`` processes on this machine (spawned, one torch thread each). A worker
  that dies (killed, out of memory) is replaced and its run resumed, up to ``retries`` times.
* ``ray``: one Ray task per run (``num_cpus=1``, ``max_retries=retries``) on an existing cluster
  (``address``: ``auto`` or ``host:port``) or, with no address, a Ray instance started here.
  Each task writes its own run directory, so on a multi-machine cluster ``out_dir`` must be a
  filesystem every node mounts at the same path (NFS, a shared volume), and mechgrok must be
  installed on every node. Ray is optional: ``pip install 'mechgrok[ray]'``.

With ``vmap_seeds = K > 1``, runs that differ only in their seed are trained K at a time in one
process as one batched model (:func:`mechgrok.training.vmap.train_seeds`); each seed still gets
its own ordinary run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.config import (
    MAX_SEED,
    SWEEP_CHECKPOINTS,
    RunConfig,
    load_config_file,
    resolve_config,
)
from mechgrok.errors import ConfigError, MechgrokError, RunDirError
from mechgrok.resources import available_cores
from mechgrok.store import FINAL_STATUSES

__all__ = [
    "DEFAULT_MAX_RUNS",
    "SWEEP_FILE",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "expand",
    "is_sweep_dir",
    "load_sweep",
    "load_sweep_spec",
    "run_sweep",
    "validate_sweep",
]

SWEEP_KIND = "mechgrok.sweep"
SWEEP_SCHEMA_VERSION = 1
SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
DEFAULT_MAX_RUNS = 1000
DEFAULT_RETRIES = 2
#: ceilings of the sweep's options (a grid of more runs than MAX_RUNS is not resolved at all)
MAX_RUNS = 100_000
MAX_WORKERS = 4096
MAX_RETRIES = 100
MAX_VMAP_SEEDS = 1024
_SECTIONS = ("task", "model", "train")


# --------------------------------------------------------------------------------------------
# The spec and its expansion
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

    @property
    def n_runs(self) -> int:
        return math.prod(len(v) for _, v in self.axes) * (len(self.seeds) if self.seeds else 1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base,
                "grid": {k: list(v) for k, v in self.axes},
                "seeds": list(self.seeds) if self.seeds is not None else None,
                "probes": list(self.probes) if self.probes is not None else None,
                "checkpoints": self.checkpoints}

    def checkpoint_overrides(self) -> dict[str, Any]:
        """The economical checkpoint settings this sweep's runs take (those the file sets in
        its ``[train]`` table or grid stay as the file says)."""
        if self.checkpoints != "economy":
            return {}
        train = self.base.get("train") or {}
        axes = {k for k, _ in self.axes}
        return {k: v for k, v in SWEEP_CHECKPOINTS.items()
                if k not in axes and k.partition(".")[2] not in train}


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: its resolved config, its id and where it sits in the grid."""

    run_id: str
    config: RunConfig
    point: dict[str, Any]  # axis key -> value (the seed is not an axis)
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "point": self.point, "seed": self.seed}


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _flatten_grid(grid: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in grid.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten_grid(v, key + "."))
        else:
            out.append((key, v))
    return out


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def _short(v: Any, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_seeds(seeds_v: Any) -> Sequence[int]:
    """``sweep.seeds``: a count N (→ ``range(N)``, not a list: the run count is checked against
    ``--max-runs`` before any seed is materialised) or a list of distinct seeds."""
    if _is_int(seeds_v):
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
        bad = [s for s in seeds_v if not (_is_int(s) and 0 <= s <= MAX_SEED)]
        if bad:
            raise ConfigError(f"sweep.seeds lists {_short(bad[0])}; every seed must be an integer "
                              f"from 0 to 2**63 - 1")
        if len(set(seeds_v)) != len(seeds_v):
            raise ConfigError(f"sweep.seeds lists a seed twice: {_short(seeds_v, 120)}")
        return tuple(seeds_v)
    raise ConfigError(f"sweep.seeds must be a positive count or a non-empty list of "
                      f"non-negative integers, got {_short(seeds_v)}")


_PROBE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_MODULE_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                          r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _parse_probe_specs(probes: Any) -> tuple[str, ...]:
    """``sweep.probes``: names (``loss``) or ``module:Name`` specs; shape only, nothing imported."""
    if not (isinstance(probes, list) and all(isinstance(p, str) for p in probes)):
        raise ConfigError(f"sweep.probes must be a list of probe names, got {_short(probes)}")
    for p in probes:
        if not (_MODULE_SPEC.match(p) if ":" in p else _PROBE_NAME.match(p)):
            raise ConfigError(f"sweep.probes: {_short(p)} is neither a probe name (see `mechgrok "
                              f"probes`) nor module:Name (a probe of your own)")
    dup = sorted({p for p in probes if probes.count(p) > 1})
    if dup:
        raise ConfigError(f"sweep.probes lists {dup[0]!r} twice")
    return tuple(probes)


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


def load_sweep_spec(source: str | Path | Mapping[str, Any], name: str | None = None) -> SweepSpec:
    """Parse and check a sweep file (TOML or JSON) or an equivalent dict.

    Checks the shape only (the ``[sweep]`` table, the grid's keys and lists, the seeds); the
    values are checked by :func:`expand`, which resolves every run's config.
    """
    if isinstance(source, Mapping):
        data = dict(source)
        default_name = "sweep"
        where = "the sweep"
    else:
        path = Path(source)
        data = load_config_file(path)
        default_name = path.stem
        where = str(path)
    sweep = data.pop("sweep", None)
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
                          f"{_short(checkpoints)}")
    extra = sorted(set(data) - {"preset", *_SECTIONS})
    if extra:
        raise ConfigError(f"unknown table{'s' if len(extra) > 1 else ''} {', '.join(extra)} in "
                          f"{where}; allowed: preset, task, model, train, sweep")

    sweep_name = name or sweep.get("name") or default_name
    if not isinstance(sweep_name, str) or not _NAME_RE.match(sweep_name):
        raise ConfigError(f"sweep name {sweep_name!r} must be letters, digits, '.', '_' or '-' "
                          f"(it names the sweep's directory)")

    grid = sweep.get("grid", {})
    if not isinstance(grid, Mapping):
        raise ConfigError("[sweep.grid] must be a table of section.field = [values]")
    axes: list[tuple[str, tuple[Any, ...]]] = []
    for key, values in _flatten_grid(grid):
        section, _, fld = key.partition(".")
        if section not in _SECTIONS or not fld or "." in fld:
            raise ConfigError(f"grid axis {key!r} must name a config field as section.field "
                              f"(section: task, model or train), e.g. train.weight_decay")
        if not isinstance(values, list):
            raise ConfigError(f"grid axis {key} must be a list of values, got {_short(values)}")
        if not values:
            raise ConfigError(f"grid axis {key} has no values: the grid would be empty")
        seen: set[str] = set()
        for v in values:
            c = _canon(v)
            if c in seen:
                raise ConfigError(f"grid axis {key} lists {v!r} twice")
            seen.add(c)
        axes.append((key, tuple(values)))

    seeds_v = sweep.get("seeds")
    seeds: tuple[int, ...] | None = None
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


def _check_max_runs(max_runs: Any) -> None:
    if not _is_int(max_runs) or not 1 <= max_runs <= MAX_RUNS:
        raise ConfigError(f"--max-runs must be an integer from 1 to {MAX_RUNS:,}, "
                          f"got {_short(max_runs)}")


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
        from mechgrok.resources import available_memory, check_memory

        available = available_memory()[0]
    keys = [k for k, _ in spec.axes]
    economy = spec.checkpoint_overrides()
    points: list[SweepPoint] = []
    ids: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(v for _, v in spec.axes)):
        point = dict(zip(keys, combo))
        where = ", ".join(f"{k}={_short(v)}" for k, v in point.items()) or "the base settings"
        checked = False
        for seed in spec.seeds or (None,):
            over = {**economy, **point}
            if seed is not None:
                over["train.seed"] = seed
            try:
                cfg = resolve_config(None, spec.base, over)
                if available is not None and not checked:  # the seed does not change memory
                    check_memory(cfg, available, analysis=bool(analyse))
                    checked = True
            except ConfigError as e:
                raise ConfigError(f"sweep grid point {where}: {e}") from None
            rid = cfg.run_id()
            if rid in ids:
                raise ConfigError(f"grid points {ids[rid]} and {point} give the same run "
                                  f"(the config ignores the difference); drop one")
            ids[rid] = point
            points.append(SweepPoint(rid, cfg, point, cfg.train.seed))
    return points


def _check_options(*, backend: str, workers: int | None, address: str | None, retries: int,
                   vmap_seeds: int, max_runs: int) -> None:
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend {_short(backend)}; choose local or ray")
    if workers is not None and not (_is_int(workers) and 1 <= workers <= MAX_WORKERS):
        raise ConfigError(f"--workers must be an integer from 1 to {MAX_WORKERS}, "
                          f"got {_short(workers)}")
    if not _is_int(retries) or not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"--retries must be an integer from 0 to {MAX_RETRIES}, "
                          f"got {_short(retries)}")
    if not _is_int(vmap_seeds) or not 1 <= vmap_seeds <= MAX_VMAP_SEEDS:
        raise ConfigError(f"--vmap-seeds must be an integer from 1 to {MAX_VMAP_SEEDS}, "
                          f"got {_short(vmap_seeds)}")
    if backend == "local" and address is not None:
        raise ConfigError("--address is for --backend ray")
    _check_max_runs(max_runs)


def validate_sweep(spec: SweepSpec, max_runs: int = DEFAULT_MAX_RUNS, *, backend: str = "local",
                   workers: int | None = None, address: str | None = None,
                   retries: int = DEFAULT_RETRIES, analyse: bool = True, vmap_seeds: int = 1,
                   ) -> list[SweepPoint]:
    """Everything :func:`run_sweep` checks before it creates anything, but the Ray backend's
    reachability; what ``--dry-run`` runs. In order: the options, the run count, every point's
    config and memory estimate (× ``vmap_seeds`` seeds batched, × ``workers`` at once), then the
    probes: names first, ``module:Name`` specs (user code, imported) last."""
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
    from mechgrok.resources import available_memory, check_memory, estimate_memory

    per_point: dict[str, int] = {}
    for pt in points:
        per_point[_canon(pt.point)] = per_point.get(_canon(pt.point), 0) + 1
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


# --------------------------------------------------------------------------------------------
# The sweep directory
# --------------------------------------------------------------------------------------------
def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep directory's ``sweep.json`` (with ``path`` and each run's ``path`` added)."""
    p = Path(path)
    f = p / SWEEP_FILE
    if not f.is_file():
        raise RunDirError(f"{p} is not a mechgrok sweep directory (no {SWEEP_FILE}); "
                          f"`mechgrok sweep FILE.toml` creates one")
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {f}: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != SWEEP_KIND:
        raise RunDirError(f"{f} is not a mechgrok sweep file")
    v = data.get("schema_version", 0)
    if not isinstance(v, int) or isinstance(v, bool) or v > SWEEP_SCHEMA_VERSION:
        raise RunDirError(f"{f} has schema version {v!r}, which this mechgrok does not read; "
                          f"upgrade mechgrok")
    from mechgrok.store import check_name

    def kind(v: Any) -> str:
        return {dict: "a JSON object", list: "a list", str: "a string", bool: "a boolean",
                type(None): "null"}.get(type(v), "a number")

    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RunDirError(f"{f}: name {name!r:.60} is not a folder name of letters, digits, "
                          f"'.', '_' or '-'")
    axes = data.get("axes") or []
    if not isinstance(axes, list):
        raise RunDirError(f"{f}: axes is {kind(axes)}, not a list")
    for i, a in enumerate(axes):
        if not isinstance(a, dict) or not isinstance(a.get("values"), list):
            raise RunDirError(f"{f}: axis {i} is not an object with a key and a list of values")
        key = a.get("key")
        sec, _, fld = key.partition(".") if isinstance(key, str) else ("", "", "")
        if sec not in _SECTIONS or not fld.isidentifier():
            raise RunDirError(f"{f}: axis {i} has key {key!r:.60}, not a config field "
                              f"section.field")
    seeds = data.get("seeds")
    if seeds is not None and not isinstance(seeds, list):
        raise RunDirError(f"{f}: seeds is {kind(seeds)}, not a list or null")
    runs = data.get("runs", [])
    if not isinstance(runs, list):
        raise RunDirError(f"{f}: runs is {kind(runs)}, not a list")
    data["path"] = p
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or not isinstance(r.get("run_id"), str):
            raise RunDirError(f"{f}: run {i} has no run_id")
        try:
            check_name(r["run_id"], "run id")
        except RunDirError as e:
            raise RunDirError(f"{f}: run {i}: {e}") from None
        where = f"{f}: run {i} ({r['run_id']})"
        for k, t in (("point", dict), ("state", str)):
            if k in r and not isinstance(r[k], t):
                raise RunDirError(f"{where} has {k} {kind(r[k])}, not {kind(t())}")
        seed = r.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise RunDirError(f"{where}: seed is {seed!r:.60}, not an integer")
        r["path"] = p / RUNS_DIR / r["run_id"]
    return data


def _write_sweep_file(sweep_dir: Path, spec: SweepSpec, points: Sequence[SweepPoint],
                      states: Mapping[str, dict[str, Any]]) -> None:
    from mechgrok.store import atomic_write_json

    runs = []
    for pt in points:
        r = pt.to_dict()
        r.update(states.get(pt.run_id, {"state": "pending"}))
        runs.append(r)
    atomic_write_json(sweep_dir / SWEEP_FILE, {
        "kind": SWEEP_KIND, "schema_version": SWEEP_SCHEMA_VERSION, "name": spec.name,
        "spec": spec.to_dict(), "axes": [{"key": k, "values": list(v)} for k, v in spec.axes],
        "seeds": list(spec.seeds) if spec.seeds is not None else None,
        "runs": runs,
    })


def _existing_run(path: Path, cfg: RunConfig):
    """The run already in ``path`` (None when there is none, or when it was killed before its
    first checkpoint); refuses one of another config."""
    from mechgrok.store import existing_run

    run = existing_run(path)
    if run is None:
        return None
    if run.config.to_dict() != cfg.to_dict():
        raise RunDirError(f"{path} holds a run with a different config than the sweep's; move "
                          f"it away or remove it, then relaunch")
    return run


def _run_is_done(path: Path, cfg: RunConfig, analyse: bool, probes: Sequence[str] | None) -> bool:
    """Whether a run directory already holds this run, trained to the end and analysed."""
    try:
        run = _existing_run(path, cfg)
    except MechgrokError:
        return False  # the worker reports what is wrong with it
    if run is None or run.status not in FINAL_STATUSES:
        return False
    if not analyse:
        return True
    # analysed: nothing missing, stale (the run trained further or replaced, a probe edited) or
    # failed, by the analysis's own bookkeeping (one definition, mechgrok.analysis.pending)
    from mechgrok.analysis import load_summary, pending

    try:
        final = run.checkpoints()[-1]
        return (load_summary(run).get("final_checkpoint")
                == {"epoch": final.epoch, "sha256": final.sha256}
                and pending(run, list(probes) if probes is not None else None) == 0)
    except MechgrokError:
        return False


# --------------------------------------------------------------------------------------------
# One job: train (or resume) one run, or K seeds batched, then analyse; runs in a worker
# --------------------------------------------------------------------------------------------
def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Train and analyse the runs of one job; a plain function of plain data (for pickling).

    ``job``: ``{"runs": [{"config": dict, "path": str}], "probes": [..] | None,
    "analyse": bool, "vmap": bool, "threads": int | None}``. Returns one result per run:
    ``{"run_id", "ok", "state", "error"?, "trained", "seconds", "final", "grok"}``. A user-level
    problem (:class:`MechgrokError`) is returned as a failed result, not raised: retrying would
    not help. Anything else (a crash) propagates, and the backend retries the job.
    """
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    cfgs = [RunConfig.from_dict(r["config"]) for r in job["runs"]]
    paths = [Path(r["path"]) for r in job["runs"]]
    probes = job.get("probes")
    analyse = job.get("analyse", True)
    t0 = time.perf_counter()
    out: dict[str, dict[str, Any]] = {}
    todo: list[int] = []
    for i, (cfg, path) in enumerate(zip(cfgs, paths)):
        try:
            trained = _train_or_resume_prepare(cfg, path)
        except MechgrokError as e:
            out[path.name] = _failed(path, e)
            continue
        if trained:
            todo.append(i)
        else:
            out[path.name] = {"trained": False}
    # training
    if todo:
        if job.get("vmap") and len(todo) > 1:
            from mechgrok.training.vmap import train_seeds

            base = cfgs[todo[0]]
            try:
                train_seeds(base, [cfgs[i].train.seed for i in todo], [paths[i] for i in todo],
                            progress=False)
                for i in todo:
                    out[paths[i].name] = {"trained": True}
            except MechgrokError as e:
                for i in todo:
                    out[paths[i].name] = _failed(paths[i], e)
        else:
            for i in todo:
                try:
                    _train_one(cfgs[i], paths[i])
                    out[paths[i].name] = {"trained": True}
                except MechgrokError as e:
                    out[paths[i].name] = _failed(paths[i], e)
    # analysis and results
    results = []
    for path in paths:
        r = out[path.name]
        if r.get("ok") is False:
            results.append(r)
            continue
        try:
            if analyse:
                _analyse(path, probes)
            results.append(_result(path, r["trained"], time.perf_counter() - t0))
        except MechgrokError as e:
            results.append(_failed(path, e))
    return results


def _failed(path: Path, e: BaseException) -> dict[str, Any]:
    return {"run_id": path.name, "ok": False, "state": "failed", "error": str(e)}


def _train_or_resume_prepare(cfg: RunConfig, path: Path) -> bool:
    """True when the run needs training (new or unfinished); checks an existing run's config."""
    run = _existing_run(path, cfg)
    return run is None or run.status not in FINAL_STATUSES


def _train_one(cfg: RunConfig, path: Path) -> None:
    from mechgrok.training import resume, train

    run = _existing_run(path, cfg)
    if run is None:
        train(cfg, path, progress=False)
    else:
        resume(path, progress=False)


def _analyse(path: Path, probes: Sequence[str] | None) -> None:
    from mechgrok.analysis import analyze

    res = analyze(path, list(probes) if probes is not None else None, progress=False)
    if res.errors:
        first = res.errors[0]
        raise MechgrokError(f"probe {first['probe']!r} failed on {len(res.errors)} checkpoint(s) "
                            f"(first: {first['error']})")


def _result(path: Path, trained: bool, seconds: float) -> dict[str, Any]:
    from mechgrok.probes.phases import grokking_epochs
    from mechgrok.store import Run

    run = Run(path)
    metrics = run.metrics()
    fin = metrics[-1] if metrics else {}
    return {"run_id": path.name, "ok": True, "state": "done", "status": run.status,
            "trained": trained, "seconds": round(seconds, 2),
            "final": {k: fin.get(k) for k in ("epoch", "train_acc", "test_acc", "train_loss",
                                             "test_loss")},
            "grok": grokking_epochs(metrics)}


def _worker_init() -> None:
    """Local workers: one torch thread each, and die with the sweep process (Linux)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    sweep_dir: Path
    runs: list[SweepPoint]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> dict[str, str]:
        return {k: r.get("error", "failed") for k, r in self.results.items() if not r.get("ok")}

    @property
    def trained(self) -> list[str]:
        return [k for k, r in self.results.items() if r.get("ok") and r.get("trained")]


def _run_local(jobs: list[dict[str, Any]], workers: int, retries: int,
               on_result: Callable[[dict[str, Any], list[dict[str, Any]]], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    queue = list(range(len(jobs)))
    attempts = [0] * len(jobs)
    pool: ProcessPoolExecutor | None = None
    inflight: dict[Any, int] = {}

    def fail(i: int, why: str) -> None:
        on_result(jobs[i], [{"run_id": Path(r["path"]).name, "ok": False, "state": "failed",
                             "error": why} for r in jobs[i]["runs"]])

    try:
        while queue or inflight:
            if pool is None:
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                           initializer=_worker_init)
            broken = False
            while queue and len(inflight) < workers:
                i = queue[0]
                try:
                    fut = pool.submit(run_job, jobs[i])
                except BrokenProcessPool:  # a worker died since the last wait
                    broken = True
                    break
                queue.pop(0)
                attempts[i] += 1
                inflight[fut] = i
            done = wait(list(inflight), return_when=FIRST_COMPLETED)[0] if inflight else set()
            for fut in done:
                i = inflight.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    broken = True
                    if attempts[i] <= retries:
                        queue.append(i)
                    else:
                        fail(i, f"its worker process died {attempts[i]} times")
                except Exception as e:  # a crash inside the job: retry, then report
                    if attempts[i] <= retries:
                        queue.append(i)
                    else:
                        fail(i, f"{type(e).__name__}: {e}")
                else:
                    on_result(jobs[i], results)
            if broken:
                # every job still in flight went down with the pool: resume them on a new one
                for fut, i in list(inflight.items()):
                    inflight.pop(fut)
                    if attempts[i] <= retries:
                        queue.append(i)
                    else:
                        fail(i, f"its worker process died {attempts[i]} times")
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _check_ray_address(address: str) -> None:
    """A host:port address must accept a connection before Ray is asked (Ray itself retries
    for a long time)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise MechgrokError(f"Ray address {address!r} must be 'auto' or host:port "
                            f"(e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        raise MechgrokError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); "
                            f"start one there with `ray start --head`, or drop --address to "
                            f"start a local Ray instance") from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MechgrokError("the Ray backend needs Ray, which is not installed: "
                            "pip install 'mechgrok[ray]'") from None
    return ray


def connect_ray(address: str | None, workers: int | None) -> Any:
    """Connect to (or start) Ray; one clear error when the address is unreachable."""
    ray = _import_ray()
    if address not in (None, "auto"):
        _check_ray_address(address)
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "logging_level": "ERROR", "configure_logging": True}
    try:
        if address is None:
            # "local": always a new instance, even where `ray start` recorded a cluster or
            # RAY_ADDRESS is set (plain ray.init() would join it, and refuse num_cpus)
            ray.init(address="local", num_cpus=workers or available_cores(),
                     object_store_memory=100 * 1024 * 1024, **kw)
        else:
            ray.init(address=address, **kw)
    except ConnectionError as e:
        why = str(e).split(". Please")[0].rstrip(".")
        raise MechgrokError(f"cannot connect to a Ray cluster at {address}: {why}; start one with "
                            f"`ray start --head`, or drop --address to start a local "
                            f"instance") from None
    return ray


def _run_ray(jobs: list[dict[str, Any]], address: str | None, workers: int | None,
             retries: int, on_result: Callable[[dict[str, Any], list[dict[str, Any]]], None],
             ) -> None:
    ray = connect_ray(address, workers)
    started_here = address is None  # a local instance started for this sweep is stopped after it
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries,
                            retry_exceptions=[RuntimeError, OSError])(run_job)
        refs = {remote.remote(job): job for job in jobs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                job = refs.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # the task failed after its retries (or its node died)
                    why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    res = [{"run_id": Path(r["path"]).name, "ok": False, "state": "failed",
                            "error": f"Ray task failed after {retries} retries: {why}"}
                           for r in job["runs"]]
                on_result(job, res)
    finally:
        if started_here:
            ray.shutdown()


def settle_checkpoints(spec: SweepSpec, out_dir: str | Path) -> SweepSpec:
    """``spec``, with ``checkpoints = "full"`` when its sweep directory exists and was written
    before ``[sweep] checkpoints`` existed: its runs keep the ids (and checkpoints) they have."""
    old = Path(out_dir) / spec.name
    if spec.checkpoints == "economy" and is_sweep_dir(old):
        with contextlib.suppress(MechgrokError):
            old_spec = load_sweep(old).get("spec")
            if isinstance(old_spec, dict) and "checkpoints" not in old_spec:
                return dataclasses.replace(spec, checkpoints="full")
    return spec


def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path = "checkpoints", *,
              backend: str = "local", workers: int | None = None, address: str | None = None,
              max_runs: int = DEFAULT_MAX_RUNS, retries: int = DEFAULT_RETRIES,
              analyse: bool = True, vmap_seeds: int = 1,
              on_result: Callable[[dict[str, Any], int, int], None] | None = None,
              ) -> SweepResult:
    """Expand, then train and analyse every run not yet done; see the module docstring.

    ``on_result(result, n_done, n_total)`` is called in this process as each run ends.
    Everything is checked before any run starts (:func:`validate_sweep`): the options, the grid,
    ``max_runs``, every run's config and memory estimate, the probes, the backend (Ray
    installed, its address reachable).
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_sweep_spec(spec)
    spec = settle_checkpoints(spec, out_dir)
    # the options, the grid, every config and its memory, then the probes (user code last)
    points = validate_sweep(spec, max_runs, backend=backend, workers=workers, address=address,
                            retries=retries, analyse=analyse, vmap_seeds=vmap_seeds)
    if backend == "ray":  # before any run starts: Ray installed, address reachable
        _import_ray()
        if address not in (None, "auto"):
            _check_ray_address(address)

    sweep_dir = Path(out_dir) / spec.name
    runs_dir = sweep_dir / RUNS_DIR
    if sweep_dir.exists() and not is_sweep_dir(sweep_dir) and any(sweep_dir.iterdir()):
        raise RunDirError(f"{sweep_dir} exists and is not a sweep directory; choose another "
                          f"sweep name or --out-dir")
    states: dict[str, dict[str, Any]] = {}
    if is_sweep_dir(sweep_dir):
        with contextlib.suppress(MechgrokError):
            for r in load_sweep(sweep_dir).get("runs", []):
                states[r["run_id"]] = {k: v for k, v in r.items()
                                       if k not in ("run_id", "point", "seed", "path")}
    res = SweepResult(sweep_dir, points)
    probes = list(spec.probes) if spec.probes is not None else None
    todo: list[SweepPoint] = []
    for pt in points:
        if _run_is_done(runs_dir / pt.run_id, pt.config, analyse, probes):
            res.skipped.append(pt.run_id)
            if states.get(pt.run_id, {}).get("state") != "done":
                states[pt.run_id] = {**_result(runs_dir / pt.run_id, False, 0.0), "ok": True}
                states[pt.run_id].pop("run_id", None)
        else:
            todo.append(pt)
            states[pt.run_id] = {"state": "pending"}
    if backend == "ray" and todo:  # connect (or start Ray) before any run starts
        connect_ray(address, workers)
    runs_dir.mkdir(parents=True, exist_ok=True)
    _write_sweep_file(sweep_dir, spec, points, states)

    jobs = _jobs(todo, runs_dir, probes, analyse, vmap_seeds)
    total = len(todo)
    count = 0

    def collect(job: dict[str, Any], results: list[dict[str, Any]]) -> None:
        nonlocal count
        for r in results:
            count += 1
            res.results[r["run_id"]] = r
            states[r["run_id"]] = {k: v for k, v in r.items() if k != "run_id"}
            if on_result is not None:
                on_result(r, count, total)
        _write_sweep_file(sweep_dir, spec, points, states)

    if jobs:
        n_workers = workers or min(len(jobs), available_cores())
        try:
            if backend == "local":
                _run_local(jobs, n_workers, retries, collect)
            else:
                _run_ray(jobs, address, workers, retries, collect)
        except KeyboardInterrupt:
            from mechgrok.training.loop import TrainingInterrupted

            raise TrainingInterrupted(
                f"sweep {spec.name} interrupted; finished runs and every checkpoint are kept: "
                f"relaunch the same command to continue") from None
    res.seconds = time.perf_counter() - t0
    return res


def _jobs(todo: Sequence[SweepPoint], runs_dir: Path, probes: list[str] | None, analyse: bool,
          vmap_seeds: int) -> list[dict[str, Any]]:
    """One job per run, or, with ``vmap_seeds`` K > 1, up to K runs that differ only by seed."""
    groups: dict[str, list[SweepPoint]] = {}
    for pt in todo:
        key = _canon(pt.point) if vmap_seeds > 1 else pt.run_id
        groups.setdefault(key, []).append(pt)
    jobs = []
    for group in groups.values():
        for i in range(0, len(group), vmap_seeds):
            chunk = group[i : i + vmap_seeds]
            jobs.append({
                "runs": [{"config": pt.config.to_dict(),
                          "path": str((runs_dir / pt.run_id).resolve())} for pt in chunk],
                "probes": probes, "analyse": analyse, "vmap": len(chunk) > 1, "threads": 1,
            })
    return jobs

"""Running a sweep: validate everything, skip what is done, hand the rest to a backend as jobs,
and keep ``sweep.json`` up to date as each run ends (:func:`run_sweep`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.errors import MechgrokError, RunDirError
from mechgrok.resources import available_cores
from mechgrok.store.sweep import (
    is_sweep_dir,
    load_sweep,
    saved_states,
    sweep_run_path,
    sweep_runs_dir,
    write_sweep,
)
from mechgrok.sweep.expand import DEFAULT_MAX_RUNS, DEFAULT_RETRIES, validate_sweep
from mechgrok.sweep.job import result, run_is_done
from mechgrok.sweep.spec import SweepPoint, SweepSpec, canon, load_sweep_spec

__all__ = [
    "OnRunResult",
    "SweepResult",
    "plan_jobs",
    "run_sweep",
    "settle_checkpoints",
    "write_sweep_file",
]

#: ``on_result(result, n_done, n_total)``: called in the sweep's process as each run ends
OnRunResult = Callable[[dict[str, Any], int, int], None]


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


def write_sweep_file(sweep_dir: Path, spec: SweepSpec, points: Sequence[SweepPoint],
                     states: Mapping[str, dict[str, Any]]) -> None:
    """(Re)write the sweep's ``sweep.json``: the spec and every run with its known state."""
    runs = []
    for pt in points:
        r = pt.to_dict()
        r.update(states.get(pt.run_id, {"state": "pending"}))
        runs.append(r)
    write_sweep(sweep_dir, spec.name, spec.to_dict(), spec.axes, spec.seeds, runs)


def settle_checkpoints(spec: SweepSpec, out_dir: str | Path) -> SweepSpec:
    """``spec``, with ``checkpoints = "full"`` when its sweep directory exists and was written
    before ``[sweep] checkpoints`` existed: its runs keep the ids (and checkpoints) they have."""
    old = Path(out_dir) / spec.name
    if spec.checkpoints == "economy" and is_sweep_dir(old):
        try:
            old_spec = load_sweep(old).get("spec")
        except MechgrokError:
            return spec
        if isinstance(old_spec, dict) and "checkpoints" not in old_spec:
            return dataclasses.replace(spec, checkpoints="full")
    return spec


def plan_jobs(todo: Sequence[SweepPoint], runs_dir: Path, probes: list[str] | None,
              analyse: bool, vmap_seeds: int) -> list[dict[str, Any]]:
    """One job per run, or, with ``vmap_seeds`` K > 1, up to K runs that differ only by seed."""
    groups: dict[str, list[SweepPoint]] = {}
    for pt in todo:
        key = canon(pt.point) if vmap_seeds > 1 else pt.run_id
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


def _sort_points(res: SweepResult, sweep_dir: Path, analyse: bool, probes: list[str] | None,
                 ) -> tuple[list[SweepPoint], dict[str, dict[str, Any]]]:
    """The runs still to do, and every run's state (those already done recorded as done)."""
    states = saved_states(sweep_dir)
    todo: list[SweepPoint] = []
    for pt in res.runs:
        path = sweep_run_path(sweep_dir, pt.run_id)
        if run_is_done(path, pt.config, analyse, probes):
            res.skipped.append(pt.run_id)
            if states.get(pt.run_id, {}).get("state") != "done":
                states[pt.run_id] = {**result(path, False, 0.0), "ok": True}
                states[pt.run_id].pop("run_id", None)
        else:
            todo.append(pt)
            states[pt.run_id] = {"state": "pending"}
    return todo, states


def _check_backend(backend: str, address: str | None) -> None:
    """Before any run starts: Ray installed, its address reachable."""
    if backend == "ray":
        from mechgrok.sweep.ray import check_ray_address, import_ray

        import_ray()
        if address not in (None, "auto"):
            check_ray_address(address)


def _run_jobs(jobs: list[dict[str, Any]], spec: SweepSpec, backend: str, workers: int | None,
              address: str | None, retries: int,
              collect: Callable[[dict[str, Any], list[dict[str, Any]]], None]) -> None:
    n_workers = workers or min(len(jobs), available_cores())
    try:
        if backend == "local":
            from mechgrok.sweep.local import run_local

            run_local(jobs, n_workers, retries, collect)
        else:
            from mechgrok.sweep.ray import run_ray

            run_ray(jobs, address, workers, retries, collect)
    except KeyboardInterrupt:
        from mechgrok.training.loop import TrainingInterrupted

        raise TrainingInterrupted(
            f"sweep {spec.name} interrupted; finished runs and every checkpoint are kept: "
            f"relaunch the same command to continue") from None


def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path = "checkpoints", *,
              backend: str = "local", workers: int | None = None, address: str | None = None,
              max_runs: int = DEFAULT_MAX_RUNS, retries: int = DEFAULT_RETRIES,
              analyse: bool = True, vmap_seeds: int = 1,
              on_result: OnRunResult | None = None) -> SweepResult:
    """Expand, then train and analyse every run not yet done; see :mod:`mechgrok.sweep`.

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
    _check_backend(backend, address)
    sweep_dir = Path(out_dir) / spec.name
    if sweep_dir.exists() and not is_sweep_dir(sweep_dir) and any(sweep_dir.iterdir()):
        raise RunDirError(f"{sweep_dir} exists and is not a sweep directory; choose another "
                          f"sweep name or --out-dir")
    res = SweepResult(sweep_dir, points)
    probes = list(spec.probes) if spec.probes is not None else None
    todo, states = _sort_points(res, sweep_dir, analyse, probes)
    if backend == "ray" and todo:  # connect (or start Ray) before any run starts
        from mechgrok.sweep.ray import connect_ray

        connect_ray(address, workers)
    runs_dir = sweep_runs_dir(sweep_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_sweep_file(sweep_dir, spec, points, states)
    jobs = plan_jobs(todo, runs_dir, probes, analyse, vmap_seeds)
    count = 0

    def collect(job: dict[str, Any], results: list[dict[str, Any]]) -> None:
        nonlocal count
        for r in results:
            count += 1
            res.results[r["run_id"]] = r
            states[r["run_id"]] = {k: v for k, v in r.items() if k != "run_id"}
            if on_result is not None:
                on_result(r, count, len(todo))
        write_sweep_file(sweep_dir, spec, points, states)

    if jobs:
        _run_jobs(jobs, spec, backend, workers, address, retries, collect)
    res.seconds = time.perf_counter() - t0
    return res

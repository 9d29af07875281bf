"""The sweep directory (a **contract**: users' saved sweeps depend on it).

``<out-dir>/<name>/`` holds:

* ``sweep.json``: the sweep's kind and schema version, its name, the spec it was launched with,
  the grid's axes (``[{"key": "section.field", "values": [...]}]``), the seeds, and every run
  (``run_id``, grid ``point``, ``seed`` and its last known ``state``: ``pending``, ``done`` or
  ``failed``, with the result the sweep recorded);
* ``runs/<run-id>/``: ordinary run directories (see :mod:`mechgrok.store`).

``sweep.json`` is rewritten whole (atomically) as each run ends. What a sweep *does* with these
(expanding a grid, training, analysing) lives in :mod:`mechgrok.sweep`; this module only reads
and writes the directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mechgrok.config import SECTIONS, RunConfig
from mechgrok.errors import MechgrokError, RunDirError
from mechgrok.store import Run, atomic_write_json, check_name, existing_run

__all__ = [
    "RUNS_DIR",
    "SWEEP_FILE",
    "SWEEP_KIND",
    "SWEEP_NAME_RE",
    "SWEEP_SCHEMA_VERSION",
    "is_sweep_dir",
    "load_sweep",
    "run_is_trained",
    "saved_states",
    "sweep_file",
    "sweep_run",
    "sweep_run_path",
    "sweep_runs_dir",
    "write_sweep",
]

SWEEP_KIND = "mechgrok.sweep"
SWEEP_SCHEMA_VERSION = 1
SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
#: a sweep's name: it names the sweep's directory
SWEEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: the keys of a run's entry in ``sweep.json`` that say which run it is (the rest is its state)
_IDENTITY = ("run_id", "point", "seed", "path")


def sweep_file(sweep_dir: str | Path) -> Path:
    """A sweep directory's ``sweep.json``."""
    return Path(sweep_dir) / SWEEP_FILE


def sweep_runs_dir(sweep_dir: str | Path) -> Path:
    """The folder of a sweep's run directories, ``runs/``."""
    return Path(sweep_dir) / RUNS_DIR


def sweep_run_path(sweep_dir: str | Path, run_id: str) -> Path:
    """The run directory of one of the sweep's runs."""
    return sweep_runs_dir(sweep_dir) / run_id


def is_sweep_dir(path: str | Path) -> bool:
    return sweep_file(path).is_file()


def _kind(v: Any) -> str:
    return {dict: "a JSON object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number")


def _read(f: Path) -> dict[str, Any]:
    """``sweep.json``'s object, its kind and schema version checked."""
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
    return data


def _check_head(f: Path, data: dict[str, Any]) -> None:
    """The name, the axes and the seeds."""
    name = data.get("name")
    if not isinstance(name, str) or not SWEEP_NAME_RE.match(name):
        raise RunDirError(f"{f}: name {name!r:.60} is not a folder name of letters, digits, "
                          f"'.', '_' or '-'")
    axes = data.get("axes") or []
    if not isinstance(axes, list):
        raise RunDirError(f"{f}: axes is {_kind(axes)}, not a list")
    for i, a in enumerate(axes):
        if not isinstance(a, dict) or not isinstance(a.get("values"), list):
            raise RunDirError(f"{f}: axis {i} is not an object with a key and a list of values")
        key = a.get("key")
        sec, _, fld = key.partition(".") if isinstance(key, str) else ("", "", "")
        if sec not in SECTIONS or not fld.isidentifier():
            raise RunDirError(f"{f}: axis {i} has key {key!r:.60}, not a config field "
                              f"section.field")
    seeds = data.get("seeds")
    if seeds is not None and not isinstance(seeds, list):
        raise RunDirError(f"{f}: seeds is {_kind(seeds)}, not a list or null")


def _check_run(f: Path, i: int, r: Any) -> None:
    if not isinstance(r, dict) or not isinstance(r.get("run_id"), str):
        raise RunDirError(f"{f}: run {i} has no run_id")
    try:
        check_name(r["run_id"], "run id")
    except RunDirError as e:
        raise RunDirError(f"{f}: run {i}: {e}") from None
    where = f"{f}: run {i} ({r['run_id']})"
    for k, t in (("point", dict), ("state", str)):
        if k in r and not isinstance(r[k], t):
            raise RunDirError(f"{where} has {k} {_kind(r[k])}, not {_kind(t())}")
    seed = r.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RunDirError(f"{where}: seed is {seed!r:.60}, not an integer")


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep directory's ``sweep.json`` (with ``path`` and each run's ``path`` added), checked
    field by field: a damaged or foreign file is one :class:`RunDirError` naming what is wrong."""
    p = Path(path)
    f = sweep_file(p)
    if not f.is_file():
        raise RunDirError(f"{p} is not a mechgrok sweep directory (no {SWEEP_FILE}); "
                          f"`mechgrok sweep FILE.toml` creates one")
    data = _read(f)
    _check_head(f, data)
    runs = data.get("runs", [])
    if not isinstance(runs, list):
        raise RunDirError(f"{f}: runs is {_kind(runs)}, not a list")
    data["path"] = p
    for i, r in enumerate(runs):
        _check_run(f, i, r)
        r["path"] = sweep_run_path(p, r["run_id"])
    return data


def saved_states(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Each run's last recorded state (run id → its entry less the keys that identify it);
    empty when there is no readable ``sweep.json``."""
    if not is_sweep_dir(sweep_dir):
        return {}
    try:
        runs = load_sweep(sweep_dir).get("runs", [])
    except MechgrokError:
        return {}
    return {r["run_id"]: {k: v for k, v in r.items() if k not in _IDENTITY} for r in runs}


def write_sweep(sweep_dir: str | Path, name: str, spec: Mapping[str, Any],
                axes: Sequence[tuple[str, Sequence[Any]]], seeds: Sequence[int] | None,
                runs: Sequence[Mapping[str, Any]]) -> None:
    """(Re)write ``sweep.json`` atomically: ``runs`` are the runs' entries (``run_id``,
    ``point``, ``seed`` and their state), in the grid's order."""
    atomic_write_json(sweep_file(sweep_dir), {
        "kind": SWEEP_KIND, "schema_version": SWEEP_SCHEMA_VERSION, "name": name,
        "spec": dict(spec), "axes": [{"key": k, "values": list(v)} for k, v in axes],
        "seeds": list(seeds) if seeds is not None else None,
        "runs": [dict(r) for r in runs],
    })


def sweep_run(path: str | Path, cfg: RunConfig) -> Run | None:
    """The run already in ``path`` (None when there is none, or when it was killed before its
    first checkpoint); refuses, with a :class:`RunDirError`, one of another config."""
    run = existing_run(Path(path))
    if run is None:
        return None
    if run.config.to_dict() != cfg.to_dict():
        raise RunDirError(f"{path} holds a run with a different config than the sweep's; move "
                          f"it away or remove it, then relaunch")
    return run


def run_is_trained(run: Run | None) -> bool:
    """Whether a sweep's run needs no more training (:attr:`Run.is_final`: its manifest says
    it has ended)."""
    return run is not None and run.is_final

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

from mechgrok.store.sweep import (
    RUNS_DIR,
    SWEEP_FILE,
    SWEEP_KIND,
    SWEEP_SCHEMA_VERSION,
    is_sweep_dir,
    load_sweep,
)
from mechgrok.sweep.expand import (
    DEFAULT_MAX_RUNS,
    DEFAULT_RETRIES,
    MAX_RETRIES,
    MAX_RUNS,
    MAX_VMAP_SEEDS,
    MAX_WORKERS,
    check_probes,
    expand,
    validate_sweep,
)
from mechgrok.sweep.job import run_job
from mechgrok.sweep.ray import connect_ray
from mechgrok.sweep.run import (
    SweepResult,
    plan_jobs,
    run_sweep,
    settle_checkpoints,
    write_sweep_file,
)
from mechgrok.sweep.spec import SweepPoint, SweepSpec, load_sweep_spec

__all__ = [
    "DEFAULT_MAX_RUNS",
    "DEFAULT_RETRIES",
    "MAX_RETRIES",
    "MAX_RUNS",
    "MAX_VMAP_SEEDS",
    "MAX_WORKERS",
    "RUNS_DIR",
    "SWEEP_FILE",
    "SWEEP_KIND",
    "SWEEP_SCHEMA_VERSION",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "check_probes",
    "connect_ray",
    "expand",
    "is_sweep_dir",
    "load_sweep",
    "load_sweep_spec",
    "plan_jobs",
    "run_job",
    "run_sweep",
    "settle_checkpoints",
    "validate_sweep",
    "write_sweep_file",
]

#: the name ``sweep.json``'s writer had before the sweep became a package (tests still use it)
_write_sweep_file = write_sweep_file

"""Every on-disk format of mechgrok, and the one place their file names are spelt.

* the **run directory** (a **contract**), ``checkpoints/<run-id>/``: config, manifest, split,
  metrics, checkpoints, resume state, lock (:mod:`~mechgrok.store.run` describes it and reads it;
  :mod:`~mechgrok.store.writer` writes it; :mod:`~mechgrok.store.manifest` holds the manifest's
  format and the one definition of a run's status, :func:`is_final`);
* the **analysis directory** beside it (a **contract**), ``<run>/analysis/``: the measures table,
  per-checkpoint arrays, the summary (:mod:`~mechgrok.store.analysis`);
* the **sweep directory** (:mod:`~mechgrok.store.sweep`).

Shared by all of them: atomic writes, standard JSON, SHA-256 and safetensors bytes
(:mod:`~mechgrok.store.files`: nothing here ever unpickles), the one lock
(:mod:`~mechgrok.store.lock`), the file names and paths (:mod:`~mechgrok.store.layout`), and what
mechgrok may remove of a run directory (:mod:`~mechgrok.store.ownership`).

This module re-exports the names the rest of mechgrok uses: ``from mechgrok.store import Run``.
"""

from __future__ import annotations

from mechgrok.store.analysis import analysis_dir, arrays_path, measures_path, summary_path
from mechgrok.store.files import (
    atomic_write_bytes,
    atomic_write_json,
    check_tensors,
    json_dumps,
    json_safe,
    package_versions,
    read_verified,
    reduce_precision,
    sha256_bytes,
    tensors_from_bytes,
    tensors_to_bytes,
)
from mechgrok.store.layout import (
    ANALYSIS_ARRAYS_DIR,
    ANALYSIS_DIR,
    ANALYSIS_LOCK_FILE,
    CKPT_DIR,
    CONFIG_FILE,
    IMPORT_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MEASURES_FILE,
    METRICS_FILE,
    NAME_RE,
    RESUME_PREFIX,
    SPLIT_FILE,
    SUMMARY_FILE,
    SWEEP_DONE_FILE,
    check_name,
    checkpoint_file,
    manifest_path,
    resolve_run_path,
    resume_file,
    run_dir,
)
from mechgrok.store.lock import held_lock, is_locked, release_lock, try_lock
from mechgrok.store.manifest import (
    EXACT_PREFIX,
    FINAL_STATUSES,
    MANIFEST_KIND,
    MANIFEST_SCHEMA_VERSION,
    PARENT_KEYS,
    REDUCED_DTYPES,
    CheckpointInfo,
    is_final,
    validate_manifest,
)
from mechgrok.store.ownership import is_run_dir, remove_run_dir
from mechgrok.store.run import (
    IMPORT_KIND,
    METRIC_NUMBERS,
    Run,
    parent_record,
    read_metrics,
    read_saved_config,
)
from mechgrok.store.writer import RunWriter, existing_run

__all__ = [
    "ANALYSIS_ARRAYS_DIR",
    "ANALYSIS_DIR",
    "ANALYSIS_LOCK_FILE",
    "CKPT_DIR",
    "CONFIG_FILE",
    "EXACT_PREFIX",
    "FINAL_STATUSES",
    "IMPORT_FILE",
    "IMPORT_KIND",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MANIFEST_KIND",
    "MANIFEST_SCHEMA_VERSION",
    "MEASURES_FILE",
    "METRICS_FILE",
    "METRIC_NUMBERS",
    "NAME_RE",
    "PARENT_KEYS",
    "REDUCED_DTYPES",
    "RESUME_PREFIX",
    "SPLIT_FILE",
    "SUMMARY_FILE",
    "SWEEP_DONE_FILE",
    "CheckpointInfo",
    "Run",
    "RunWriter",
    "analysis_dir",
    "arrays_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_name",
    "check_tensors",
    "checkpoint_file",
    "existing_run",
    "held_lock",
    "is_final",
    "is_locked",
    "is_run_dir",
    "json_dumps",
    "json_safe",
    "manifest_path",
    "measures_path",
    "package_versions",
    "parent_record",
    "read_metrics",
    "read_saved_config",
    "read_verified",
    "reduce_precision",
    "release_lock",
    "remove_run_dir",
    "resolve_run_path",
    "resume_file",
    "run_dir",
    "sha256_bytes",
    "summary_path",
    "tensors_from_bytes",
    "tensors_to_bytes",
    "try_lock",
    "validate_manifest",
]

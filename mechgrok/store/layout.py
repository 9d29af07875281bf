"""The names of everything mechgrok writes into a run directory, and the paths built from them.

This is the one place those names are spelt (``tests/test_architecture.py`` holds the rest of the
package to it): every other module asks for a path (:func:`manifest_path`, :func:`run_dir`,
:func:`checkpoint_file` …) instead of joining a literal name.
"""

from __future__ import annotations

import re
from pathlib import Path

from mechgrok.errors import RunDirError

__all__ = [
    "ANALYSIS_ARRAYS_DIR",
    "ANALYSIS_DIR",
    "ANALYSIS_LOCK_FILE",
    "CKPT_DIR",
    "CKPT_FILE_RE",
    "CONFIG_FILE",
    "IMPORT_FILE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MEASURES_FILE",
    "METRICS_FILE",
    "NAME_RE",
    "OWN_TMP_RE",
    "RESUME_FILE_RE",
    "RESUME_PREFIX",
    "SPLIT_FILE",
    "SUMMARY_FILE",
    "SWEEP_DONE_FILE",
    "check_name",
    "checkpoint_file",
    "manifest_path",
    "resolve_run_path",
    "resume_file",
    "run_dir",
]

CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "split.safetensors"
RESUME_PREFIX = "resume_epoch_"
LOCK_FILE = "run.lock"
CKPT_DIR = "ckpt"
# the analysis directory beside the run (its format: mechgrok.store.analysis)
ANALYSIS_DIR = "analysis"
ANALYSIS_LOCK_FILE = "analyze.lock"
MEASURES_FILE = "measures.jsonl"
SUMMARY_FILE = "summary.json"
ANALYSIS_ARRAYS_DIR = "arrays"
SWEEP_DONE_FILE = "sweep_done.json"  # written by mechgrok ≤ 0.1.0 sweeps; still removable
#: where an imported run came from (written by ``mechgrok import``; absent from trained runs)
IMPORT_FILE = "imported.json"

#: a run name (and a sweep name): one path component, so it always lands inside its out-dir
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: the file of a checkpoint, relative to the run (what the manifest names)
CKPT_FILE_RE = re.compile(rf"^{CKPT_DIR}/epoch_\d{{7}}\.safetensors$")
RESUME_FILE_RE = re.compile(rf"^{RESUME_PREFIX}\d{{7}}\.safetensors$")
#: the temporary names atomic_write_bytes gives (mkstemp: ".<name>.<8 random chars>.tmp") for the
#: files mechgrok writes into a run directory: the only strays it may ever delete
OWN_TMP_RE = re.compile(
    r"^\.(config\.json|manifest\.json|metrics\.jsonl|split\.safetensors|epoch_\d{7}\.safetensors|"
    rf"{RESUME_PREFIX}\d{{7}}\.safetensors)\.[A-Za-z0-9_]{{8}}\.tmp$")


def checkpoint_file(epoch: int) -> str:
    """The checkpoint of ``epoch``, relative to the run (``ckpt/epoch_NNNNNNN.safetensors``)."""
    return f"{CKPT_DIR}/epoch_{epoch:07d}.safetensors"


def resume_file(epoch: int) -> str:
    """The resume state saved at ``epoch``, relative to the run."""
    return f"{RESUME_PREFIX}{epoch:07d}.safetensors"


def manifest_path(run_path: str | Path) -> Path:
    """A run directory's manifest file (its presence marks a run that got past creation)."""
    return Path(run_path) / MANIFEST_FILE


def resolve_run_path(run: str | Path, root: str | Path = "checkpoints") -> Path:
    """A run given as a path, or as an id under ``root``."""
    p = Path(run)
    if p.exists():
        return p
    q = Path(root) / str(run)
    if q.exists():
        return q
    raise RunDirError(f"run directory {str(run)!r} not found (looked in . and {root}/)")


def check_name(name: str, what: str = "run name") -> str:
    """A run (or sweep) name must be one path component: letters, digits, ``.``, ``_``, ``-``,
    not starting with ``.`` (so ``.``, ``..``, ``a/b`` and absolute paths are refused)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RunDirError(f"{what} {name!r} must be a single folder name of letters, digits, '.', "
                          f"'_' or '-' that does not start with '.' (it names a folder inside "
                          f"the output folder)")
    return name


def run_dir(out_dir: str | Path, name: str) -> Path:
    """Where the run called ``name`` lives under ``out_dir`` (always inside it)."""
    return Path(out_dir) / check_name(name)

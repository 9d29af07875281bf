"""Run probes over a run's checkpoints into the measures table (``mechgrok analyze``).

The measures table (a **contract**) lives beside the run, in ``<run>/analysis/``:

* ``measures.jsonl``: one record per (checkpoint, probe): ``{"epoch", "step", "probe",
  "status": "ok" | "n/a" | "error", "values": {name: number}, "arrays": [names],
  "reason" | "error": text, "probe_id": text, "deps": {…}}``. Appended after each checkpoint
  (one write of whole lines, fsynced); a torn last line from a crash, or a line that is not a
  record of this shape, is ignored (and so computed again), and the file is compacted atomically
  on the next run. :func:`measures_table` pivots it to one row per (run, step) with one column per
  scalar, ``<probe>.<name>``, plus ``<probe>.status``.
* ``arrays/epoch_NNNNNNN.safetensors``: each checkpoint's arrays, named ``<probe>.<name>``
  (written atomically, merged with what is there; a probe's old arrays go when it is recomputed).
* ``summary.json``: run-level results: key frequencies on the final checkpoint by each rule,
  phases, grokking epoch and delay, Liu et al.'s label, what did not apply and what failed, and
  the final checkpoint they were computed from.

**What a stored value depended on.** Each record says what it was computed from, and is used only
while all of it still holds (otherwise it is *stale*: :func:`analyze` computes it again and counts
it in ``AnalysisResult.stale``; :func:`measures_table` and the summary leave it out):

* ``deps.checkpoint``: the SHA-256 the manifest gives for the checkpoint it was computed on;
* ``deps.split`` and ``deps.config``: the manifest's split hash and a hash of ``config.json``;
* ``deps.final`` (``{"epoch", "sha256"}``): the run's final checkpoint when the record was
  computed, kept for probes that need ``key_freqs`` (restricted/excluded loss use the final
  checkpoint's key frequencies) and for any probe that asked for ``ctx.run.final_key_frequencies()``;
  a run trained further (resumed, or analysed while it was still training) makes them stale;
* ``probe_id``: which code computed it (:func:`probe_identity`): ``mechgrok:<name>/<version>``
  for a built-in (its ``version`` attribute, 1 unless set: bump it when a built-in's numbers
  change), ``<module>:<qualname>#<hash>`` for any other probe, the hash covering its source (its
  class's, or its function's and its ``applies``'s), the simple values of its module-level names
  and closure it reads, its ``needs`` and its instance's simple attributes. A different probe
  registered under the same name is therefore computed again, not served the other's values.

Records written before mechgrok stored these (no ``deps`` or no ``probe_id``) are stale for every
probe: nothing says which checkpoint, final checkpoint or code produced them. ``error`` records
are always computed again. ``force=True`` recomputes everything selected.

**The run directory changing under the analysis.** The analysis holds ``analysis/analyze.lock``
(:func:`analysis_lock` takes it from outside, e.g. before ``train --overwrite``). Before each write
it checks that the run directory and its ``analysis/`` folder are the ones it started with and that
the manifest still lists the checkpoint it is about to store with the same SHA-256; if not (the run
was replaced), it stops with a :class:`~mechgrok.errors.RunDirError` and writes nothing more.

**Probes are isolated from each other.** Each checkpoint's all-pairs forward pass runs once and is
shared by every probe that needs it (:class:`~mechgrok.probes.base.CheckpointContext`); one model
object is reused for every checkpoint. After each probe the analysis checks that the probe left
the model (every parameter and buffer, bit for bit; its structure, hooks and mode), the run's
shared tensors (``ctx.run.tokens`` …) and the shared all-pairs results as it found them; a probe
that changed any of them gets an ``error`` record saying so, and what it changed is rebuilt from
the checkpoint for the probes after it. A probe that raises anything, ``SystemExit`` (a
``sys.exit``) included, gets an ``error`` record; only ``KeyboardInterrupt`` stops the analysis.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import marshal
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechgrok.errors import CheckpointError, ConfigError, MechgrokError, RunDirError
from mechgrok.probes import NotApplicable, Probe, get_probe, load_probe, registry
from mechgrok.probes.base import CheckpointContext, RunContext, check_output, is_probe_name
from mechgrok.store import ANALYSIS_ARRAYS_DIR as ARRAYS_DIR
from mechgrok.store import (
    ANALYSIS_DIR,
    ANALYSIS_LOCK_FILE,
    MEASURES_FILE,
    SUMMARY_FILE,
    CheckpointInfo,
    Run,
    atomic_write_bytes,
    atomic_write_json,
    json_dumps,
    release_lock,
    tensors_from_bytes,
    tensors_to_bytes,
    try_lock,
)

STATUSES = ("ok", "n/a", "error")


# --------------------------------------------------------------------------------------------
# What a record depended on
# --------------------------------------------------------------------------------------------
def _config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()
                          ).hexdigest()


@dataclass(frozen=True)
class _RunDeps:
    """What the run (its manifest and config, as read now) says a fresh record must match."""

    split: str | None
    config: str
    final: dict[str, Any] | None  # {"epoch", "sha256"} of the final checkpoint
    checkpoints: dict[int, str]  # epoch -> sha256

    @classmethod
    def of(cls, run: Run, checkpoints: Sequence[CheckpointInfo] | None = None) -> _RunDeps:
        cks = list(run.checkpoints() if checkpoints is None else checkpoints)
        final = {"epoch": cks[-1].epoch, "sha256": cks[-1].sha256} if cks else None
        split = run.manifest.get("split_sha256")
        return cls(split if isinstance(split, str) else None, _config_hash(run.config), final,
                   {c.epoch: c.sha256 for c in cks})

    def for_record(self, epoch: int, uses_final: bool) -> dict[str, Any]:
        deps: dict[str, Any] = {"checkpoint": self.checkpoints.get(epoch), "split": self.split,
                                "config": self.config}
        if uses_final:
            deps["final"] = self.final
        return deps

    def holds(self, r: dict[str, Any]) -> bool:
        """Whether everything ``r`` says it depended on still holds for this run."""
        deps = r.get("deps")
        if not isinstance(deps, dict):
            return False
        sha = self.checkpoints.get(r["epoch"])
        if sha is None or deps.get("checkpoint") != sha:
            return False
        if deps.get("split") != self.split or deps.get("config") != self.config:
            return False
        return "final" not in deps or deps["final"] == self.final


def _uses_final(p: Probe) -> bool:
    return "key_freqs" in tuple(p.needs)


def _reusable(r: dict[str, Any] | None, rd: _RunDeps, pid: str, uses_final: bool) -> bool | None:
    """True: ``r`` can be reused; False: it is stale; None: there is nothing to reuse (no record,
    or an error, which is always retried)."""
    if r is None or r["status"] not in ("ok", "n/a"):
        return None
    if r.get("probe_id") != pid or not rd.holds(r):
        return False
    return not (uses_final and "final" not in r["deps"])


# --------------------------------------------------------------------------------------------
# Probe identity
# --------------------------------------------------------------------------------------------
_SIMPLE = (int, float, str, bool, bytes, type(None))
_SKIP_ATTRS = frozenset({"description", "builtin", "fn", "_applies", "__wrapped__", "__doc__",
                         "__name__", "__qualname__", "__module__", "__dict__", "__annotations__",
                         "__type_params__"})


def _simple(v: Any, depth: int = 0) -> str | None:
    """A stable text for plain data (numbers, strings, and tuples, lists, sets and dicts of
    them), None for anything else."""
    if isinstance(v, _SIMPLE):
        return repr(v)
    if depth >= 4 or not isinstance(v, (tuple, list, set, frozenset, dict)) or len(v) > 10_000:
        return None
    if isinstance(v, dict):
        pairs = [(_simple(k, depth + 1), _simple(x, depth + 1)) for k, x in v.items()]
        if any(a is None or b is None for a, b in pairs):
            return None
        return "{" + ",".join(sorted(f"{a}:{b}" for a, b in pairs)) + "}"
    items = [_simple(x, depth + 1) for x in v]
    if any(x is None for x in items):
        return None
    if isinstance(v, (set, frozenset)):
        items.sort()
    return f"{type(v).__name__}({','.join(items)})"  # type: ignore[arg-type]


def _code_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if inspect.iscode(c):
            names |= _code_names(c)
    return names


def _fingerprint(obj: Any, h: Any, seen: set[int], module: str | None) -> None:
    """Feed ``h`` with what defines ``obj`` (a function or class): its source, and the simple
    values and same-module functions and classes it refers to."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                _fingerprint(f, h, seen, module)
        return
    if id(obj) in seen or not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return
    seen.add(id(obj))
    try:
        src: bytes = inspect.getsource(obj).encode()
    except Exception:  # no source (a REPL, exec): its code objects stand in for it
        src = b""
    h.update(f"<{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}>".encode())
    if inspect.isfunction(obj):
        code = obj.__code__
        h.update(src or marshal.dumps(code))
        refs: list[tuple[str, Any]] = []
        for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            with contextlib.suppress(ValueError):  # an empty cell
                refs.append((name, cell.cell_contents))
        g = getattr(obj, "__globals__", {})
        refs += [(n, g[n]) for n in sorted(_code_names(code)) if n in g]
        home = module or obj.__module__
        for name, v in refs:
            s = _simple(v)
            if s is not None:
                h.update(f"{name}={s};".encode())
            elif ((inspect.isfunction(v) or inspect.isclass(v))
                  and getattr(v, "__module__", None) == home):
                _fingerprint(v, h, seen, home)
    else:
        h.update(src)
        for name, v in sorted(vars(obj).items()):
            s = _simple(v) if not name.startswith("__") else None
            if s is not None:
                h.update(f"{name}={s};".encode())
                continue
            f = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
            if isinstance(f, property) or getattr(f, "__module__", None) == obj.__module__:
                _fingerprint(v, h, seen, obj.__module__)


def probe_identity(p: Probe) -> str:
    """Which code a probe is, for the records it writes: ``mechgrok:<name>/<version>`` for a
    built-in, ``<module>:<qualname>#<hash of its code and settings>`` for any other."""
    from mechgrok.probes.base import _FunctionProbe
    from mechgrok.probes.builtin import BUILTIN_PROBES

    if any(p is b for b in BUILTIN_PROBES):
        return f"mechgrok:{p.name}/{getattr(p, 'version', 1)}"
    h = hashlib.sha256()
    h.update(f"name={p.name!r};needs={sorted(map(str, p.needs))!r};".encode())
    seen: set[int] = set()
    if isinstance(p, _FunctionProbe):
        target: Any = p.fn
        _fingerprint(p.fn, h, seen, None)
        if p._applies is not None:
            _fingerprint(p._applies, h, seen, None)
    else:
        target = type(p)
        for cls in type(p).__mro__:
            if cls not in (Probe, _FunctionProbe, object):
                _fingerprint(cls, h, seen, None)
    for k, v in sorted(vars(p).items()):
        s = _simple(v)
        if k not in _SKIP_ATTRS and s is not None:
            h.update(f"{k}={s};".encode())
    where = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
    return f"{where}#{h.hexdigest()[:16]}"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float))


def _valid_record(r: Any) -> bool:
    """Whether ``r`` has the shape of a measures record (anything else is ignored)."""
    if not isinstance(r, dict):
        return False
    if not _is_int(r.get("epoch")) or r["epoch"] < 0:
        return False
    name = r.get("probe")
    if not is_probe_name(name):
        return False
    status = r.get("status")
    if status not in STATUSES:
        return False
    if "step" in r and r["step"] is not None and not _is_int(r["step"]):
        return False
    values = r.get("values")
    if status == "ok" and values is None:
        return False
    if values is not None and not (isinstance(values, dict) and all(
            isinstance(k, str) and k and "." not in k and _is_scalar(v) for k, v in values.items())):
        return False
    arrays = r.get("arrays")
    if arrays is not None and not (isinstance(arrays, list)
                                   and all(isinstance(a, str) for a in arrays)):
        return False
    if status == "error" and not isinstance(r.get("error"), str):
        return False
    if "reason" in r and not isinstance(r["reason"], str):
        return False
    if "deps" in r and not isinstance(r["deps"], dict):
        return False
    return "probe_id" not in r or isinstance(r["probe_id"], str)


def _records(path: Path, skipped: list[int] | None = None) -> dict[tuple[int, str], dict[str, Any]]:
    """Latest valid record per (epoch, probe); torn lines and malformed records (a wrong shape,
    a probe name mechgrok never writes) are skipped, their line numbers added to ``skipped``."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    if not path.is_file():
        return out
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            r = None
        if _valid_record(r):
            out[(r["epoch"], r["probe"])] = r
        elif skipped is not None:
            skipped.append(i)
    return out


def load_records(run: Run | str | Path, skipped: list[int] | None = None
                 ) -> dict[tuple[int, str], dict[str, Any]]:
    """Every well-formed record, the latest per (epoch, probe), stale or not; the line numbers
    of lines that are not such records are added to ``skipped``."""
    run = run if isinstance(run, Run) else Run(run)
    return _records(run.path / ANALYSIS_DIR / MEASURES_FILE, skipped)


def measures_table(run: Run | str | Path, *, include_stale: bool = False) -> list[dict[str, Any]]:
    """One row per (run, step): ``run``, ``epoch``, ``step``, ``<probe>.<name>`` scalars and
    ``<probe>.status``, sorted by epoch. Records whose checkpoint, split, config or final
    checkpoint no longer match the run are left out unless ``include_stale`` (the probe's code is
    not checked here: :func:`analyze` does that)."""
    run = run if isinstance(run, Run) else Run(run)
    rd = _RunDeps.of(run)
    rows: dict[int, dict[str, Any]] = {}
    for (epoch, name), r in sorted(load_records(run).items()):
        if not include_stale and not rd.holds(r):
            continue
        row = rows.setdefault(epoch, {"run": run.id, "epoch": epoch, "step": r.get("step")})
        row[f"{name}.status"] = r["status"]
        for k, v in (r.get("values") or {}).items():
            row[f"{name}.{k}"] = v
    return [rows[e] for e in sorted(rows)]


def measures_dataframe(run: Run | str | Path):
    """The measures table as a pandas DataFrame (pandas must be installed)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        raise MechgrokError("pandas is not installed: pip install pandas") from None
    return pd.DataFrame(measures_table(run))


def load_arrays(run: Run | str | Path, epoch: int) -> dict[str, Any]:
    """The arrays stored for one checkpoint, as numpy arrays named ``<probe>.<name>``."""
    run = run if isinstance(run, Run) else Run(run)
    f = _arrays_path(run.path, epoch)
    if not f.is_file():
        return {}
    tensors, _ = tensors_from_bytes(f.read_bytes(), str(f))
    return {k: v.numpy() for k, v in tensors.items()}


def load_summary(run: Run | str | Path) -> dict[str, Any]:
    """The run's ``analysis/summary.json`` ({} when it has not been analysed); a file that is not
    a JSON object is a :class:`RunDirError` naming it."""
    run = run if isinstance(run, Run) else Run(run)
    f = run.path / ANALYSIS_DIR / SUMMARY_FILE
    if not f.is_file():
        return {}
    try:
        obj = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunDirError(f"cannot read the analysis summary {f} ({why}); `mechgrok analyze "
                          f"{run.path}` writes it again") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"the analysis summary {f} is not a JSON object; `mechgrok analyze "
                          f"{run.path}` writes it again")
    return obj


def _arrays_path(run_path: Path, epoch: int) -> Path:
    return run_path / ANALYSIS_DIR / ARRAYS_DIR / f"epoch_{epoch:07d}.safetensors"


# --------------------------------------------------------------------------------------------
# Running probes
# --------------------------------------------------------------------------------------------
@dataclass
class AnalysisResult:
    run: Run
    probes: list[str]
    checkpoints: int
    computed: int = 0
    reused: int = 0
    #: records that were there but stale (another checkpoint, final checkpoint or probe code),
    #: computed again (included in ``computed``)
    stale: int = 0
    seconds: float = 0.0
    not_applicable: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: processes that computed checkpoints (1: this one), and why not more when asked for more
    workers: int = 1
    workers_note: str | None = None


def resolve_probes(specs: Sequence[str | Probe] | None) -> list[Probe]:
    """Probe objects for names, ``module:Name`` specs or Probe instances (all registered when
    ``specs`` is empty). Duplicate names are refused."""
    if not specs:
        return list(registry().values())
    out: list[Probe] = []
    for s in specs:
        p = s if isinstance(s, Probe) else load_probe(s) if ":" in s else get_probe(s)
        if any(q.name == p.name for q in out):
            raise MechgrokError(f"probe {p.name!r} was asked for twice")
        out.append(p)
    return out


def run_probe(probe: Probe | str, run: Run | str | Path, epoch: int | None = None) -> dict[str, Any]:
    """Run one probe on one checkpoint (the last when ``epoch`` is None), without storing it:
    the same code path as ``mechgrok analyze``. Returns the probe's dict (scalars and arrays)."""
    run = run if isinstance(run, Run) else Run(run)
    p = probe if isinstance(probe, Probe) else load_probe(probe) if ":" in probe else get_probe(probe)
    run_ctx = _run_context(run)
    reason = p.applies(run_ctx)
    if reason is not None:
        raise NotApplicable(reason)
    ck = run.checkpoint(epoch)
    ctx = CheckpointContext(run_ctx, ck, run.load_model(ck))
    out = check_output(p, p.compute(ctx))
    return {**out.scalars, **out.arrays}


class _AnalysisRunContext(RunContext):
    """The run context probes get: notes which probe asked for the final key frequencies, and
    hands each a copy of them (a probe cannot change them for the others)."""

    used_final = False

    def final_key_frequencies(self) -> dict[str, list[int]]:
        self.used_final = True
        return copy.deepcopy(super().final_key_frequencies())


def _run_context(run: Run, final: CheckpointInfo | None = None) -> _AnalysisRunContext:
    """The shared context of a run's probes; key frequencies from ``final`` (default: the last
    checkpoint). Probes see their own copy of the Run object."""
    from mechgrok.probes.builtin import final_key_frequency_finder

    final = final if final is not None else run.checkpoint()

    def finder() -> dict[str, list[int]]:
        return final_key_frequency_finder(ctx, run.load_model(final))

    ctx = _AnalysisRunContext(copy.deepcopy(run), run.dataset(), finder)
    return ctx


class _Lock:
    """The analysis lock (``analysis/analyze.lock``; :func:`mechgrok.store.try_lock`, the one
    lock of the run directory format). ``fd`` is None when ``create`` is False and there is no
    ``analysis/`` folder."""

    def __init__(self, folder: Path, create: bool = True):
        if create:
            folder.mkdir(exist_ok=True)
        busy = f"{folder.parent} is being analysed by another process; wait for it to finish"
        try:
            self.fd = try_lock(folder / ANALYSIS_LOCK_FILE, busy, create=create)
        except NotADirectoryError:
            raise RunDirError(f"{folder} is not a folder; move it away, then analyse again"
                              ) from None

    def close(self) -> None:
        release_lock(self.fd)
        self.fd = None


@contextlib.contextmanager
def analysis_lock(run_path: str | Path) -> Iterator[bool]:
    """Hold the analysis lock of the run at ``run_path`` for the ``with`` block, without
    waiting: a :class:`RunDirError` when an analysis holds it. Creates no folder: when the run
    has no ``analysis/`` there is nothing to lock and it yields False (an analysis that starts
    meanwhile notices the run being replaced and stops); else True."""
    lock = _Lock(Path(run_path) / ANALYSIS_DIR, create=False)
    try:
        yield lock.fd is not None
    finally:
        lock.close()


def _append(path: Path, records: Iterable[dict[str, Any]]) -> None:
    data = "".join(json_dumps(r) + "\n" for r in records).encode()
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_arrays(run_path: Path, epoch: int, arrays: dict[str, Any],
                  replaced: Iterable[str] = ()) -> None:
    """Store a checkpoint's new arrays, dropping what the probes in ``replaced`` stored before
    (a probe computed again must not leave its old arrays beside its new record)."""
    import torch

    f = _arrays_path(run_path, epoch)
    prefixes = tuple(f"{name}." for name in replaced)
    if not arrays and not (prefixes and f.is_file()):
        return
    f.parent.mkdir(exist_ok=True)  # analysis/ itself must already be there
    merged: dict[str, Any] = {}
    if f.is_file():
        with contextlib.suppress(CheckpointError):  # a corrupt arrays file is rewritten
            merged, _ = tensors_from_bytes(f.read_bytes(), str(f))
    old = len(merged)
    merged = {k: v for k, v in merged.items() if not k.startswith(prefixes)}
    if not arrays and len(merged) == old:
        return
    for k, v in arrays.items():
        merged[k] = torch.from_numpy(v.copy())
    if merged:
        atomic_write_bytes(f, tensors_to_bytes(merged))
    else:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


class _Sentinel:
    """Notices the run directory being replaced (``train --overwrite``, a copy over it) while
    it is analysed: the run folder, the ``analysis/`` folder and the manifest's checkpoint
    hashes must stay what they were."""

    def __init__(self, run: Run, folder: Path, checkpoints: Sequence[CheckpointInfo]):
        self.run = run
        self.folder = folder
        self.run_id = self._ident(run.path)
        self.folder_id = self._ident(folder)
        self.want = {c.epoch: c.sha256 for c in checkpoints}
        self.split = run.manifest.get("split_sha256")
        self._man_stat: tuple | None = None
        self._man: dict[int, str] | None = None
        self._man_split: Any = None

    @staticmethod
    def _ident(p: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _manifest(self) -> tuple[dict[int, str] | None, Any]:
        from mechgrok.store import MANIFEST_FILE

        f = self.run.path / MANIFEST_FILE
        try:
            st = os.stat(f)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self._man_stat:
                man = json.loads(f.read_text())
                cks = {c["epoch"]: c["sha256"] for c in man["checkpoints"]}
                self._man_stat, self._man, self._man_split = key, cks, man.get("split_sha256")
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        return self._man, self._man_split

    def check(self) -> None:
        """A RunDirError if the run is no longer the one the analysis started on."""
        why = None
        if self._ident(self.run.path) != self.run_id:
            why = "the run directory was replaced"
        elif self._ident(self.folder) != self.folder_id:
            why = f"its {ANALYSIS_DIR}/ folder was removed or replaced"
        else:
            cks, split = self._manifest()
            if cks is None:
                why = "its manifest can no longer be read"
            elif split != self.split:
                why = "its manifest now names another split"
            else:
                changed = [e for e, sha in self.want.items() if cks.get(e) != sha]
                if changed:
                    why = (f"its manifest no longer lists the checkpoint of epoch {changed[0]} "
                           f"that was analysed")
        if why:
            raise RunDirError(f"run {self.run.path} changed while it was being analysed ({why}: "
                              f"`train --overwrite`?); nothing more was written: analyse it again")


# --------------------------------------------------------------------------------------------
# Keeping probes from changing what the others see
# --------------------------------------------------------------------------------------------
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")
_RUN_TENSORS = ("tokens", "labels", "train_idx", "test_idx")
_RUN_OBJECTS = ("config", "data", "run", "_final_key_freqs")


def _tensor_sig(t: Any) -> tuple:
    if t is None:
        return (None,)
    return id(t), t.dtype, tuple(t.shape), str(t.device), t.requires_grad


def _structure(mods: Sequence[tuple[str, Any]]) -> tuple:
    """Everything about a model but its numbers that a probe could change, from its modules
    (``mods``, as ``named_modules()`` gave them): each module's identity, class, plain attributes
    (``training`` included), hooks, submodules, and its tensors' identity, dtype, shape, device
    and ``requires_grad``; and torch's global module hooks."""
    import torch

    out: list[Any] = []
    for _, m in mods:
        d = m.__dict__
        out.append((
            id(m), type(m),
            tuple((k, v) for k, v in d.items() if k[:1] != "_" and isinstance(v, _SIMPLE)),
            tuple(len(d.get(a) or ()) for a in _HOOK_DICTS),
            tuple((k, id(v)) for k, v in (d.get("_modules") or {}).items()),
            tuple((k, *_tensor_sig(v)) for k, v in (d.get("_parameters") or {}).items()),
            tuple((k, *_tensor_sig(v)) for k, v in (d.get("_buffers") or {}).items()),
        ))
    out.append(tuple(len(getattr(torch.nn.modules.module, f"_global{a}", None) or ())
                     for a in _HOOK_DICTS[:4]))
    return tuple(out)


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit the same values (NaN equal to NaN)."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if torch.equal(a, b):
        return True
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return False


def _all_pairs_signature(ap: Any) -> tuple:
    cache = getattr(ap.cache, "cache_dict", ap.cache if isinstance(ap.cache, dict) else {})
    tensors = [ap.tokens, ap.labels, ap.logits, ap.neurons, *cache.values()]
    return (id(ap), id(cache), tuple(sorted(cache)),
            tuple((id(t), getattr(t, "_version", None)) for t in tensors))


class _GuardedContext(CheckpointContext):
    """A checkpoint context that remembers what its all-pairs results were when computed."""

    _ap_sig: tuple | None = None

    def all_pairs(self):  # type: ignore[override]
        fresh = self._all_pairs is None
        ap = super().all_pairs()
        if fresh:
            self._ap_sig = (id(ap), _all_pairs_signature(ap))
        return ap

    def all_pairs_changed(self) -> bool:
        ap = self._all_pairs
        if self._ap_sig is None:
            return ap is not None  # set from outside
        return ap is None or self._ap_sig != (id(ap), _all_pairs_signature(ap))


class _Workspace:
    """The model, run context and checkpoint context every probe of an analysis shares, and the
    checks, after each probe, that it left them as it found them (else they are rebuilt)."""

    def __init__(self, run: Run, final: CheckpointInfo):
        self.run = run
        self.final = final
        self.model: Any = None
        self.ck: CheckpointInfo | None = None
        self.ctx: _GuardedContext | None = None
        self._new_run_context()

    # -- building ------------------------------------------------------------------------------
    def _new_run_context(self) -> None:
        self.run_ctx = _run_context(self.run, self.final)
        rc = self.run_ctx
        self._rc_ids = tuple(id(getattr(rc, k, None)) for k in (*_RUN_TENSORS, *_RUN_OBJECTS))
        self._rc_tensors = {k: getattr(rc, k).clone() for k in _RUN_TENSORS}
        d = rc.data
        self._rc_arrays = {k: getattr(d, k).copy() for k in ("pairs", "labels", "train_idx",
                                                              "test_idx")}

    def _new_model(self) -> None:
        from mechgrok.models import build_model

        self.model = build_model(self.run.config).eval()

    def load(self, ck: CheckpointInfo) -> None:
        """Load a checkpoint into the shared model (a CheckpointError when it is bad)."""
        if self.model is None:
            self._new_model()
        self.ck = None
        self.run.load_into(self.model, ck)
        self.ck = ck
        self._snapshot()

    def _snapshot(self) -> None:
        self._mods = list(self.model.named_modules())
        self._structure = _structure(self._mods)
        self._tensors = [(f"{name}.{k}" if name else k, t) for name, m in self._mods
                         for k, t in (*m._parameters.items(), *m._buffers.items())
                         if t is not None]
        self._values = [t.detach().clone() for _, t in self._tensors]
        self.ctx = _GuardedContext(self.run_ctx, self.ck, self.model)

    # -- checking ------------------------------------------------------------------------------
    def _model_change(self) -> str | None:
        if _structure(self._mods) != self._structure:
            return "its modules, parameters, hooks or mode"
        for (name, t), v in zip(self._tensors, self._values, strict=True):
            if not _same(t.detach(), v):
                return name
        return None

    def _run_context_changed(self) -> bool:
        rc = self.run_ctx
        if tuple(id(getattr(rc, k, None)) for k in (*_RUN_TENSORS, *_RUN_OBJECTS)) != self._rc_ids:
            return True
        if not all(_same(getattr(rc, k), v) for k, v in self._rc_tensors.items()):
            return True
        import numpy as np

        return not all(np.array_equal(getattr(rc.data, k), v) for k, v in self._rc_arrays.items())

    def check(self) -> list[str]:
        """What the last probe changed of what the others share, each rebuilt (none: [])."""
        import torch

        problems = []
        what = self._model_change() if self.ck is not None else None
        if what is not None:
            problems.append(f"it modified the model ({what}), which the other probes share; the "
                            f"checkpoint was loaded again for them")
            self._new_model()
            with torch.no_grad():
                self.run.load_into(self.model, self.ck)
        if self._run_context_changed():
            problems.append("it modified the run's shared data (ctx.run), which the other probes "
                            "share; it was made again for them")
            self._new_run_context()
        if self.ctx is not None and self.ctx.all_pairs_changed() and what is None:
            problems.append("it modified the shared all-pairs results (ctx.all_pairs()); they "
                            "were computed again for the other probes")
        if problems and self.ck is not None:
            self._snapshot()
        return problems


@contextlib.contextmanager
def _torch_state() -> Iterator[None]:
    """Put back torch's global settings a probe may have changed."""
    import torch

    dtype, grad, threads = torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _failure(e: BaseException) -> str:
    """An error record's text for anything a probe raised (never KeyboardInterrupt)."""
    if isinstance(e, MechgrokError):
        return str(e)
    if isinstance(e, SystemExit):
        return (f"SystemExit({e.code!r}): the probe called sys.exit() (a probe returns a dict, "
                f"or raises)")
    return f"{type(e).__name__}: {e}"


def _run_one(p: Probe, ctx: CheckpointContext) -> tuple[str, Any]:
    """One probe on one checkpoint, as every caller runs it (under ``no_grad`` unless it needs
    gradients, torch's global state restored, its output checked): ``("ok", ProbeOutput)``,
    ``("n/a", reason)`` or ``("error", text)``. Only KeyboardInterrupt propagates."""
    import torch

    try:
        with _torch_state(), (torch.no_grad() if "grad" not in p.needs
                              else contextlib.nullcontext()):
            return "ok", check_output(p, p.compute(ctx))
    except NotApplicable as e:
        return "n/a", str(e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a probe's bug (or exit) must not stop the others
        return "error", _failure(e)


def _compute(ws: _Workspace, ck: CheckpointInfo, probes: list[Probe], rd: _RunDeps,
             ids: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every probe in ``probes`` on one checkpoint: (records, arrays). Never raises for a probe's
    failure or a bad checkpoint (only for KeyboardInterrupt): those become ``error`` records."""
    base = {"epoch": ck.epoch, "step": ck.step}

    def rec_for(p: Probe, uses_final: bool) -> dict[str, Any]:
        return {**base, "probe": p.name, "probe_id": ids[p.name],
                "deps": rd.for_record(ck.epoch, uses_final or _uses_final(p))}

    try:
        ws.load(ck)
    except CheckpointError as e:
        return [{**rec_for(p, False), "status": "error", "error": str(e)} for p in probes], {}
    records: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}
    for p in probes:
        ws.run_ctx.used_final = False
        new_arrays: dict[str, Any] = {}
        status, out = _run_one(p, ws.ctx)
        if status == "ok":
            result: dict[str, Any] = {"status": "ok", "values": out.scalars,
                                      "arrays": sorted(out.arrays)}
            new_arrays = {f"{p.name}.{k}": v for k, v in out.arrays.items()}
        else:
            result = {"status": status, "reason" if status == "n/a" else "error": out}
        rec = rec_for(p, ws.run_ctx.used_final)
        problems = ws.check()
        if problems:
            result = {"status": "error", "error": "; ".join(problems)}
            new_arrays = {}
        rec.update(result)
        records.append(rec)
        arrays.update(new_arrays)
    return records, arrays


def compute_checkpoint(run: Run, run_ctx: RunContext, model: Any, ck: CheckpointInfo,
                       probes: list[Probe]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every probe in ``probes`` on one checkpoint: (records, arrays), as :func:`analyze` computes
    them (``run_ctx`` and ``model`` are kept for compatibility; the probes get their own)."""
    ws = _Workspace(run, run.checkpoint())
    return _compute(ws, ck, probes, _RunDeps.of(run), {p.name: _identity(p) for p in probes})


def _identity(p: Probe) -> str:
    try:
        return probe_identity(p)
    except Exception:  # an object inspect cannot read: its class and name, at least
        return f"{type(p).__module__}:{type(p).__qualname__}#name={p.name}"


def analyze(run: Run | str | Path, probes: Sequence[str | Probe] | None = None, *,
            force: bool = False, progress: bool | None = None,
            on_checkpoint: Callable[[CheckpointInfo], None] | None = None,
            verdict_rules: Any = None, workers: int = 1) -> AnalysisResult:
    """Run probes over every checkpoint of a run; store what was missing or stale; update the
    summary.

    ``verdict_rules`` (a :class:`~mechgrok.probes.clockpizza.VerdictRules`) sets the clock/pizza
    thresholds the summary applies to the stored raw numbers (default: its documented defaults).

    ``workers`` > 1 computes checkpoints in that many worker processes (``mechgrok analyze
    --workers``; the CLI's default is the cores available). The measures table, the arrays and
    the summary are byte-for-byte the same for any number of workers: every checkpoint is
    computed with :data:`ANALYSIS_THREADS` torch thread(s) whichever process computes it, and the
    records are written in the same order. Probes that cannot be sent to another process (a
    lambda, a class defined inside a function) run in this process instead, which
    :attr:`AnalysisResult.workers` says. Workers are spawned processes: a script that calls
    ``analyze(..., workers=N)`` must do so under ``if __name__ == "__main__":``.
    """
    t0 = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise ConfigError(f"workers must be a number of processes from 1 to 1024, got "
                          f"{workers!r}")
    run = run if isinstance(run, Run) else Run(run)
    selected = resolve_probes(probes)
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise RunDirError(f"run {run.path} has no checkpoints to analyse (train it first, or "
                          f"wait for its first checkpoint)")
    folder = run.path / ANALYSIS_DIR
    for d in (folder, folder / ARRAYS_DIR):  # every write stays inside the run directory
        if d.is_symlink():
            raise RunDirError(f"{d} is a symlink; mechgrok writes its analysis only inside the "
                              f"run directory: replace it with a folder, then analyse again")
    lock = _Lock(folder)
    try:
        sentinel = _Sentinel(run, folder, checkpoints)
        with _threads(ANALYSIS_THREADS):
            return _analyze(run, checkpoints, selected, folder, force, progress, on_checkpoint,
                            t0, verdict_rules, sentinel, workers)
    finally:
        lock.close()


def _plan(run: Run, checkpoints: list[CheckpointInfo], selected: list[Probe],
          records: dict[tuple[int, str], dict[str, Any]], force: bool, rd: _RunDeps,
          ids: dict[str, str]) -> tuple[list[tuple[CheckpointInfo, list[Probe]]], int, int]:
    """(checkpoint, probes to compute) in the order to compute them (the final checkpoint first:
    the key frequencies every other checkpoint reuses come from it), reused and stale counts."""
    order = [checkpoints[-1], *checkpoints[:-1]]
    plan = []
    reused = stale = 0
    for ck in order:
        todo = []
        for p in selected:
            ok = None if force else _reusable(records.get((ck.epoch, p.name)), rd, ids[p.name],
                                              _uses_final(p))
            if ok:
                reused += 1
                continue
            stale += ok is False
            todo.append(p)
        plan.append((ck, todo))
    return plan, reused, stale


def pending(run: Run | str | Path, probes: Sequence[str | Probe] | None = None) -> int:
    """How many (checkpoint, probe) records :func:`analyze` would compute now: missing, stale or
    failed ones. Reads the run and its records only (0: the analysis is up to date)."""
    run = run if isinstance(run, Run) else Run(run)
    selected = resolve_probes(probes)
    checkpoints = run.checkpoints()
    if not checkpoints:
        return 0
    records = _records(run.path / ANALYSIS_DIR / MEASURES_FILE)
    plan, _, _ = _plan(run, checkpoints, selected, records, False, _RunDeps.of(run, checkpoints),
                       {p.name: _identity(p) for p in selected})
    return sum(len(todo) for _, todo in plan)


def _analyze(run: Run, checkpoints: list[CheckpointInfo], selected: list[Probe], folder: Path,
             force: bool, progress: bool | None,
             on_checkpoint: Callable[[CheckpointInfo], None] | None, t0: float,
             verdict_rules: Any, sentinel: _Sentinel, workers: int = 1) -> AnalysisResult:
    mpath = folder / MEASURES_FILE
    sentinel.check()
    records = _records(mpath)
    atomic_write_bytes(mpath, "".join(json_dumps(r) + "\n" for r in records.values()).encode())
    rd = _RunDeps.of(run, checkpoints)
    ids = {p.name: _identity(p) for p in selected}
    ws = _Workspace(run, checkpoints[-1])
    res = AnalysisResult(run, [p.name for p in selected], len(checkpoints))
    applicable: list[Probe] = []
    for p in selected:
        error = None
        try:
            with _torch_state():
                reason = p.applies(ws.run_ctx)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # a user's applies() that raises is that probe's failure
            error = f"applies() raised {_failure(e)}"
        else:
            if reason is not None and not isinstance(reason, str):
                error = (f"applies() returned a {type(reason).__name__}; it must return None or "
                         f"the reason it does not apply (a string)")
        problems = ws.check()
        if problems:
            error = "applies(): " + "; ".join(problems)
        if error is not None:
            res.errors.append({"probe": p.name, "epoch": None, "error": error})
        elif reason is None:
            applicable.append(p)
        else:
            res.not_applicable[p.name] = reason

    plan, res.reused, res.stale = _plan(run, checkpoints, selected, records, force, rd, ids)
    by_epoch = {ck.epoch: ck for ck in checkpoints}
    na_records: dict[int, list[dict[str, Any]]] = {}
    work: list[tuple[CheckpointInfo, list[Probe]]] = []
    for ck, todo in plan:
        na_records[ck.epoch] = [
            {"epoch": ck.epoch, "step": ck.step, "probe": p.name, "probe_id": ids[p.name],
             "deps": rd.for_record(ck.epoch, _uses_final(p)), "status": "n/a",
             "reason": res.not_applicable[p.name]} for p in todo if p.name in res.not_applicable]
        todo = [p for p in todo if p in applicable]
        if todo:
            work.append((ck, todo))

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), unit="ckpt", desc=f"analyse {run.id}"[:40], file=sys.stderr)
    written: set[int] = set()

    def store(epoch: int, recs: list[dict[str, Any]], arrays: dict[str, Any]) -> None:
        new = na_records.get(epoch, []) + recs
        sentinel.check()
        _write_arrays(run.path, epoch, arrays, {r["probe"] for r in new})
        _append(mpath, new)
        for r in new:
            records[(r["epoch"], r["probe"])] = r
            if r["status"] == "error":
                res.errors.append({"probe": r["probe"], "epoch": epoch, "error": r["error"]})
        res.computed += len(new)
        written.add(epoch)
        if on_checkpoint is not None:
            on_checkpoint(by_epoch[epoch])
        if bar is not None:
            bar.update(1)

    try:
        for ck, (recs, arrays) in _computed(ws, work, rd, ids, checkpoints, workers, res):
            store(ck.epoch, recs, arrays)
        for ck, _ in plan:  # checkpoints with nothing to compute but n/a records, or nothing at all
            if ck.epoch not in written:
                store(ck.epoch, [], {})
    finally:
        if bar is not None:
            bar.close()
    current = {k: r for k, r in records.items()
               if rd.holds(r) and (k[1] not in ids or r.get("probe_id") == ids[k[1]])}
    res.summary = _summarise(run, ws.run_ctx, current, res, verdict_rules, checkpoints[-1], rd)
    sentinel.check()
    atomic_write_json(folder / SUMMARY_FILE, res.summary)
    res.seconds = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------------------------
# Worker processes (analyze --workers)
# --------------------------------------------------------------------------------------------
#: torch threads every checkpoint is computed with, in whichever process computes it: a matmul's
#: rounding depends on how many threads split it, and the measures must not depend on --workers
ANALYSIS_THREADS = 1
#: fewer checkpoints to compute than this per worker, and fewer workers are started
MIN_CHECKPOINTS_PER_WORKER = 8
_WORKER: dict[str, Any] = {}


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _worker_init(run: Run, checkpoints: list[CheckpointInfo], probes: list[Probe],
                 ids: dict[str, str]) -> None:
    """A worker process's own workspace: the run as the parent read it (its checkpoint list, not
    a newer manifest), the same probes and identities."""
    import signal

    import torch

    # Ctrl-C is the parent's to handle (it stops the workers): no traceback from each worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(ANALYSIS_THREADS)
    _WORKER.update(ws=_Workspace(run, checkpoints[-1]), rd=_RunDeps.of(run, checkpoints),
                   ids=ids, probes={p.name: p for p in probes},
                   cks={c.epoch: c for c in checkpoints})


def _worker_compute(epoch: int, names: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    w = _WORKER
    return _compute(w["ws"], w["cks"][epoch], [w["probes"][n] for n in names], w["rd"], w["ids"])


def _sendable(probes: list[Probe]) -> str | None:
    """None when the probes can be sent to a worker process (serialised the way the process pool
    does; a probe function is sent by reference, checked to lead back to it), else why not."""
    from multiprocessing.reduction import ForkingPickler

    try:
        ForkingPickler.dumps(probes)
    except Exception as e:  # a lambda, a local class, a probe whose module moved
        return f"{type(e).__name__}: {e}"
    return None


def _computed(ws: _Workspace, work: list[tuple[CheckpointInfo, list[Probe]]], rd: _RunDeps,
              ids: dict[str, str], checkpoints: list[CheckpointInfo], workers: int,
              res: AnalysisResult) -> Iterator[tuple[CheckpointInfo, tuple[list, dict]]]:
    """Each checkpoint's (records, arrays), in ``work``'s order: here, or from ``workers``
    processes (results that arrive early wait for their turn, so the table is written in the same
    order either way; what was written stays written if the analysis is interrupted)."""
    # a worker costs a process start and the final key frequencies: worth it from a few
    # checkpoints each
    workers = max(1, min(workers, len(work) // MIN_CHECKPOINTS_PER_WORKER))
    probes = list({p.name: p for _, todo in work for p in todo}.values())
    why = _sendable(probes) if workers > 1 else None
    if why is not None:
        res.workers_note = f"one process: the probes cannot be sent to workers ({why})"
    if workers <= 1 or why is not None:
        res.workers = 1
        for ck, todo in work:
            yield ck, _compute(ws, ck, todo, rd, ids)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    res.workers = workers
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=_worker_init,
                               initargs=(ws.run, checkpoints, probes, ids))
    try:
        futures = [(ck, pool.submit(_worker_compute, ck.epoch, [p.name for p in todo]))
                   for ck, todo in work]
        for ck, fut in futures:
            try:
                out = fut.result()
            except BrokenProcessPool:
                raise MechgrokError(
                    f"an analysis worker process died at epoch {ck.epoch} (killed, out of "
                    f"memory, or it could not start: a script calling analyze(workers=N) must do "
                    f"so under `if __name__ == \"__main__\":`); what was computed before is "
                    f"kept: run the same command again, or with fewer workers") from None
            yield ck, out
    finally:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:  # an interrupted analysis leaves no worker behind
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _summarise(run: Run, run_ctx: RunContext, records: dict, res: AnalysisResult,
               verdict_rules: Any, final: CheckpointInfo, rd: _RunDeps) -> dict[str, Any]:
    from mechgrok.probes.clockpizza import VerdictRules
    from mechgrok.probes.phases import detect_phases, liu_label

    summary: dict[str, Any] = {"kind": "mechgrok.analysis_summary", "schema_version": 1,
                               "run": run.id, "checkpoints": len(run.checkpoints()),
                               "final_checkpoint": rd.final}
    kf_error = None
    try:
        summary["key_frequencies"] = {"epoch": final.epoch, **run_ctx.final_key_frequencies()}
    except NotApplicable as e:
        summary["key_frequencies"] = {"not_applicable": str(e)}
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a missing or corrupt final checkpoint is an error, not "n/a"
        summary["key_frequencies"] = {"epoch": final.epoch, "error": _failure(e)}
        kf_error = {"probe": "key_frequencies", "epoch": final.epoch,
                    "error": f"the final checkpoint's key frequencies could not be found: "
                             f"{_failure(e)}"}
        res.errors.append(kf_error)
    metrics = run.metrics()
    if metrics:
        ex = sorted((e, r["values"].get("excluded_loss")) for (e, name), r in records.items()
                    if name == "restricted" and r["status"] == "ok")
        ex = [(e, v) for e, v in ex if _num(v)]
        phases = detect_phases(
            [m["epoch"] for m in metrics], [m["train_acc"] for m in metrics],
            [m["test_acc"] for m in metrics], [m["test_loss"] for m in metrics],
            [m["sum_sq_weights"] for m in metrics],
            excluded_loss_epochs=[e for e, _ in ex] or None,
            excluded_loss=[v for _, v in ex] or None)
        label, figures = liu_label([m["epoch"] for m in metrics], [m["train_acc"] for m in metrics],
                                   [m["test_acc"] for m in metrics])
        summary["phases"] = phases
        summary["liu_label"] = label
        summary["liu_figures"] = figures
    cp = sorted((e, r["values"]) for (e, name), r in records.items()
                if name == "clock_pizza" and r["status"] == "ok")
    if cp:
        rules = verdict_rules or VerdictRules()
        series = {}
        for e, v in cp:
            raw = (v.get("gradient_symmetricity"), v.get("distance_irrelevance"), v.get("circularity"))
            ok = all(_num(x) and math.isfinite(x) for x in raw)
            series[str(e)] = rules.classify(*raw) if ok else None
        e, v = cp[-1]
        summary["clock_pizza"] = {
            "epoch": e, "verdict": series[str(e)],
            "gradient_symmetricity": v.get("gradient_symmetricity"),
            "distance_irrelevance": v.get("distance_irrelevance"),
            "circularity": v.get("circularity"),
            "rules": {k: getattr(rules, k) for k in ("pizza_gs", "pizza_di", "clock_gs", "clock_di",
                                                      "circ_min")},
            "verdicts": series,
        }
    col = sorted((e, r["values"]) for (e, name), r in records.items()
                 if name == "collapse" and r["status"] == "ok")
    if col:
        from mechgrok.probes.collapse import collapse_status

        e, v = col[-1]
        acc = next((m["test_acc"] for m in reversed(metrics) if m["epoch"] <= e), None)
        sc32, sc64 = v.get("sc_fraction_float32"), v.get("sc_fraction_float64")
        summary["collapse"] = {
            "epoch": e, "sc_fraction_float32": sc32, "sc_fraction_float64": sc64,
            "zero_loss_fraction_float32": v.get("zero_loss_fraction_float32"),
            "zero_loss_fraction_float64": v.get("zero_loss_fraction_float64"),
            "gap_median": v.get("gap_median"), "nlm_cosine": v.get("nlm_cosine"),
            "status": collapse_status(sc32, sc64, acc) if _num(sc32) else None,
        }
    summary["not_applicable"] = res.not_applicable
    status: dict[str, dict[str, int]] = {}
    for (_, name), r in records.items():
        s = status.setdefault(name, {"ok": 0, "n/a": 0, "error": 0})
        s[r["status"]] += 1
    summary["probe_status"] = status
    summary["errors"] = [{"epoch": e, "probe": name, "error": r["error"]}
                         for (e, name), r in sorted(records.items()) if r["status"] == "error"]
    if kf_error is not None:
        summary["errors"].append(kf_error)
    return summary


# --------------------------------------------------------------------------------------------
# Any model object (the GrokModel protocol)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ModelRun:
    """What a probe's run context needs of a :class:`Run` when there is no run directory: the
    config :func:`analyze_model` builds from its arguments."""

    config: Any
    id: str = "<model>"


@contextlib.contextmanager
def _eval_mode(*models: Any) -> Iterator[None]:
    """Every module of ``models`` in eval mode for the block, each put back as it was."""
    import torch

    modes = [(m, m.training) for model in models if isinstance(model, torch.nn.Module)
             for m in model.modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _probe_on_model(p: Probe, ctx: CheckpointContext, model: Any) -> dict[str, Any]:
    """One probe on an in-memory model, as :func:`_compute` runs it on a checkpoint: its dict,
    ``{"n/a": reason}`` or ``{"error": text}``."""

    from mechgrok.models.protocol import MEMBERS, OPTIONAL_MEMBERS, PROBE_MEMBERS

    try:
        with _torch_state():
            reason = p.applies(ctx.run)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a user's applies() that raises is that probe's failure
        return {"error": f"applies() raised {_failure(e)}"}
    if reason is not None:
        if not isinstance(reason, str):
            return {"error": f"applies() returned a {type(reason).__name__}; it must return None "
                             f"or the reason it does not apply (a string)"}
        return {"n/a": reason}
    if getattr(p, "builtin", False):
        lacking = [m for m in PROBE_MEMBERS.get(p.name, ())
                   if m in OPTIONAL_MEMBERS and not callable(getattr(model, m, None))]
        if lacking:
            return {"n/a": f"the model has no {', '.join(lacking)} "
                           f"({'; '.join(MEMBERS[m] for m in lacking)})"}
    status, out = _run_one(p, ctx)
    return {**out.scalars, **out.arrays} if status == "ok" else {status: out}


def analyze_model(model: Any, task: str = "add", p: int | None = 113, *, frac_train: float = 0.3,
                  data_seed: int = 0, split: tuple[Any, Any] | None = None,
                  probes: Sequence[str | Probe] | None = None, final_model: Any = None,
                  epoch: int = 0, train_config: Any = None) -> dict[str, dict[str, Any]]:
    """Run probes on one model object that offers the
    :class:`~mechgrok.models.protocol.GrokModel` protocol (your own class, or a mechgrok model),
    with no run directory; nothing is stored.

    * ``task``, ``p``: the task the model computes (``mechgrok tasks``); ``model.n_classes``
      must be its number of elements.
    * The train/test split (the ``loss``, ``restricted`` and ``collapse`` probes use it):
      ``split = (train_idx, test_idx)``, indices into the task's pairs in row-major order
      (pair ``(x, y)`` is ``x·p + y`` for the modular tasks), or else drawn as training does
      from ``frac_train`` and ``data_seed``.
    * ``probes``: names, ``module:Name`` specs or Probe objects (default: every registered probe).
    * ``final_model``: the model the key frequencies are taken from (the restricted/excluded
      loss use the final checkpoint's; default ``model`` itself). ``epoch`` is the checkpoint's
      epoch probes see (``ctx.epoch``).
    * ``train_config``: a :class:`~mechgrok.config.TrainConfig`, for the probes that read the
      training settings (``collapse``: the loss and its dtype); default ``TrainConfig()``.
      ``ctx.config.model`` is mechgrok's default model config: it does not describe ``model``.

    The models are put in eval mode for the call (and back as they were after). Probes run as
    ``mechgrok analyze`` runs them (the same probe objects, contexts, key-frequency finder and
    result checks). Returns ``{probe: results}`` in the probes' order, where ``results`` is the
    probe's ``{name: number or numpy array}``; ``{"n/a": reason}`` for a probe that does not apply
    (the task is not add or sub for the Fourier probes; ``collapse`` on a model without
    ``forward_last``); ``{"error": "<what it raised>"}`` for a probe that failed. A model that
    does not offer the protocol is a :class:`MechgrokError` naming what it lacks.
    """
    import dataclasses

    from mechgrok.config import RunConfig, TaskConfig, TrainConfig
    from mechgrok.models.protocol import check_model
    from mechgrok.probes.builtin import final_key_frequency_finder
    from mechgrok.tasks import checked_split, make_dataset

    final_model = model if final_model is None else final_model
    check_model(model)
    check_model(final_model)
    tcfg = TaskConfig(name=task, p=p, frac_train=frac_train, data_seed=data_seed)
    data = make_dataset(tcfg.name, tcfg.p, tcfg.frac_train, tcfg.data_seed)
    if split is not None:
        if not isinstance(split, (tuple, list)) or len(split) != 2:
            raise ConfigError("split must be a pair (train_idx, test_idx)")
        n_pairs = len(data.pairs)
        train_idx, test_idx = checked_split(split[0], split[1], n_pairs, complete=False)
        data = dataclasses.replace(data, train_idx=train_idx, test_idx=test_idx)
        tcfg = tcfg.replace(frac_train=len(train_idx) / n_pairs)
    for m in (model, final_model):
        if m.n_classes != data.n:
            raise ConfigError(f"{type(m).__name__} has n_classes = {m.n_classes}, but task "
                              f"{tcfg.name!r}{'' if tcfg.p is None else f' mod {tcfg.p}'} has "
                              f"{data.n} answer classes")
    if train_config is None:
        train_config = TrainConfig()
    elif not isinstance(train_config, TrainConfig):
        raise ConfigError(f"train_config must be a mechgrok.config.TrainConfig, got "
                          f"{type(train_config).__name__}")
    config = RunConfig(task=tcfg, train=train_config)
    selected = resolve_probes(probes)

    def finder() -> dict[str, list[int]]:
        return final_key_frequency_finder(run_ctx, final_model)

    run_ctx = _AnalysisRunContext(_ModelRun(config), data, finder)
    ck = CheckpointInfo(epoch=epoch, step=epoch, file="", size=0, sha256="")
    ctx = CheckpointContext(run_ctx, ck, model)
    with _eval_mode(model, final_model):
        return {pr.name: _probe_on_model(pr, ctx, model) for pr in selected}

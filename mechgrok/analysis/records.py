"""Reading what an analysis stored: the measures table, its records, arrays and summary (the
format itself is :mod:`mechgrok.store.analysis`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechgrok.analysis.deps import RunDeps
from mechgrok.errors import MechgrokError
from mechgrok.store import Run
from mechgrok.store.analysis import read_arrays, read_records, read_summary

__all__ = ["load_arrays", "load_records", "load_summary", "measures_dataframe", "measures_table"]


def _as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


def load_records(run: Run | str | Path, skipped: list[int] | None = None
                 ) -> dict[tuple[int, str], dict[str, Any]]:
    """Every well-formed record, the latest per (epoch, probe), stale or not; the line numbers
    of lines that are not such records are added to ``skipped``."""
    return read_records(_as_run(run).path, skipped)


def measures_table(run: Run | str | Path, *, include_stale: bool = False) -> list[dict[str, Any]]:
    """One row per (run, step): ``run``, ``epoch``, ``step``, ``<probe>.<name>`` scalars and
    ``<probe>.status``, sorted by epoch. Records whose checkpoint, split, config or final
    checkpoint no longer match the run are left out unless ``include_stale`` (the probe's code is
    not checked here: :func:`~mechgrok.analysis.analyze` does that)."""
    run = _as_run(run)
    rd = RunDeps.of(run)
    rows: dict[int, dict[str, Any]] = {}
    for (epoch, name), r in sorted(load_records(run).items()):
        if not include_stale and not rd.holds(r):
            continue
        row = rows.setdefault(epoch, {"run": run.id, "epoch": epoch, "step": r.get("step")})
        row[f"{name}.status"] = r["status"]
        for k, v in (r.get("values") or {}).items():
            row[f"{name}.{k}"] = v
    return [rows[e] for e in sorted(rows)]


def measures_dataframe(run: Run | str | Path) -> Any:
    """The measures table as a pandas DataFrame (pandas must be installed)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        raise MechgrokError("pandas is not installed: pip install pandas") from None
    return pd.DataFrame(measures_table(run))


def load_arrays(run: Run | str | Path, epoch: int) -> dict[str, Any]:
    """The arrays stored for one checkpoint, as numpy arrays named ``<probe>.<name>``."""
    return read_arrays(_as_run(run).path, epoch)


def load_summary(run: Run | str | Path) -> dict[str, Any]:
    """The run's ``analysis/summary.json`` ({} when it has not been analysed); a file that is not
    a JSON object is a :class:`RunDirError` naming it."""
    return read_summary(_as_run(run).path)

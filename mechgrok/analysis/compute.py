"""Running probes on a checkpoint: each probe isolated from the others (a probe that raises
anything, ``SystemExit`` included, or changes what the others share gets an ``error`` record;
only ``KeyboardInterrupt`` stops the analysis), torch's global state restored after each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mechgrok.analysis.context import Workspace, run_context
from mechgrok.analysis.deps import RunDeps, uses_final
from mechgrok.analysis.identity import record_identity
from mechgrok.errors import CheckpointError, MechgrokError
from mechgrok.probes import NotApplicable, Probe, get_probe, load_probe, registry
from mechgrok.probes.base import CheckpointContext, RunContext, check_output
from mechgrok.store import CheckpointInfo, Run

__all__ = ["ask_applies", "compute", "compute_checkpoint", "failure", "resolve_probes", "run_one", "run_probe",
           "torch_state"]


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
    run_ctx = run_context(run)
    reason = p.applies(run_ctx)
    if reason is not None:
        raise NotApplicable(reason)
    ck = run.checkpoint(epoch)
    ctx = CheckpointContext(run_ctx, ck, run.load_model(ck))
    out = check_output(p, p.compute(ctx))
    return {**out.scalars, **out.arrays}


@contextlib.contextmanager
def torch_state() -> Iterator[None]:
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


def failure(e: BaseException) -> str:
    """An error record's text for anything a probe raised (never KeyboardInterrupt)."""
    if isinstance(e, MechgrokError):
        return str(e)
    if isinstance(e, SystemExit):
        return (f"SystemExit({e.code!r}): the probe called sys.exit() (a probe returns a dict, "
                f"or raises)")
    return f"{type(e).__name__}: {e}"


def ask_applies(p: Probe, run_ctx: RunContext) -> tuple[str | None, str | None]:
    """Ask a probe whether it applies to a run: (why not, or None; what went wrong asking it,
    or None). A user's ``applies()`` that raises or returns a non-string is that probe's failure,
    never the analysis's."""
    reason = None
    try:
        with torch_state():
            reason = p.applies(run_ctx)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        return None, f"applies() raised {failure(e)}"
    if reason is not None and not isinstance(reason, str):
        return None, (f"applies() returned a {type(reason).__name__}; it must return None or "
                      f"the reason it does not apply (a string)")
    return reason, None


def run_one(p: Probe, ctx: CheckpointContext) -> tuple[str, Any]:
    """One probe on one checkpoint, as every caller runs it (under ``no_grad`` unless it needs
    gradients, torch's global state restored, its output checked): ``("ok", ProbeOutput)``,
    ``("n/a", reason)`` or ``("error", text)``. Only KeyboardInterrupt propagates."""
    import torch

    try:
        with torch_state(), (torch.no_grad() if "grad" not in p.needs
                             else contextlib.nullcontext()):
            return "ok", check_output(p, p.compute(ctx))
    except NotApplicable as e:
        return "n/a", str(e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a probe's bug (or exit) must not stop the others
        return "error", failure(e)


def compute(ws: Workspace, ck: CheckpointInfo, probes: list[Probe], rd: RunDeps,
            ids: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every probe in ``probes`` on one checkpoint: (records, arrays). Never raises for a probe's
    failure or a bad checkpoint (only for KeyboardInterrupt): those become ``error`` records."""
    base = {"epoch": ck.epoch, "step": ck.step}

    def rec_for(p: Probe, used_final: bool) -> dict[str, Any]:
        return {**base, "probe": p.name, "probe_id": ids[p.name],
                "deps": rd.for_record(ck.epoch, used_final or uses_final(p))}

    try:
        ws.load(ck)
    except CheckpointError as e:
        return [{**rec_for(p, False), "status": "error", "error": str(e)} for p in probes], {}
    records: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}
    for p in probes:
        ws.run_ctx.used_final = False
        new_arrays: dict[str, Any] = {}
        status, out = run_one(p, ws.context)
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
    """Every probe in ``probes`` on one checkpoint: (records, arrays), as
    :func:`~mechgrok.analysis.analyze` computes them (``run_ctx`` and ``model`` are kept for
    compatibility; the probes get their own)."""
    ws = Workspace(run, run.checkpoint())
    return compute(ws, ck, probes, RunDeps.of(run), {p.name: record_identity(p) for p in probes})

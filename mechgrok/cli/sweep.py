"""``mechgrok sweep``: expand a grid, train and analyse every run not yet done (locally or on
Ray), write the phase-diagram report; with ``--dry-run``, list the runs and stop."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mechgrok.cli.flags import overrides

__all__ = ["cmd_sweep"]


def _fmt_result(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"FAILED {r['run_id']}: {r.get('error', 'failed')}"
    fin, g = r.get("final") or {}, r.get("grok") or {}
    acc = fin.get("test_acc")
    line = (f"{'trained' if r.get('trained') else 'analysed'} {r['run_id']}: {r.get('status')} "
            f"at epoch {fin.get('epoch')}, test acc {'—' if acc is None else f'{acc:.3f}'}")
    if g.get("test_99") is not None:
        delay = g["test_99"] - g["train_99"] if g.get("train_99") is not None else None
        line += f", generalised at {g['test_99']} (delay {delay})"
    elif g.get("train_99") is not None:
        line += f", memorised at {g['train_99']}, not generalised"
    return line + f" ({r.get('seconds', 0):.1f} s)"


def _dry_run(args: argparse.Namespace, spec: Any) -> int:
    """Every check ``run_sweep`` makes before creating anything (probes included); then the
    runs the grid expands to."""
    from mechgrok.sweep import validate_sweep

    points = validate_sweep(spec, args.max_runs, backend=args.backend, workers=args.workers,
                            address=args.address, retries=args.retries,
                            analyse=not args.no_analyze, vmap_seeds=args.vmap_seeds)
    axes = " × ".join(f"{k} ({len(v)})" for k, v in spec.axes) or "no axes"
    seeds = f" × {len(spec.seeds)} seeds" if spec.seeds else ""
    print(f"sweep {spec.name}: {axes}{seeds} = {len(points)} runs")
    for pt in points:
        where = ", ".join(f"{k}={v}" for k, v in pt.point.items())
        print(f"  {pt.run_id}  {where} seed={pt.seed}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Expand a grid, train and analyse every run not yet done, write the phase-diagram report."""
    from mechgrok.sweep import load_sweep_spec, run_sweep, settle_checkpoints

    spec = load_sweep_spec(args.file, name=args.name).with_settings(args.preset, overrides(args))
    spec = settle_checkpoints(spec, args.out_dir)
    if args.dry_run:
        return _dry_run(args, spec)

    def on_result(r: dict[str, Any], i: int, n: int) -> None:
        print(f"[{i}/{n}] {_fmt_result(r)}", flush=True)

    res = run_sweep(spec, args.out_dir, backend=args.backend, workers=args.workers,
                    address=args.address, max_runs=args.max_runs, retries=args.retries,
                    analyse=not args.no_analyze, vmap_seeds=args.vmap_seeds,
                    on_result=on_result)
    print(f"sweep {spec.name}: {len(res.runs)} runs: {len(res.trained)} trained now, "
          f"{len(res.skipped)} already done, {len(res.failed)} failed ({res.seconds:.1f} s); "
          f"{res.sweep_dir}")
    if not args.no_report:
        from mechgrok.report import write_sweep_report

        print(f"report: {write_sweep_report(res.sweep_dir, reports_dir=args.reports_dir)}")
    if res.failed:
        first = next(iter(res.failed.items()))
        print(f"mechgrok: error: {len(res.failed)} of {len(res.runs)} runs failed (first: "
              f"{first[0]}: {first[1]}); the others are done: fix the cause and relaunch the "
              f"same command to retry the failed ones", file=sys.stderr)
        return 1
    return 0

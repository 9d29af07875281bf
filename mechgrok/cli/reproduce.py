"""``mechgrok reproduce``: with no name, the catalogue (each entry's paper, claims and expected
time here at each budget); with a name, train and analyse its runs at a budget (resumable,
like any sweep), judge every claim, and write ``reports/reproduce-<name>.html``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["cmd_reproduce"]


def _catalogue() -> int:
    from mechgrok.reproduce import BUDGETS, CATALOGUE
    from mechgrok.reproduce.page import duration

    for e in CATALOGUE.values():
        print(f"{e.name}: {e.paper.short}, “{e.paper.title}”, {e.paper.where}")
        print(f"  checks: {e.summary}")
        print(f"  claims: {', '.join(c.id for c in e.claims)}")
        for b in BUDGETS:
            if b in e.budgets:
                bud = e.budgets[b]
                print(f"  {b:<6} ~{duration(bud.seconds)} here: {bud.time_note}")
    print("\nmechgrok reproduce NAME [--budget quick|paper] trains, analyses and writes "
          "reports/reproduce-NAME.html")
    return 0


def _fmt_result(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"FAILED {r['run_id']}: {r.get('error', 'failed')}"
    fin = r.get("final") or {}
    acc = fin.get("test_acc")
    return (f"{'trained' if r.get('trained') else 'analysed'} {r['run_id']}: epoch "
            f"{fin.get('epoch')}, test acc {'—' if acc is None else f'{acc:.3f}'} "
            f"({r.get('seconds', 0):.1f} s)")


def cmd_reproduce(args: argparse.Namespace) -> int:
    """List the catalogue, or run one entry at a budget and report every claim's verdict."""
    if args.name is None:
        return _catalogue()
    from mechgrok.reproduce import get_entry, reproduce
    from mechgrok.reproduce.page import duration

    entry = get_entry(args.name)  # a wrong name fails before anything is imported or trained
    entry.budget(args.budget)

    def on_result(r: dict[str, Any], i: int, n: int) -> None:
        print(f"[{i}/{n}] {_fmt_result(r)}", flush=True)

    rep = reproduce(entry, args.budget, args.out_dir, args.reports_dir, backend=args.backend,
                    workers=args.workers, address=args.address, on_result=on_result)
    print(f"{entry.name} ({entry.paper.short}), {args.budget} budget: "
          f"{len(rep.evidence.runs)} runs done ({rep.trained} trained now), "
          f"{duration(rep.seconds)} wall, {duration(rep.compute_seconds)} recorded by the runs")
    w = max(len(r.claim.id) for r in rep.claims)
    for r in rep.claims:
        print(f"  {r.claim.id:<{w}}  {r.verdict}: {r.value}")
    print(f"report: {rep.report}")
    if rep.failed:
        first = next(iter(rep.failed.items()))
        print(f"mechgrok: error: {len(rep.failed)} runs failed (first: {first[0]}: {first[1]}); "
              f"the claims were judged on the runs that are done: fix the cause and relaunch "
              f"the same command", file=sys.stderr)
        return 1
    return 0

"""``mechgrok probes``, ``analyze``, ``report`` and ``compare``: the commands that read runs (and
sweeps) already on disk, and what they print."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mechgrok.errors import MechgrokError

__all__ = ["cmd_analyze", "cmd_compare", "cmd_probes", "cmd_report", "print_analysis"]


def cmd_probes(args: argparse.Namespace) -> int:
    from mechgrok.probes import registry, registry_problems

    reg = registry()
    w = max(len(n) for n in reg)
    for name, p in reg.items():
        needs = f" [needs: {', '.join(p.needs)}]" if p.needs else ""
        origin = "" if p.builtin else " (installed)"
        print(f"{name:<{w}}  {p.description}{needs}{origin}")
    for line in registry_problems():
        print(f"mechgrok: warning: {line}", file=sys.stderr)
    return 0


def _fmt_freqs(v: Any) -> str:
    return "[" + ", ".join(str(k) for k in v) + "]" if isinstance(v, list) else str(v)


def _print_key_frequencies(s: dict[str, Any], where: str = "") -> None:
    kf = s.get("key_frequencies", {})
    if "not_applicable" in kf:
        print(f"key frequencies: n/a ({kf['not_applicable']})")
    elif "error" in kf:
        print(f"key frequencies: error ({kf['error']})")
    elif "components" in kf:
        print(f"key 2-D components at epoch {kf['epoch']}: {len(kf['components'])} frequency "
              f"pairs (k_x, k_y) carry 90 % of the logits' power (no circuit is claimed)")
    elif "irreps" in kf:
        print(f"key irreps at epoch {kf['epoch']} (logit similarity > 0.005): "
              f"{_fmt_freqs(kf['irreps'])}")
    elif kf:
        print(f"key frequencies{where} at epoch {kf['epoch']}: neuron clusters "
              f"{_fmt_freqs(kf['neurons'])} | embedding {_fmt_freqs(kf['embedding'])} | logit map "
              f"{_fmt_freqs(kf['logit_map'])}")


def _print_probe_headlines(s: dict[str, Any]) -> None:
    """Each self-describing probe's headline (``Probe.headline``)."""
    for name, ps in (s.get("probes") or {}).items():
        if isinstance(ps, dict) and ps.get("headline"):
            print(f"{name}: {ps['headline']}")


def _print_phases(s: dict[str, Any]) -> None:
    ph = s.get("phases")
    if ph:
        def ep(k: str) -> str:
            return "—" if ph.get(k) is None else str(ph[k])

        print(f"phases: memorisation ends {ep('memorisation_end')}, circuit formation ends "
              f"{ep('circuit_formation_end')}, cleanup ends {ep('cleanup_end')}; grokked at "
              f"{ep('grokking_epoch')} (delay {ep('grokking_delay')} epochs); "
              f"Liu et al. label: {s.get('liu_label')}")
        for note in ph.get("notes", []):
            print(f"  note: {note}")
    cp = s.get("clock_pizza")
    if cp:
        def num(k: str) -> str:
            return "nan" if cp.get(k) is None else f"{cp[k]:.3f}"

        print(f"clock or pizza at epoch {cp['epoch']}: {cp['verdict']} (gradient symmetricity "
              f"{num('gradient_symmetricity')}, distance irrelevance "
              f"{num('distance_irrelevance')}, circularity {num('circularity')})")
    col = s.get("collapse")
    if col and col.get("status"):
        print(f"softmax collapse at epoch {col['epoch']}: {col['status']}")


def _print_problems(res: Any) -> None:
    """The probes that did not apply (one line per reason) and those that failed (stderr)."""
    reasons: dict[str, list[str]] = {}
    for name, why in res.not_applicable.items():
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        print(f"n/a: {', '.join(names)}: {why}")
    by_probe: dict[str, list[dict]] = {}
    for e in res.errors:
        by_probe.setdefault(e["probe"], []).append(e)
    for name, errs in by_probe.items():
        first = errs[0]
        where = f"epoch {first['epoch']}" if first["epoch"] is not None else "setup"
        print(f"mechgrok: error: probe {name!r} failed on {len(errs)} checkpoint"
              f"{'s' if len(errs) > 1 else ''} of run {res.run.id} (first at {where}: "
              f"{first['error']}); the other probes and checkpoints were analysed",
              file=sys.stderr)


def _basis_note(run: Any) -> str:
    """Where the key frequencies live when it is not Z_p itself (Z_p* by discrete log)."""
    from mechgrok.tasks import get_task

    task = getattr(getattr(run, "config", None), "task", None)
    if task is not None and get_task(task.name).algebra.kind == "multiplicative":
        return f" (over Z_{task.p - 1}, discrete-log order)"
    return ""


def print_analysis(res: Any) -> None:
    """What ``analyze`` (and ``run``) print about an :class:`~mechgrok.analysis.AnalysisResult`."""
    from mechgrok.store import measures_path

    workers = f", {res.workers} worker processes" if res.workers > 1 else ""
    print(f"analysed {res.run.path}: {res.checkpoints} checkpoints × {len(res.probes)} probes "
          f"({res.computed} computed{f', {res.stale} of them stale' if res.stale else ''}, "
          f"{res.reused} already there) in {res.seconds:.1f} s{workers}")
    if res.workers_note:
        print(f"note: {res.workers_note}")
    _print_key_frequencies(res.summary, _basis_note(res.run))
    _print_phases(res.summary)
    _print_probe_headlines(res.summary)
    _print_problems(res)
    print(f"measures: {measures_path(res.run.path)}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from mechgrok.store import Run, resolve_run_path

    run = Run(resolve_run_path(args.run, args.out_dir))  # validate before torch loads
    from mechgrok.analysis import analyze
    from mechgrok.probes.clockpizza import VerdictRules
    from mechgrok.resources import available_cores

    rules = VerdictRules(**{k: getattr(args, k) for k in ("pizza_gs", "pizza_di", "clock_gs",
                                                          "clock_di", "circ_min")
                            if getattr(args, k) is not None})
    res = analyze(run, args.probe or None, force=args.force, progress=args.progress,
                  verdict_rules=rules,
                  workers=available_cores() if args.workers is None else args.workers)
    print_analysis(res)
    return 1 if res.errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    from mechgrok.store import Run, resolve_run_path
    from mechgrok.store.sweep import is_sweep_dir

    where = resolve_run_path(args.run, args.out_dir)
    if is_sweep_dir(where):
        from mechgrok.report import write_sweep_report

        axes = [a.strip() for a in args.axes.split(",")] if args.axes else None
        path = write_sweep_report(where, args.out, reports_dir=args.reports_dir, axes=axes)
        print(f"sweep report: {path}")
        return 0
    if args.axes:
        raise MechgrokError("--axes is for a sweep directory")
    run = Run(where)  # one line for a missing/foreign dir
    from mechgrok.report import write_report

    path = write_report(run, args.out, reports_dir=args.reports_dir)
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mechgrok.store import Run, manifest_path, resolve_run_path
    from mechgrok.store.sweep import is_sweep_dir, load_sweep

    runs = []
    for r in args.runs:  # a sweep directory stands for its runs that exist
        where = resolve_run_path(r, args.out_dir)
        if is_sweep_dir(where):
            runs += [Run(x["path"]) for x in load_sweep(where)["runs"]
                     if manifest_path(x["path"]).is_file()]
        else:
            runs.append(Run(where))
    from mechgrok.report import write_comparison

    path = write_comparison(runs, args.out, reports_dir=args.reports_dir)
    print(f"comparison of {len(runs)} runs: {path}")
    return 0

"""Analysis throughput: ``mechgrok analyze`` with every built-in probe on a nanda-shaped run.

Targets: ≤ 90 s for 250 checkpoints on a 2-core CPU, each checkpoint's all-pairs forward computed
once and shared by the probes that need it (issue: probes); ≤ 60 s with ``--workers`` (issue:
scale), timed for 1 and 2 workers in this one run, whose measures tables must be byte-identical.
Issue 13 (every task in its own algebra): the probes it added (``irreps``, ``spectrum2d``) add at
most 30 % to a nanda run's analysis; with ``--preset s5`` (an S5 run, 14,400 pairs) 250
checkpoints take at most 3 minutes.

By default it trains a short run with the ``--preset``'s shapes (``nanda`` by default ; add mod 113,
30 %, one-layer transformer d_model 128, d_mlp 512), ``--epochs`` epochs with a checkpoint every
``--checkpoint-every`` epochs (default 500 × 2 → 251 checkpoints), unless ``--run DIR`` names an
existing run. Then it times, in this one process:

* ``analyze`` with all built-in probes from scratch (``force=True``), end to end: checkpoint
  loading with SHA-256 checks, the final checkpoint's key frequencies, every probe, the writes;
* the same per probe alone (``--per-probe``, on by default; each with ``force=True``), so the
  shared forward's cost shows up in every probe that needs it — the difference between the sum
  of these and the all-probes time is what sharing saves;
* the same without the clock/pizza probes, and without issue 13's probes, so each share shows
  (target: ≤ 30 % more each);
* a re-run with nothing to do (the incremental path).

Reported: seconds, seconds per checkpoint, the projection to 250 checkpoints, and the number of
all-pairs forwards actually run (counted by wrapping ``CheckpointContext.all_pairs``'s compute).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.analysis import analyze, measures_table
from mechgrok.config import resolve_config
from mechgrok.probes import registry
from mechgrok.probes.base import CheckpointContext
from mechgrok.store import Run
from mechgrok.training import train


def count_forwards() -> dict[str, int]:
    """Count the all-pairs forwards the analysis really runs."""
    counter = {"n": 0}
    original = CheckpointContext.all_pairs

    def counted(self: CheckpointContext):
        if self._all_pairs is None:
            counter["n"] += 1
        return original(self)

    CheckpointContext.all_pairs = counted  # type: ignore[method-assign]
    return counter


def probe_costs(run: Run, n_checkpoints: int = 25, rounds: int = 3) -> dict[str, float]:
    """Seconds per checkpoint of the shared all-pairs forward and of each probe, measured in
    this process on ``n_checkpoints`` checkpoints spread over the run, every probe timed right
    after the others on the same checkpoint (so the machine's load hits them alike), best of
    ``rounds``. The probes' own costs add up to the analysis' compute; loading and writing are
    the same whatever the probes."""
    from mechgrok.analysis.compute import run_one
    from mechgrok.analysis.context import run_context
    from mechgrok.probes.base import CheckpointContext
    from mechgrok.report.data import thin

    ctx_run = run_context(run)
    probes = [p for p in registry().values() if p.applies(ctx_run) is None]  # as analyze does
    ctx_run.final_key_frequencies()  # once per analysis: not a per-checkpoint cost
    cks = thin(run.checkpoints(), n_checkpoints)
    best: dict[str, float] = {}
    for _ in range(rounds):
        spent = {name: 0.0 for name in ["all-pairs forward", *(p.name for p in probes)]}
        for ck in cks:
            model = run.load_model(ck)
            ctx = CheckpointContext(ctx_run, ck, model)
            t = time.perf_counter()
            ctx.all_pairs()
            spent["all-pairs forward"] += time.perf_counter() - t
            for p in probes:
                t = time.perf_counter()
                run_one(p, ctx)
                spent[p.name] += time.perf_counter() - t
        for k, v in spent.items():
            best[k] = min(best.get(k, float("inf")), v / len(cks))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="an existing run directory to analyse (default: train one)")
    ap.add_argument("--preset", default="nanda", help="the preset whose shapes are trained "
                    "(default nanda; s5 for issue 13's S5 target)")
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--checkpoint-every", type=int, default=2)
    ap.add_argument("--no-per-probe", dest="per_probe", action="store_false")
    ap.add_argument("--costs-only", action="store_true", help="only the interleaved per-probe "
                    "costs (the robust figure on a shared machine), not the end-to-end timings")
    ap.add_argument("--workers", default="1,2",
                    help="worker counts to time all probes with, in this one run (default 1,2)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mechgrok-analyze-bench-"))
    try:
        if args.run:
            run_path = tmp / "run"
            shutil.copytree(args.run, run_path, ignore=shutil.ignore_patterns("analysis"))
            train_s = None
        else:
            cfg = resolve_config(args.preset, overrides={
                "train.epochs": args.epochs, "train.checkpoint_every": args.checkpoint_every,
                "train.dense_until": 0, "train.eval_every": args.checkpoint_every})
            run_path = tmp / "run"
            t = time.perf_counter()
            train(cfg, run_path, progress=False)
            train_s = time.perf_counter() - t
        run = Run(run_path)
        n_ck = len(run.checkpoints())
        print(f"run: {run.config.task.name} p={run.config.task.p}, {n_ck} checkpoints"
              + (f" (trained in {train_s:.1f} s)" if train_s else ""))
        costs = probe_costs(run)
        new = {"irreps", "spectrum2d"}
        base = sum(v for k, v in costs.items() if k not in new)
        extra = sum(v for k, v in costs.items() if k in new)
        print("per checkpoint, interleaved, best of 3 over 25 checkpoints: " + ", ".join(
            f"{k} {1000 * v:.0f} ms" for k, v in costs.items()))
        print(f"issue 13's probes (irreps, spectrum2d): {1000 * extra:.0f} ms on top of "
              f"{1000 * base:.0f} ms per checkpoint: +{100 * extra / base:.0f} % (target ≤ 30 %)")
        if args.costs_only:
            print(json.dumps({"benchmark": "analyze_throughput", "preset": args.preset,
                              "checkpoints": n_ck, "probe_costs_seconds": costs,
                              "issue13_overhead": extra / base}))
            return 0
        counter = count_forwards()
        load0 = os.getloadavg()[0]
        by_workers: dict[int, float] = {}
        tables: dict[int, bytes] = {}
        for w in [int(x) for x in args.workers.split(",")]:
            t = time.perf_counter()
            res_w = analyze(run, force=True, progress=False, workers=w)
            by_workers[w] = time.perf_counter() - t
            assert not res_w.errors, res_w.errors
            # the current records (force=True appends the new ones to the file after the old)
            tables[w] = json.dumps(measures_table(run), sort_keys=True).encode()
            print(f"analyze, all {len(res_w.probes)} built-in probes, --workers {w} "
                  f"({res_w.workers} used): {by_workers[w]:.1f} s "
                  f"({by_workers[w] / n_ck * 1000:.0f} ms per checkpoint)")
            if w == 1:
                res, forwards = res_w, counter["n"]
        same = len(set(tables.values())) == 1
        print(f"measures table identical across worker counts: {same}")
        all_s = by_workers[1]
        best = min(by_workers.values())
        print(f"one worker: {forwards} all-pairs forwards for {n_ck} checkpoints; fastest: "
              f"{best:.1f} s, {best / n_ck * 250:.1f} s projected for 250 (target ≤ 60 s); "
              f"speed-up {all_s / best:.2f}×")
        # the same without the clock/pizza probes, and without issue 13's (each may add ≤ 30 %)
        from mechgrok.probes.clockpizza import CLOCKPIZZA_PROBES

        groups = {"clock/pizza": {p.name for p in CLOCKPIZZA_PROBES},
                  "issue 13's probes": {"irreps", "spectrum2d"}}
        without: dict[str, float] = {}
        for label, names in groups.items():
            base_probes = [n for n in registry() if n not in names]
            t = time.perf_counter()
            analyze(run, base_probes, force=True, progress=False)
            without[label] = time.perf_counter() - t
            print(f"analyze without {label} ({len(base_probes)} probes): {without[label]:.1f} s; "
                  f"{label} add {100 * (all_s / without[label] - 1):.0f} % (target ≤ 30 %)")
        base_s = without["clock/pizza"]
        t = time.perf_counter()
        again = analyze(run, progress=False)
        rerun_s = time.perf_counter() - t
        print(f"re-run with nothing to compute: {rerun_s:.2f} s ({again.computed} computed)")
        per_probe: dict[str, float] = {}
        if args.per_probe:
            for name in registry():
                t = time.perf_counter()
                analyze(run, [name], force=True, progress=False)
                per_probe[name] = time.perf_counter() - t
                print(f"  {name:<14} alone: {per_probe[name]:.1f} s")
        if args.preset == "s5":
            print(f"S5: {all_s / n_ck * 250:.1f} s projected for 250 checkpoints, one worker "
                  f"(target ≤ 180 s): {'met' if all_s / n_ck * 250 <= 180 else 'NOT met'}")
        projected = all_s / n_ck * 250
        out: dict[str, Any] = {
            "benchmark": "analyze_throughput", "torch": torch.__version__,
            "threads_per_worker": 1, "checkpoints": n_ck,
            "p": run.config.task.p, "d_mlp": getattr(run.config.model, "d_mlp", None),
            "probes": res.probes, "seconds_all_probes": all_s,
            "ms_per_checkpoint": all_s / n_ck * 1000, "projected_seconds_250": projected,
            "all_pairs_forwards": forwards, "rerun_seconds": rerun_s,
            "per_probe_seconds": per_probe,
            "seconds_without_clockpizza": base_s,
            "projected_seconds_250_without_clockpizza": base_s / n_ck * 250,
            "clockpizza_overhead": all_s / base_s - 1,
            "issue13_probes_overhead": all_s / without["issue 13's probes"] - 1,
            "preset": args.preset,
            "sum_of_per_probe_seconds": sum(per_probe.values()) if per_probe else None,
            "train_seconds": train_s, "load_average_start": load0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds_by_workers": by_workers, "byte_identical_across_workers": same,
            "projected_seconds_250_best": best / n_ck * 250,
            "target_seconds_250": 60.0, "met": best / n_ck * 250 <= 60.0,
        }
        print(f"projected for 250 checkpoints, one worker: {projected:.1f} s; best: "
              f"{best / n_ck * 250:.1f} s (target ≤ 60 s): {'met' if out['met'] else 'NOT met'}")
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sweep report at scale: time and size of ``mechgrok report SWEEP`` on a 500-run sweep.

Target (issue 17, "From one run to a thousand"): the sweep report of a 500-run sweep builds in
≤ 30 s and is ≤ 20 MB, with curves aggregated per grid point (median and spread over seeds),
every run still reachable, and it opens in chromium without errors (the last is checked by
``tests/test_sweep_report_scale.py``).

By default it trains, for real, a 10 × 10 grid (``train.lr`` 10 values from 2e-3 to 5e-2 ×
``task.frac_train`` 10 values from 0.3 to 0.9) × 5 seeds = 500 runs of a tiny transformer on
add mod 11 (d_model 16, 2 heads, d_mlp 32, full batch), ``--epochs`` epochs each (default 300)
with an evaluation every epoch (so ``--epochs`` + 1 points per curve), with ``mechgrok sweep``'s
local backend, ``--workers`` processes (default 2), ``--vmap-seeds 5`` (the 5 seeds of a grid
point trained as one batched model, each still its own ordinary run directory) and
``--no-analyze`` (the sweep report reads only the training metrics). Nothing is copied or made
up: every run directory is a trained run. ``--sweep DIR`` reuses an existing sweep directory
instead (it is read, never modified).

Then, in this one process and ``--repeats`` times each, interleaved, it times
:func:`mechgrok.report.write_sweep_report` with the default threshold (aggregated curves at this
size) and with ``aggregate_above=None`` (every run's own curves: the report before issue 17),
and reports the median seconds and the file sizes; and it times the real command
``python -m mechgrok report SWEEP`` once in a subprocess (interpreter start and imports
included). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LRS = [2e-3, 3e-3, 4.5e-3, 6.5e-3, 1e-2, 1.5e-2, 2e-2, 3e-2, 4e-2, 5e-2]
FRACS = [0.3, 0.37, 0.43, 0.5, 0.57, 0.63, 0.7, 0.77, 0.83, 0.9]

SWEEP_TOML = """preset = "quick"
[task]
name = "add"
p = 11
[model]
d_model = 16
n_heads = 2
d_head = 8
d_mlp = 32
[train]
epochs = {epochs}
eval_every = 1
checkpoint_every = {epochs}
dense_until = 0
threads = 1
[sweep]
name = "scale"
seeds = {seeds}
[sweep.grid]
"train.lr" = {lrs}
"task.frac_train" = {fracs}
"""


def train_sweep(where: Path, epochs: int, seeds: int, workers: int) -> tuple[Path, float]:
    spec = where / "scale.toml"
    spec.write_text(SWEEP_TOML.format(epochs=epochs, seeds=seeds, lrs=json.dumps(LRS),
                                      fracs=json.dumps(FRACS)))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mechgrok", "sweep", str(spec), "--workers",
                           str(workers), "--vmap-seeds", str(seeds), "--no-analyze",
                           "--no-report", "--out-dir", str(where / "out")],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip().splitlines()[-1])
    return where / "out" / "scale", seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", help="an existing sweep directory (default: train one)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", metavar="DIR", help="copy the trained sweep directory here")
    args = ap.parse_args(argv)

    import mechgrok.sweep  # noqa: F401  (loaded now: the report reads the sweep with it)
    from mechgrok.report.sweep import AGGREGATE_ABOVE, MAX_POINTS, SweepData, write_sweep_report

    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="mechgrok-sweep-report-bench-"))
    try:
        train_s = None
        if args.sweep:
            sweep_dir = Path(args.sweep)
        else:
            sweep_dir, train_s = train_sweep(tmp, args.epochs, args.seeds, args.workers)
            print(f"trained the sweep in {train_s:.1f} s")
            if args.keep:
                shutil.copytree(sweep_dir, Path(args.keep), dirs_exist_ok=True)
        t = time.perf_counter()
        sd = SweepData(sweep_dir)
        read_s = time.perf_counter() - t
        runs = sd.with_curves()
        points = [len(r.epochs) for r in runs]
        labels: dict[str, int] = {}
        for r in runs:
            labels[str(r.label)] = labels.get(str(r.label), 0) + 1
        print(f"sweep: {len(sd.runs)} runs ({len(runs)} with curves), grid "
              + " × ".join(f"{k} ({len(v)})" for k, v in sd.axes)
              + f", {min(points)}–{max(points)} evaluations per curve; labels {labels}; "
                f"reading it: {read_s:.2f} s")

        after, before = tmp / "after.html", tmp / "before.html"
        t_after: list[float] = []
        t_before: list[float] = []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            t = time.perf_counter()
            write_sweep_report(sweep_dir, after)
            t_after.append(time.perf_counter() - t)
            t = time.perf_counter()
            write_sweep_report(sweep_dir, before, aggregate_above=None)
            t_before.append(time.perf_counter() - t)
        cli_out = tmp / "cli.html"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mechgrok", "report", str(sweep_dir),
                               "--out", str(cli_out)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        cli_s = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"mechgrok report failed: {proc.stderr}")

        from plotly.offline import get_plotlyjs

        js = len(get_plotlyjs().encode())
        a_bytes, b_bytes, c_bytes = (p.stat().st_size for p in (after, before, cli_out))
        a_text = after.read_text()
        aggregated = 'id="sweep-runs-data"' in a_text
        listed = sum(f'data-run="{r.run_id}"' in a_text for r in sd.runs)
        a_med, b_med = statistics.median(t_after), statistics.median(t_before)
        print(f"after (aggregated above {AGGREGATE_ABOVE} runs, ≤ {MAX_POINTS} points a "
              f"curve): {a_med:.2f} s median of {args.repeats} "
              f"({', '.join(f'{x:.2f}' for x in t_after)}), {a_bytes / 1e6:.2f} MB; "
              f"{listed}/{len(sd.runs)} runs listed with their curves on demand")
        print(f"before (every run's curves): {b_med:.2f} s median of {args.repeats} "
              f"({', '.join(f'{x:.2f}' for x in t_before)}), {b_bytes / 1e6:.2f} MB")
        print(f"`mechgrok report SWEEP` in a subprocess: {cli_s:.2f} s, {c_bytes / 1e6:.2f} MB "
              f"({js / 1e6:.2f} MB of every file is plotly.js)")
        print(f"after / before: {a_med / b_med:.2f}× the time, {a_bytes / b_bytes:.2f}× the size")
        met = cli_s <= 30.0 and c_bytes <= 20e6 and aggregated and listed == len(sd.runs)
        print(f"targets ≤ 30 s and ≤ 20 MB at {len(sd.runs)} runs: "
              f"{'met' if met else 'NOT met'}")
        result: dict[str, Any] = {
            "benchmark": "sweep_report", "runs": len(sd.runs), "runs_with_curves": len(runs),
            "grid": {k: len(v) for k, v in sd.axes},
            "seeds": len(sd.seeds) if sd.seeds else 1,
            "points_per_curve": [min(points), max(points)], "labels": labels,
            "train_seconds": train_s, "trained_here": not args.sweep,
            "seconds_read_sweep": read_s,
            "after_seconds_median": a_med, "after_seconds": t_after, "after_bytes": a_bytes,
            "before_seconds_median": b_med, "before_seconds": t_before, "before_bytes": b_bytes,
            "cli_seconds": cli_s, "cli_bytes": c_bytes, "bytes_plotlyjs": js,
            "ratio_seconds": a_med / b_med, "ratio_bytes": a_bytes / b_bytes,
            "aggregate_above": AGGREGATE_ABOVE, "max_points": MAX_POINTS,
            "runs_listed": listed, "load_average_start": load_start,
            "target_seconds": 30.0, "target_bytes": 20_000_000, "met": met,
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

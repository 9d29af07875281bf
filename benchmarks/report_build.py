"""Report build: time and size of ``mechgrok report`` on a 250-checkpoint ``nanda`` run.

Target (issue: report): building the report of a 250-checkpoint nanda run takes ≤ 15 s and the
file is ≤ 10 MB.

By default it trains a run with the ``nanda`` preset's shapes (add mod 113, 30 %, one-layer
transformer d_model 128, d_mlp 512) for ``--epochs`` epochs with a checkpoint every
``--checkpoint-every`` (default 500 × 2 → 251 checkpoints) and analyses it with every built-in
probe, unless ``--run DIR`` names an existing run (analysed or not; it is copied, never
modified). Then, in this one process, it times the report build end to end (reading the run, its
measures and arrays, loading the checkpoints the figures need, building every figure, writing
the file), ``--repeats`` times, and reports the median, the file size, the figures' count and
the size of the inlined plotly.js. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.analysis import analyze
from mechgrok.config import resolve_config
from mechgrok.report import RunData, write_report
from mechgrok.report import figures as F
from mechgrok.store import Run
from mechgrok.training import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="an existing run directory (default: train and analyse one)")
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--checkpoint-every", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mechgrok-report-bench-"))
    try:
        run_path = tmp / "run"
        train_s = analyze_s = None
        if args.run:
            shutil.copytree(args.run, run_path)
        else:
            cfg = resolve_config("nanda", overrides={
                "train.epochs": args.epochs, "train.checkpoint_every": args.checkpoint_every,
                "train.dense_until": 0, "train.eval_every": args.checkpoint_every})
            t = time.perf_counter()
            train(cfg, run_path, progress=False)
            train_s = time.perf_counter() - t
        run = Run(run_path)
        if not (run_path / "analysis" / "summary.json").is_file():
            t = time.perf_counter()
            analyze(run, progress=False)
            analyze_s = time.perf_counter() - t
        n_ck = len(run.checkpoints())
        print(f"run: {run.config.task.name} p={run.config.task.p}, {n_ck} checkpoints"
              + (f" (trained in {train_s:.1f} s" if train_s else "")
              + (f", analysed in {analyze_s:.1f} s)" if analyze_s else ")" if train_s else ""))

        out_file = tmp / "report.html"
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            write_report(run, out_file)
            times.append(time.perf_counter() - t)
        build_s = statistics.median(times)
        # where the time goes: one pass per figure on a fresh RunData
        t = time.perf_counter()
        d = RunData(run)
        load_s = time.perf_counter() - t
        per_fig: dict[str, float] = {}
        for spec in F.RUN_FIGURES:
            t = time.perf_counter()
            try:
                spec.build(d)
            except F.NoData:
                continue
            per_fig[spec.id] = time.perf_counter() - t
        size = out_file.stat().st_size
        from plotly.offline import get_plotlyjs

        js = len(get_plotlyjs().encode())
        text = out_file.read_text()
        n_figs = text.count('class="fig"')
        print(f"report build: {build_s:.2f} s median of {args.repeats} "
              f"({', '.join(f'{x:.2f}' for x in times)}), {n_figs} figures")
        print(f"  reading the run: {load_s:.2f} s; slowest figures: " + ", ".join(
            f"{k} {v:.2f} s" for k, v in sorted(per_fig.items(), key=lambda kv: -kv[1])[:4]))
        print(f"file: {size / 1e6:.2f} MB ({js / 1e6:.2f} MB of it plotly.js)")
        met = build_s <= 15.0 and size <= 10e6
        result: dict[str, Any] = {
            "benchmark": "report_build", "torch": torch.__version__, "checkpoints": n_ck,
            "p": run.config.task.p, "seconds_build_median": build_s, "seconds_build": times,
            "seconds_read_run": load_s, "seconds_per_figure": per_fig, "figures": n_figs,
            "bytes": size, "bytes_plotlyjs": js, "train_seconds": train_s,
            "analyze_seconds": analyze_s, "load_average_start": os.getloadavg()[0],
            "target_seconds": 15.0, "target_bytes": 10_000_000, "met": met,
        }
        print(f"targets ≤ 15 s and ≤ 10 MB: {'met' if met else 'NOT met'}")
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Checkpoint economy: what the ``log`` schedule and float16/bfloat16 storage cost in bytes, and
how much they change every probe's curve and the detected phase boundaries.

The reference is one real run checkpointed densely (every ``dense_every`` epochs, exact).
Training does not depend on how checkpoints are stored or which epochs are kept (the storage
options only change what is written: ``tests/test_checkpoint_economy.py`` checks that a run
trained with float16 storage holds exactly the reference's checkpoints rounded, and the same
final checkpoint), so each variant is built from the reference by the store's own writer: the
variant's checkpoint epochs (a subset of the reference's) written at the variant's precision
(first and last exact), with the reference's metrics. Each variant is then analysed with every
built-in probe, like the reference.

Reported per variant: checkpoints and bytes (and a 500-run sweep of such runs); for every scalar
of the measures table, the largest change at the epochs the variant shares with the reference,
relative to that curve's scale (its largest absolute value over the reference run), and the
largest of those over all scalars; the phase boundaries (memorisation end, circuit formation end,
cleanup end, grokking epoch) against the reference's. Last line: one JSON object.

    python benchmarks/checkpoint_economy.py --run checkpoints/nanda-dense   # a dense real run
    python benchmarks/checkpoint_economy.py                                  # trains `quick` densely
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.analysis import analyze, load_summary, measures_table
from mechgrok.config import resolve_config
from mechgrok.store import CKPT_DIR, Run, RunWriter
from mechgrok.training import train

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("linear, exact", {}),
    ("linear, float16", {"checkpoint_precision": "float16"}),
    ("linear, bfloat16", {"checkpoint_precision": "bfloat16"}),
    ("log 20/decade, exact", {"checkpoint_schedule": "log", "checkpoints_per_decade": 20}),
    ("log 40/decade, exact", {"checkpoint_schedule": "log", "checkpoints_per_decade": 40}),
    ("log 80/decade, exact", {"checkpoint_schedule": "log", "checkpoints_per_decade": 80}),
    ("log 40/decade, float16", {"checkpoint_schedule": "log", "checkpoints_per_decade": 40,
                                "checkpoint_precision": "float16"}),
    ("log 80/decade, float16", {"checkpoint_schedule": "log", "checkpoints_per_decade": 80,
                                "checkpoint_precision": "float16"}),
]
PHASES = ("memorisation_end", "circuit_formation_end", "cleanup_end", "grokking_epoch")


def build_variant(ref: Run, out: Path, train_changes: dict[str, Any], schedule_of: Any) -> Run:
    """The reference run as if trained with ``train_changes``: its checkpoints at the variant's
    epochs, stored at the variant's precision, written by the store's own writer."""
    cfg = dataclasses.replace(ref.config, train=schedule_of.replace(**train_changes))
    by_epoch = {c.epoch: c for c in ref.checkpoints()}
    want = [e for e in cfg.train.checkpoint_epochs() if e <= max(by_epoch)]
    missing = [e for e in want if e not in by_epoch]
    if missing:
        raise SystemExit(f"the reference has no checkpoint at epochs {missing[:5]}: train it with "
                         f"checkpoint_every = dense_every = {cfg.train.dense_every}")
    last = max(by_epoch)
    want = sorted(set(want) | {last})
    tr, te = ref.split()

    def fill(w: RunWriter) -> None:
        infos = []
        for e in want:
            ck = by_epoch[e]
            exact = e in (0, last) or cfg.train.checkpoint_precision == "exact"
            prec = "exact" if exact else cfg.train.checkpoint_precision
            infos.append(w.write_checkpoint_file(e, ck.step, ref.load_state(ck), prec).to_dict())
        w.metrics = ref.metrics()
        w.manifest["checkpoints"] = infos
        w.manifest.update(status=ref.status, epochs_done=last)
        w.write_metrics()
        w.write_manifest()

    RunWriter.create(out, cfg, {"train_idx": tr, "test_idx": te}, ref.manifest["split_sha256"],
                     fill=fill).close()
    return Run(out)


def ckpt_bytes(run: Run) -> int:
    return sum(c.size for c in run.checkpoints())


def compare(ref_rows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, float]:
    """Largest change of each numeric scalar at the shared epochs, relative to the reference
    curve's largest absolute value."""
    ref = {r["epoch"]: r for r in ref_rows}
    out: dict[str, float] = {}
    keys = {k for r in ref_rows for k, v in r.items() if "." in k and isinstance(v, (int, float))
            and not isinstance(v, bool)}
    for k in sorted(keys):
        scale = max((abs(r[k]) for r in ref_rows if isinstance(r.get(k), (int, float))
                     and math.isfinite(r[k])), default=0.0)
        worst = 0.0
        for r in rows:
            a, b = ref.get(r["epoch"], {}).get(k), r.get(k)
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            if not (math.isfinite(a) and math.isfinite(b)):
                worst = max(worst, 0.0 if (math.isnan(a) and math.isnan(b)) or a == b else 1.0)
                continue
            if scale > 0:
                worst = max(worst, abs(a - b) / scale)
        out[k] = worst
    return out


def phases(run: Run) -> dict[str, int | None]:
    ph = load_summary(run).get("phases") or {}
    return {k: ph.get(k) for k in PHASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a dense reference run (default: train `quick` densely)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sweep-runs", type=int, default=500)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mechgrok-economy-"))
    try:
        if args.run:
            ref_path = tmp / "ref"
            shutil.copytree(args.run, ref_path, ignore=shutil.ignore_patterns("analysis"))
        else:
            cfg = resolve_config("quick", overrides={"train.checkpoint_every": 10,
                                                     "train.dense_until": 0})
            ref_path = tmp / "ref"
            train(cfg, ref_path, progress=False)
        ref = Run(ref_path)
        # the schedule the run's preset would use (checkpoint_every as configured before the
        # dense reference): nanda and quick checkpoint every 100 / 50 epochs
        base_every = {"nanda": 100, "quick": 50}.get(ref.config.preset or "", 100)
        base_dense = {"nanda": 1000, "quick": 500}.get(ref.config.preset or "", 1000)
        schedule = ref.config.train.replace(checkpoint_every=base_every, dense_until=base_dense)
        t = time.perf_counter()
        analyze(ref, progress=False, workers=args.workers)
        ref_s = time.perf_counter() - t
        ref_rows = measures_table(ref)
        ref_ph = phases(ref)
        n_ref, b_ref = len(ref.checkpoints()), ckpt_bytes(ref)
        print(f"reference: {ref.config.preset} {ref.config.task.name} p={ref.config.task.p}, "
              f"{n_ref} checkpoints every {ref.config.train.checkpoint_every} epochs, "
              f"{b_ref / 1e6:.1f} MB, analysed in {ref_s:.0f} s; phases {ref_ph}")
        results = []
        for label, changes in VARIANTS:
            v = build_variant(ref, tmp / label.replace(" ", "_").replace(",", "").replace("/", "-"),
                              changes, schedule)
            analyze(v, progress=False, workers=args.workers)
            rel = compare(ref_rows, measures_table(v))
            worst_key = max(rel, key=rel.get) if rel else None
            ph = phases(v)
            shift = {k: (None if ph[k] is None or ref_ph[k] is None else ph[k] - ref_ph[k])
                     for k in PHASES}
            n, b = len(v.checkpoints()), ckpt_bytes(v)
            run_bytes = sum(f.stat().st_size for f in v.path.rglob("*") if f.is_file())
            r = {"variant": label, "checkpoints": n, "checkpoint_mb": b / 1e6,
                 "run_mb": run_bytes / 1e6, "sweep_gb": args.sweep_runs * run_bytes / 1e9,
                 "max_rel_change": rel[worst_key] if worst_key else 0.0, "worst_scalar": worst_key,
                 "scalars_over_1pct": sorted(k for k, x in rel.items() if x > 0.01),
                 "phases": ph, "phase_shift_epochs": shift}
            results.append(r)
            print(f"{label:<24} {n:>4} ckpts {b / 1e6:7.1f} MB (run {run_bytes / 1e6:6.1f} MB; "
                  f"{args.sweep_runs} runs {r['sweep_gb']:5.1f} GB)  worst change "
                  f"{100 * r['max_rel_change']:6.2f} % ({worst_key}); over 1 %: "
                  f"{len(r['scalars_over_1pct'])}; phase shifts {shift}")
        print(json.dumps({"benchmark": "checkpoint_economy", "torch": torch.__version__,
                          "reference": {"preset": ref.config.preset, "epochs": max(
                              c.epoch for c in ref.checkpoints()), "checkpoints": n_ref,
                              "checkpoint_mb": b_ref / 1e6, "phases": ref_ph},
                          "variants": results, "ckpt_dir": CKPT_DIR}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Recipes compared: steps and seconds to 99 % test accuracy on add mod 113, six ways.

Issue (numerical stability): the same model and split — Prieto et al.'s bias-free one-hot MLP
[200, 200] on add mod 113 with 40 % train — trained with

* ``baseline``: AdamW + weight decay 1, float32 loss;
* ``grokfast-ema`` / ``grokfast-ma``: the baseline plus Grokfast's EMA (α 0.98, λ 2) or MA
  (window 100, λ 5) gradient filter;
* ``orthograd``: ⊥AdamW, no weight decay, float32;
* ``stablemax``: StableMax loss, no weight decay, float32;
* ``float64``: softmax cross-entropy in float64, no weight decay;

each with the **same** small learning-rate budget (``--lrs``, default 1e-3 and 1e-2: every
recipe gets exactly these, and its best is reported; public discussion disputes Grokfast's
baseline, so no recipe gets tuning the others do not). A run stops once test accuracy has been
≥ 99 % at 3 evaluations in a row (every 10 epochs), or at ``--epochs``. Reported per recipe and
learning rate: the epoch (= optimiser step, full batch) and the seconds at which test accuracy
first reached 99 % and stayed there, or "not within the limit", plus the final train/test
accuracy. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.config import resolve_config
from mechgrok.probes.phases import first_held
from mechgrok.store import Run
from mechgrok.training import train

RECIPES: dict[str, dict[str, Any]] = {
    "baseline": {"train.weight_decay": 1.0},
    "grokfast-ema": {"train.weight_decay": 1.0, "train.grokfast": "ema"},
    "grokfast-ma": {"train.weight_decay": 1.0, "train.grokfast": "ma"},
    "orthograd": {"train.weight_decay": 0.0, "train.orthograd": True},
    "stablemax": {"train.weight_decay": 0.0, "train.loss": "stablemax"},
    "float64": {"train.weight_decay": 0.0, "train.loss_dtype": "float64"},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3000, help="limit per run (default 3000)")
    ap.add_argument("--lrs", default="1e-3,1e-2", help="the learning-rate budget, same for all")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    lrs = [float(x) for x in args.lrs.split(",")]
    names = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in names if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipes {unknown}; choose from {list(RECIPES)}")

    tmp = Path(tempfile.mkdtemp(prefix="mechgrok-recipes-"))
    results: list[dict[str, Any]] = []
    try:
        for name in names:
            for lr in lrs:
                cfg = resolve_config("prieto", overrides={
                    **RECIPES[name], "train.lr": lr, "train.epochs": args.epochs,
                    "train.eval_every": 10, "train.checkpoint_every": args.epochs,
                    "train.dense_until": 0, "train.stop_after_grok": 3,
                    "train.threads": args.threads})
                path = tmp / f"{name}-{lr:g}"
                t = time.perf_counter()
                res = train(cfg, path, progress=False)
                wall = time.perf_counter() - t
                m = Run(path).metrics()
                epochs = [r["epoch"] for r in m]
                grok = first_held(epochs, [r["test_acc"] for r in m], 0.99)
                secs = next((r["elapsed_s"] for r in m if r["epoch"] == grok), None)
                shutil.rmtree(path, ignore_errors=True)
                row = {"recipe": name, "lr": lr, "epochs_to_99": grok, "seconds_to_99": secs,
                       "stopped_at": res.epochs, "wall_seconds": wall,
                       "final_train_acc": m[-1]["train_acc"], "final_test_acc": m[-1]["test_acc"]}
                results.append(row)
                got = (f"99 % test at epoch {grok} ({secs:.1f} s)" if grok is not None
                       else f"not within {args.epochs} epochs")
                print(f"{name:<13} lr {lr:<7g} {got}; final train {row['final_train_acc']:.3f} "
                      f"test {row['final_test_acc']:.3f} [{wall:.0f} s]", flush=True)
        best: dict[str, dict[str, Any]] = {}
        for r in results:
            b = best.get(r["recipe"])
            if r["epochs_to_99"] is not None and (b is None or b["epochs_to_99"] is None
                                                  or r["epochs_to_99"] < b["epochs_to_99"]):
                best[r["recipe"]] = r
            elif b is None:
                best[r["recipe"]] = r
        print("\n| recipe | best lr | epochs to 99 % test | seconds | final test acc |")
        print("|---|---|---|---|---|")
        for name in names:
            r = best[name]
            e = "—" if r["epochs_to_99"] is None else str(r["epochs_to_99"])
            s = "—" if r["seconds_to_99"] is None else f"{r['seconds_to_99']:.1f}"
            print(f"| {name} | {r['lr']:g} | {e if e != '—' else f'not within {args.epochs}'} "
                  f"| {s} | {r['final_test_acc']:.3f} |")
        print(json.dumps({"benchmark": "recipes", "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "epochs_limit": args.epochs,
                          "lr_budget": lrs, "runs": results,
                          "best": {k: {kk: v[kk] for kk in ("lr", "epochs_to_99",
                                                             "seconds_to_99")}
                                   for k, v in best.items()},
                          "load_average_start": os.getloadavg()[0]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

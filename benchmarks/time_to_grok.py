"""Time to grok: epochs and seconds until a preset's test accuracy reaches and holds 99 %.

Trains ``--preset`` with the real trainer (``mechgrok.training.train``, into a temporary
directory, ``progress=False``) with ``train.stop_after_grok = --streak`` (default 3), so the run
stops once test accuracy has been ≥ 99 % at that many evaluations in a row. An ``on_eval``
callback notes, for every evaluation, the epoch and the wall-clock seconds since ``train()`` was
called (set-up, evaluations and checkpoint writing included), and from them:

* ``epochs_to_grok`` / ``seconds_to_grok``: the first evaluation of the streak of test accuracy
  ≥ 99 % that lasted to the end of the run (reached *and held*); ``grokked`` says whether that
  streak reached ``--streak`` evaluations (null figures when not);
* ``first_epoch_test_99``: the first evaluation at ≥ 99 % at all, even if it later dropped;
* ``memorisation_epoch`` / ``memorisation_seconds``: the first evaluation with train accuracy
  ≥ 99 %;
* ``trainer_elapsed_s_to_grok``: the trainer's own clock (``elapsed_s`` in the metrics) at the
  grok evaluation, which leaves out set-up and evaluation time;
* ``peak_rss_mib``: the process's peak resident set size (``resource.getrusage``, ``ru_maxrss``);
* ``cpu_utilisation``: process CPU time / (wall time × threads) over the run, and the load
  average at start and end: well below 1 utilisation means other processes on this shared
  machine took CPU and the seconds are pessimistic.

Targets: ``quick`` ≤ 90 s to grok; ``nanda`` ≤ 900 s (15 minutes) to grok and peak RSS < 1 GiB.
Other presets have no targets (reported as null).

Options: ``--max-epochs N`` overrides ``train.epochs`` (the run ends there if it has not grokked);
``--seed S`` overrides ``train.seed`` (model initialisation); ``--threads T`` sets
``train.threads``. The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.config import PRESETS, resolve_config
from mechgrok.training import loop

GROK_ACC = 0.99
#: preset → (max seconds to grok, max peak RSS in MiB or None)
TARGETS: dict[str, tuple[float, float | None]] = {
    "quick": (90.0, None),
    "nanda": (900.0, 1024.0),
}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        kib /= 1024
    return kib / 1024


class Watcher:
    """The ``on_eval`` callback: remembers when accuracies first crossed 99 % (and held)."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.evals = 0
        self.streak = 0
        self.streak_start: tuple[int, float, float] | None = None  # epoch, wall s, trainer s
        self.first_test: tuple[int, float] | None = None
        self.memorised: tuple[int, float] | None = None
        self.last: dict[str, Any] = {}

    def __call__(self, m: dict[str, Any]) -> None:
        now = time.perf_counter() - self.t0
        self.evals += 1
        self.last = m
        epoch = int(m["epoch"])
        if self.memorised is None and m["train_acc"] >= GROK_ACC:
            self.memorised = (epoch, now)
        if m["test_acc"] >= GROK_ACC:
            if self.first_test is None:
                self.first_test = (epoch, now)
            if self.streak == 0:
                self.streak_start = (epoch, now, float(m["elapsed_s"]))
            self.streak += 1
        else:
            self.streak = 0
            self.streak_start = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS), help="preset to train")
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="override train.epochs (default: the preset's)")
    ap.add_argument("--seed", type=int, default=None, help="override train.seed")
    ap.add_argument("--streak", type=int, default=3,
                    help="evaluations in a row at ≥ 99 %% test accuracy before stopping (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="set train.threads")
    args = ap.parse_args(argv)
    if args.streak < 1:
        ap.error("--streak must be ≥ 1")

    overrides: dict[str, Any] = {"train.stop_after_grok": args.streak}
    if args.max_epochs is not None:
        overrides["train.epochs"] = args.max_epochs
    if args.seed is not None:
        overrides["train.seed"] = args.seed
    if args.threads is not None:
        overrides["train.threads"] = args.threads
    cfg = resolve_config(args.preset, overrides=overrides)
    tc = cfg.train
    threads = tc.threads or torch.get_num_threads()
    print(f"preset {args.preset}: {cfg.task.name} mod {cfg.task.p}, frac_train "
          f"{cfg.task.frac_train}, model {cfg.model.kind}, up to {tc.epochs} epochs, eval every "
          f"{tc.eval_every}, stop after {args.streak} evaluations at ≥ 99 % test; seed "
          f"{tc.seed}; torch {torch.__version__}, {threads} threads")

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mechgrok-grok-") as tmp:
        c0, t0 = time.process_time(), time.perf_counter()
        watch = Watcher(t0)
        res = loop.train(cfg, Path(tmp) / "run", progress=False, on_eval=watch)
        wall = time.perf_counter() - t0
        cpu_util = (time.process_time() - c0) / (wall * threads)
    load_end = os.getloadavg()[0]
    rss = peak_rss_mib()

    grokked = watch.streak >= args.streak and watch.streak_start is not None
    start = watch.streak_start if grokked else None
    epochs_to_grok = start[0] if start else None
    seconds_to_grok = start[1] if start else None
    final = res.final or watch.last
    print(f"status {res.status} after {res.epochs} epochs, {wall:.1f} s wall "
          f"({res.seconds:.1f} s in the loop), {watch.evals} evaluations; CPU utilisation "
          f"{cpu_util:.2f}, load average {load_start:.2f} → {load_end:.2f}")
    if watch.memorised:
        print(f"memorised (train acc ≥ 99 %) at epoch {watch.memorised[0]}, "
              f"{watch.memorised[1]:.1f} s")
    else:
        print("never memorised (train acc stayed < 99 %)")
    if start:
        print(f"grokked (test acc ≥ 99 %, held {args.streak} evaluations) at epoch {start[0]}, "
              f"{start[1]:.1f} s wall ({start[2]:.1f} s trainer clock)")
    else:
        print("did not grok within the run")
    print(f"final: train acc {final.get('train_acc', float('nan')):.4f}, test acc "
          f"{final.get('test_acc', float('nan')):.4f}; peak RSS {rss:.0f} MiB")

    target_s, target_rss = TARGETS.get(args.preset, (None, None))
    met_time = met_rss = None
    if target_s is not None:
        met_time = bool(grokked and seconds_to_grok is not None and seconds_to_grok <= target_s)
        print(f"target: grok within {target_s:.0f} s: {'MET' if met_time else 'NOT MET'}")
    if target_rss is not None:
        met_rss = rss < target_rss
        print(f"target: peak RSS < {target_rss:.0f} MiB: {'MET' if met_rss else 'NOT MET'}")

    result = {
        "benchmark": "time_to_grok",
        "preset": args.preset,
        "seed": tc.seed,
        "max_epochs": tc.epochs,
        "streak": args.streak,
        "torch": torch.__version__,
        "threads": threads,
        "cpu_utilisation": cpu_util,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "status": res.status,
        "grokked": grokked,
        "epochs_to_grok": epochs_to_grok,
        "seconds_to_grok": seconds_to_grok,
        "trainer_elapsed_s_to_grok": start[2] if start else None,
        "first_epoch_test_99": watch.first_test[0] if watch.first_test else None,
        "memorisation_epoch": watch.memorised[0] if watch.memorised else None,
        "memorisation_seconds": watch.memorised[1] if watch.memorised else None,
        "epochs_run": res.epochs,
        "loop_seconds": res.seconds,
        "wall_seconds": wall,
        "evaluations": watch.evals,
        "final_train_acc": final.get("train_acc"),
        "final_test_acc": final.get("test_acc"),
        "peak_rss_mib": rss,
        "targets": {"seconds_to_grok_max": target_s, "peak_rss_mib_max": target_rss},
        "met": {"seconds_to_grok": met_time, "peak_rss": met_rss},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

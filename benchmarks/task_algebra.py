"""Every task in its own algebra (issue 13): what the measures say about trained runs.

Analyses each run given (``mechgrok analyze``, only what is missing) and prints, per run, what
its task's basis shows on the final checkpoint:

* Z_p and Z_p* (add, sub, mul, div): the key frequencies by each rule (over Z_{p−1}, discrete-log
  order, for mul/div), restricted and excluded loss over them, and the circle fit of the
  embedding in each key frequency's plane (1 = a perfect circle in the order k·i mod n);
* S_n: the key irreps (Chughtai's rule) with their logit similarity, restricted and excluded
  loss over them, and the share of the embedding, neurons and unembedding in the key irreps;
  over several runs of one S_n task, whether the key irreps differ between seeds;
* no group (cond, polynomials): the 2-D components carrying 90 % of the logits' power and
  restricted/excluded loss over them (no circuit is claimed).

With the training outcome beside it (first epoch train / test accuracy ≥ 0.99). Usage::

    python benchmarks/task_algebra.py RUN [RUN …] [--workers N]

Last line: one JSON object with every number printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mechgrok.analysis import analyze
from mechgrok.measures import fourier_view
from mechgrok.store import Run
from mechgrok.tasks import get_task


def _first(metrics: list[dict[str, Any]], key: str) -> int | None:
    return next((m["epoch"] for m in metrics if m[key] >= 0.99), None)


def _fmt(v: Any) -> str:
    return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def _circles(run: Run, keys: list[int]) -> dict[int, float]:
    """Circle fit of the final embedding in each key frequency's plane."""
    import torch

    from mechgrok.report.figures.circles import circle_fit, frequency_plane, plane_coordinates

    view = fourier_view(run.config.task.name, run.config.task.p)
    if view is None or not keys:
        return {}
    with torch.no_grad():
        E = run.load_model().token_embedding().double().numpy()[view.tokens]
    E = E - E.mean(0)
    out = {}
    for k in keys:
        if 2 * k == view.n:  # the sign frequency is a line, not a circle
            continue
        out[k] = circle_fit(plane_coordinates(E, frequency_plane(E, k)), k)
    return out


def _describe(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    task = get_task(run.config.task.name)
    metrics = run.metrics()
    last = metrics[-1]
    row: dict[str, Any] = {
        "run": run.id, "task": run.config.task.title, "algebra": task.algebra.kind,
        "epochs": last["epoch"], "train99": _first(metrics, "train_acc"),
        "test99": _first(metrics, "test_acc"), "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"], "status": run.status,
    }
    kf = summary.get("key_frequencies") or {}
    probes = summary.get("probes") or {}
    if "neurons" in kf:
        keys = kf["neurons"] or kf["embedding"]
        row.update(key_frequencies={r: kf[r] for r in ("neurons", "embedding", "logit_map")},
                   circle_fit={str(k): v for k, v in _circles(run, keys).items()})
    if "irreps" in probes:
        s = probes["irreps"]
        per = s["irreps"]
        row.update(key_irreps=s["final_key"],
                   similarity={k: per[k]["similarity"] for k in s["final_key"]},
                   logits_explained=s["logits_explained"],
                   restricted_loss=s["restricted_loss"], excluded_loss=s["excluded_loss"],
                   full_loss=s["full_loss"],
                   key_share={part: float(sum(per[k][part] or 0 for k in s["final_key"]))
                              for part in ("embed_var", "neuron_var", "unembed_var")})
    if "spectrum2d" in probes:
        s = probes["spectrum2d"]
        row.update(components=len(s["final_components"]), of_pairs=s["n_pairs"],
                   restricted_loss=s["restricted_loss"], excluded_loss=s["excluded_loss"],
                   full_loss=s["full_loss"])
    return row


def _print(row: dict[str, Any]) -> None:
    print(f"\n{row['run']} ({row['task']}, {row['algebra']}): {row['epochs']} epochs, "
          f"{row['status']}; train ≥ 99 % at {_fmt(row['train99'])}, test ≥ 99 % at "
          f"{_fmt(row['test99'])} (final train {row['final_train_acc']:.3f}, test "
          f"{row['final_test_acc']:.3f})")
    if "key_frequencies" in row:
        kf = row["key_frequencies"]
        print(f"  key frequencies: neurons {kf['neurons']}, embedding {kf['embedding']}, "
              f"logit map {kf['logit_map']}")
        fits = ", ".join(f"k={k}: {v:.3f}" for k, v in row["circle_fit"].items())
        print(f"  circle fit per key frequency's plane: {fits or '—'}")
    if "key_irreps" in row:
        sims = ", ".join(f"{k} {v:.3f}" for k, v in row["similarity"].items())
        print(f"  key irreps (logit similarity): {sims or 'none'}; Σ similarity² "
              f"{row['logits_explained']:.3f}")
        print("  share in the key irreps: " + ", ".join(
            f"{k} {v:.3f}" for k, v in row["key_share"].items()))
    if "components" in row:
        print(f"  2-D components carrying 90 % of the logits' power: {row['components']} of "
              f"{row['of_pairs']} (no circuit is claimed)")
    if "restricted_loss" in row:
        print(f"  restricted loss {_fmt(row['restricted_loss'])}, excluded loss "
              f"{_fmt(row['excluded_loss'])}, full loss {_fmt(row['full_loss'])}")


def _universality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per S_n task with several runs: the key irreps of each, and whether they differ."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows if "key_irreps" in r}):
        runs = [r for r in rows if r["task"] == task and "key_irreps" in r]
        if len(runs) < 2:
            continue
        sets = [tuple(sorted(r["key_irreps"])) for r in runs]
        out[task] = {"runs": len(runs), "key_irreps": [list(s) for s in sets],
                     "all_equal": len(set(sets)) == 1}
        print(f"\n{task}: key irreps over {len(runs)} runs: "
              + "; ".join(", ".join(s) or "none" for s in sets)
              + f" — {'the same' if len(set(sets)) == 1 else 'they differ'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    rows = []
    for path in args.runs:
        run = Run(Path(path))
        t = time.perf_counter()
        res = analyze(run, progress=False, workers=args.workers)
        row = _describe(run, res.summary)
        row["analyse_seconds"] = time.perf_counter() - t
        row["errors"] = len(res.errors)
        _print(row)
        rows.append(row)
    uni = _universality(rows)
    print(json.dumps({"benchmark": "task_algebra", "runs": rows, "universality": uni},
                     default=lambda v: v.tolist() if isinstance(v, np.ndarray) else str(v)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

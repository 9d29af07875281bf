"""The run-level summary an analysis writes (``analysis/summary.json``): key frequencies on the
final checkpoint by each rule, phases, grokking epoch and delay, Liu et al.'s label, the
clock/pizza verdicts, the collapse status, what did not apply and what failed, and the final
checkpoint they were computed from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mechgrok.analysis.compute import failure
from mechgrok.analysis.deps import RunDeps
from mechgrok.analysis.result import AnalysisResult
from mechgrok.probes import NotApplicable, Probe, RunContext
from mechgrok.store import CheckpointInfo, Run

__all__ = ["summarise"]

Records = dict[tuple[int, str], dict[str, Any]]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ok_values(records: Records, probe: str) -> list[tuple[int, Any]]:
    """(epoch, values) of ``probe``'s ``ok`` records, by epoch."""
    return sorted((e, r["values"]) for (e, name), r in records.items()
                  if name == probe and r["status"] == "ok")


def _key_frequencies(summary: dict[str, Any], run_ctx: RunContext, final: CheckpointInfo,
                     res: AnalysisResult) -> dict[str, Any] | None:
    """Set ``summary["key_frequencies"]``; the error entry when they could not be found."""
    try:
        summary["key_frequencies"] = {"epoch": final.epoch, **run_ctx.final_key_frequencies()}
    except NotApplicable as e:
        summary["key_frequencies"] = {"not_applicable": str(e)}
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a missing or corrupt final checkpoint is an error, not "n/a"
        summary["key_frequencies"] = {"epoch": final.epoch, "error": failure(e)}
        kf_error = {"probe": "key_frequencies", "epoch": final.epoch,
                    "error": f"the final checkpoint's key frequencies could not be found: "
                             f"{failure(e)}"}
        res.errors.append(kf_error)
        return kf_error
    return None


def _phases(metrics: list[dict[str, Any]], records: Records) -> dict[str, Any]:
    from mechgrok.probes.phases import detect_phases, liu_label

    ex = sorted((e, v.get("excluded_loss")) for e, v in _ok_values(records, "restricted"))
    ex = [(e, v) for e, v in ex if _num(v)]
    epochs = [m["epoch"] for m in metrics]
    train_acc = [m["train_acc"] for m in metrics]
    test_acc = [m["test_acc"] for m in metrics]
    phases = detect_phases(
        epochs, train_acc, test_acc, [m["test_loss"] for m in metrics],
        [m["sum_sq_weights"] for m in metrics],
        excluded_loss_epochs=[e for e, _ in ex] or None,
        excluded_loss=[v for _, v in ex] or None)
    label, figures = liu_label(epochs, train_acc, test_acc)
    return {"phases": phases, "liu_label": label, "liu_figures": figures}


def _clock_pizza(cp: list[tuple[int, Any]], verdict_rules: Any) -> dict[str, Any]:
    from mechgrok.probes.clockpizza import VerdictRules

    rules = verdict_rules or VerdictRules()
    series = {}
    for e, v in cp:
        raw = (v.get("gradient_symmetricity"), v.get("distance_irrelevance"), v.get("circularity"))
        ok = all(_num(x) and math.isfinite(x) for x in raw)
        series[str(e)] = rules.classify(*raw) if ok else None
    e, v = cp[-1]
    return {
        "epoch": e, "verdict": series[str(e)],
        "gradient_symmetricity": v.get("gradient_symmetricity"),
        "distance_irrelevance": v.get("distance_irrelevance"),
        "circularity": v.get("circularity"),
        "rules": {k: getattr(rules, k) for k in ("pizza_gs", "pizza_di", "clock_gs", "clock_di",
                                                  "circ_min")},
        "verdicts": series,
    }


def _collapse(col: list[tuple[int, Any]], metrics: list[dict[str, Any]]
              ) -> dict[str, Any]:
    from mechgrok.probes.collapse import collapse_status

    e, v = col[-1]
    acc = next((m["test_acc"] for m in reversed(metrics) if m["epoch"] <= e), None)
    sc32, sc64 = v.get("sc_fraction_float32"), v.get("sc_fraction_float64")
    return {
        "epoch": e, "sc_fraction_float32": sc32, "sc_fraction_float64": sc64,
        "zero_loss_fraction_float32": v.get("zero_loss_fraction_float32"),
        "zero_loss_fraction_float64": v.get("zero_loss_fraction_float64"),
        "gap_median": v.get("gap_median"), "nlm_cosine": v.get("nlm_cosine"),
        "status": collapse_status(sc32, sc64, acc) if _num(sc32) else None,
    }


def _probe_summaries(run: Run, run_ctx: RunContext, records: Records, probes: Sequence[Probe],
                     errors: list[dict[str, Any]]) -> dict[str, Any]:
    """``probe name → its summary`` (with its ``headline``) for every probe that describes
    itself (:meth:`Probe.summarise`): the built-in probes and ``probes``, from their current
    records. A probe whose summary fails is added to ``errors`` instead."""
    from mechgrok.probes import registry
    from mechgrok.store.analysis import read_arrays

    by_name = {**registry(), **{p.name: p for p in probes}}
    out: dict[str, Any] = {}
    for name, p in by_name.items():
        values = _ok_values(records, name)
        if not values or type(p).summarise is Probe.summarise:
            continue
        prefix = f"{name}."

        def arrays(epoch: int, prefix: str = prefix) -> dict[str, Any]:
            return {k[len(prefix):]: v for k, v in read_arrays(run.path, epoch).items()
                    if k.startswith(prefix)}

        try:
            s = p.summarise(run_ctx, values, arrays)
            if s is not None:
                out[name] = {**s, "headline": p.headline(s)}
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a probe's summary must not lose the rest of the analysis
            errors.append({"probe": name, "epoch": None,
                           "error": f"its run summary failed: {failure(e)}"})
    return out


def summarise(run: Run, run_ctx: RunContext, records: Records, res: AnalysisResult,
              verdict_rules: Any, final: CheckpointInfo, rd: RunDeps,
              probes: Sequence[Probe] = ()) -> dict[str, Any]:
    """The summary of ``records`` (the current ones, one per (epoch, probe)); a failure to find
    the final key frequencies is added to ``res.errors`` as well."""
    summary: dict[str, Any] = {"kind": "mechgrok.analysis_summary", "schema_version": 1,
                               "run": run.id, "checkpoints": len(run.checkpoints()),
                               "final_checkpoint": rd.final}
    kf_error = _key_frequencies(summary, run_ctx, final, res)
    metrics = run.metrics()
    if metrics:
        summary.update(_phases(metrics, records))
    cp = _ok_values(records, "clock_pizza")
    if cp:
        summary["clock_pizza"] = _clock_pizza(cp, verdict_rules)
    col = _ok_values(records, "collapse")
    if col:
        summary["collapse"] = _collapse(col, metrics)
    summary_errors: list[dict[str, Any]] = []
    summary["probes"] = _probe_summaries(run, run_ctx, records, probes, summary_errors)
    res.errors.extend(summary_errors)
    summary["not_applicable"] = res.not_applicable
    status: dict[str, dict[str, int]] = {}
    for (_, name), r in records.items():
        s = status.setdefault(name, {"ok": 0, "n/a": 0, "error": 0})
        s[r["status"]] += 1
    summary["probe_status"] = status
    summary["errors"] = [{"epoch": e, "probe": name, "error": r["error"]}
                         for (e, name), r in sorted(records.items()) if r["status"] == "error"]
    if kf_error is not None:
        summary["errors"].append(kf_error)
    summary["errors"].extend(summary_errors)
    return summary

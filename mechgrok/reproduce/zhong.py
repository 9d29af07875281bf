"""Zhong, Liu, Tegmark, Andreas 2023, "The clock and the pizza: two stories in mechanistic
explanation of neural networks" (arXiv:2306.17844, NeurIPS 2023): the attention rate α decides
the algorithm a one-layer transformer learns for x + y mod p.

The paper's settings are those of its training script, `code/train-main.py` in
github.com/fjzzq2002/pizza at commit b78c0e6 (the ``config`` dict, lines 531–559; the optimiser,
lines 395–396; the MLP width, line 173). Its numbers: Model A (α = 0) measured in
`code/eval-main.ipynb` (gradient symmetricity 0.994, distance irrelevance 0.17), and the
one-layer runs of `result/1l_fixedwidth.csv` (the runs behind the repository's fixed-width phase
plot), read here with mechgrok's verdict rule: of those with d_model 128, ReLU, the plain
[x, y] input and test accuracy ≥ 99 %, the 226 with α ≥ 0.9 have median gradient symmetricity
0.48 and distance irrelevance 0.85 (225 clocks, no pizza), the 241 with α < 0.1 have 0.993 and
0.36 (151 pizzas, no clock).

mechgrok's verdict (``summary["clock_pizza"]["verdict"]`` on the final checkpoint) is the rule
in the README's clock-or-pizza table: non-circular if circularity < 0.5; pizza if gradient
symmetricity > 0.98 and distance irrelevance < 0.5; clock if < 0.9 and > 0.6; else mixed.

Settings mechgrok cannot match yet (said in the report): the script reads two tokens [x, y]
(``eqn_sign = 0``, line 537) where mechgrok's transformer reads [x, y, =], and it initialises
W_in with 1/√d_mlp (line 124) where mechgrok uses 1/√d_model.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from mechgrok.reproduce.entry import PAPER, QUICK, Budget, Claim, Entry, Paper, RunSet, Setting
from mechgrok.reproduce.evidence import Evidence, RunEvidence

__all__ = ["ZHONG"]

_CODE = "pizza code/train-main.py"
_PROBES = ("loss", "clock_pizza")
_SETS = {"clock": 1.0, "pizza": 0.0}  # run set → its attention rate α


def _verdict(r: RunEvidence) -> str | None:
    return (r.summary.get("clock_pizza") or {}).get("verdict")


def _by_modulus(runs: list[RunEvidence]) -> dict[int, list[RunEvidence]]:
    out: dict[int, list[RunEvidence]] = {}
    for r in runs:
        out.setdefault(int(r.config.task.p), []).append(r)
    return dict(sorted(out.items()))


def _counts(ev: Evidence, set_name: str, algorithm: str) -> dict[str, Any]:
    """Per modulus: runs, grokked runs, and grokked runs judged ``algorithm``."""
    per = {}
    for p, runs in _by_modulus(ev.of(set_name)).items():
        grokked = [r for r in runs if r.grokked]
        per[str(p)] = {"runs": len(runs), "grokked": len(grokked),
                       "hits": sum(_verdict(r) == algorithm for r in grokked),
                       "verdicts": [_verdict(r) for r in grokked]}
    return {"algorithm": algorithm, "per_modulus": per}


def _measure_clock(ev: Evidence) -> dict[str, Any]:
    return _counts(ev, "clock", "clock")


def _measure_pizza(ev: Evidence) -> dict[str, Any]:
    return _counts(ev, "pizza", "pizza")


def _rule_majority(m: Mapping[str, Any]) -> bool | None:
    per = m.get("per_modulus") or {}
    if len(per) < 2 or any(c["grokked"] * 2 < c["runs"] or not c["grokked"]
                           for c in per.values()):
        return None
    return all(c["hits"] * 2 > c["grokked"] for c in per.values())


def _show_counts(m: Mapping[str, Any]) -> str:
    per = m.get("per_modulus") or {}
    if not per:
        return "no analysed run"
    return "; ".join(f"p = {p}: {c['hits']} of {c['grokked']} grokked runs are {m['algorithm']}s"
                     f"{_verdicts(c)} ({c['runs'] - c['grokked']} of {c['runs']} did not grok)"
                     for p, c in per.items())


def _verdicts(c: Mapping[str, Any]) -> str:
    """`` (verdicts: mixed, clock)`` when some grokked run got another verdict."""
    v = c.get("verdicts") or []
    return f" (verdicts: {', '.join(str(x) for x in v)})" if c["hits"] < len(v) else ""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _measure_separation(ev: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for set_name in _SETS:
        cps = [r.summary.get("clock_pizza") or {} for r in ev.of(set_name) if r.grokked]
        out[set_name] = {
            "n": len(cps),
            "gs": _median([c["gradient_symmetricity"] for c in cps
                           if c.get("gradient_symmetricity") is not None]),
            "di": _median([c["distance_irrelevance"] for c in cps
                           if c.get("distance_irrelevance") is not None])}
    return out


def _rule_separation(m: Mapping[str, Any]) -> bool | None:
    clock, pizza = m.get("clock") or {}, m.get("pizza") or {}
    if None in (clock.get("gs"), clock.get("di"), pizza.get("gs"), pizza.get("di")):
        return None
    return pizza["gs"] - clock["gs"] >= 0.1 and clock["di"] > pizza["di"]


def _show_separation(m: Mapping[str, Any]) -> str:
    def one(name: str, alpha: str) -> str:
        s = m.get(name) or {}
        if s.get("gs") is None:
            return f"α = {alpha}: no grokked run"
        return (f"α = {alpha}: median gradient symmetricity {s['gs']:.3f}, distance "
                f"irrelevance {s['di']:.3f} ({s['n']} grokked runs)")
    return f"{one('clock', '1')}; {one('pizza', '0')}"


_FILTER = ("result/1l_fixedwidth.csv, one-layer runs with d_model 128, ReLU, [x, y] input and "
           "test accuracy ≥ 99 %, read with mechgrok's verdict rule")
_MAJORITY = ("at each of the two moduli, at least half the runs grokked, and more than half of "
             "the grokked runs get mechgrok's verdict")

CLAIMS = (
    Claim("clock-for-alpha-1",
          "With standard attention (α = 1) the network learns the clock algorithm.",
          "Model B (α = 1) is a clock; of 226 runs with α ≥ 0.9, 225 are clocks (none a pizza)",
          f"code/eval-main.ipynb (Model B = run l8k1hzciux); {_FILTER}",
          _measure_clock, _rule_majority, f"{_MAJORITY} \"clock\"", _show_counts),
    Claim("pizza-for-alpha-0",
          "With constant attention (α = 0) the network learns the pizza algorithm.",
          "Model A (α = 0) is a pizza; of 241 runs with α < 0.1, 151 are pizzas (none a clock)",
          f"code/eval-main.ipynb (Model A = run p99zdpze5l); {_FILTER}",
          _measure_pizza, _rule_majority, f"{_MAJORITY} \"pizza\"", _show_counts),
    Claim("measures-separate",
          "Gradient symmetricity is near 1 for α = 0 and far lower for α = 1; distance "
          "irrelevance is higher for α = 1.",
          "Model A: gradient symmetricity 0.994, distance irrelevance 0.17; medians over the runs "
          "above: α ≥ 0.9 0.48 and 0.85, α < 0.1 0.993 and 0.36",
          f"code/eval-main.ipynb (Model A, p99zdpze5l); {_FILTER}",
          _measure_separation, _rule_separation,
          "over the grokked runs, the median gradient symmetricity at α = 0 exceeds the one at "
          "α = 1 by at least 0.1, and the median distance irrelevance at α = 1 exceeds the one "
          "at α = 0", _show_separation),
)

_PAPER_SETTINGS = (
    Setting("task", "x + y mod 59, 80 % of pairs for training", f"{_CODE} l. 531, 547, 558"),
    Setting("model", "1 layer, d_model 128, 4 heads, d_mlp 512 (4 × d_model), ReLU, no "
                     "LayerNorm", f"{_CODE} l. 532, 541, 549, 553, 173"),
    Setting("attention rate", "α = 1 (Model B) and α = 0 (Model A); the script draws α "
                              "uniformly in [0, 1]", f"{_CODE} l. 535, 559"),
    Setting("optimiser", "AdamW, lr 1e-3, weight decay 2, betas (0.9, 0.98), 10-step warm-up",
            f"{_CODE} l. 395–396, 556–557"),
    Setting("batch", "full batch", f"{_CODE} l. 555 (batch_size = C·C)"),
    Setting("epochs", "20,000", f"{_CODE} l. 554"),
    Setting("seeds, second modulus", "3 seeds; p = 59 and p = 61 (the paper uses 59 only; 61 "
                                     "is mechgrok's second modulus)", "issue 14"),
)


def _sets(preset_base: Mapping[str, Any], grid_p: list[int], seeds: int, label: str
          ) -> tuple[RunSet, ...]:
    out = []
    for name, alpha in _SETS.items():
        base = {"preset": f"zhong-{name}", **{k: dict(v) for k, v in preset_base.items()}}
        out.append(RunSet(name, f"α = {alpha:g} ({label})", base, {"task.p": grid_p},
                          seeds=tuple(range(seeds)), probes=_PROBES))
    return tuple(out)


_QUICK_BASE = {"model": {"d_model": 64, "d_head": 16, "d_mlp": 256},
               "train": {"epochs": 2000, "checkpoints_per_decade": 5,
                         "checkpoint_schedule": "log"}}

ZHONG = Entry(
    name="zhong",
    paper=Paper("Zhong, Liu, Tegmark, Andreas", 2023,
                "The clock and the pizza: two stories in mechanistic explanation of neural "
                "networks", "arXiv:2306.17844 (NeurIPS 2023)", "github.com/fjzzq2002/pizza"),
    summary="clock for α = 1, pizza for α = 0, over seeds and two moduli",
    claims=CLAIMS,
    budgets={
        QUICK: Budget(
            QUICK, _sets(_QUICK_BASE, [31, 37], 2, "d_model 64, p = 31 and 37, 2,000 epochs"),
            seconds=505, measured=True,
            time_note="measured on this machine (docs/reproductions.md)",
            note="not the paper's settings: a transformer of d_model 64 (d_mlp 256), p = 31 and "
                 "37, 2 seeds, 2,000 epochs"),
        PAPER: Budget(
            PAPER, _sets({"train": {"epochs": 20_000}}, [59, 61], 3,
                         "the paper's settings, p = 59 and 61"),
            seconds=12 * 20_000 * 0.13, measured=False,
            time_note="estimate (130 ms an epoch measured here × 20,000 × 12 runs); not run yet",
            settings=_PAPER_SETTINGS,
            note="mechgrok reads [x, y, =] (the script reads [x, y]) and initialises W_in with "
                 "1/√d_model (the script: 1/√d_mlp, l. 124)"),
    },
)

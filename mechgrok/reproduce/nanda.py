"""Nanda, Chan, Lieberum, Smith, Steinhardt 2023, "Progress measures for grokking via
mechanistic interpretability" (arXiv:2301.05217, ICLR 2023): one transformer on x + y mod 113.

The paper's settings are those of its code, `transformers.py` in
github.com/mechanistic-interpretability-grokking/progress-measures-paper at commit 5bf4dad
(``Config``, lines 29–60; the optimiser, lines 470–471); the paper's numbers are from its §4.1
(key frequencies) and §5 (progress measures, the three phases), as the project's reference notes
(MEASURES.md §4) record them. mechgrok's ``nanda`` preset holds these settings; the paper budget
trains its code's 50,000 epochs (the preset stops at 25,000).

The quick budget is the ``quick`` preset (a smaller transformer on x + y mod 53, 40 % training
data, learning rate 3e-3), 3,000 epochs: the same phases, about 50 times cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mechgrok.reproduce.entry import PAPER, QUICK, Budget, Claim, Entry, Paper, RunSet, Setting
from mechgrok.reproduce.evidence import Evidence, RunEvidence, start_of_fall, value_near

__all__ = ["NANDA"]

_CODE = "progress-measures-paper transformers.py"
_PROBES = ("loss", "weights", "key_freqs", "restricted", "gini")
#: a rise of a Gini coefficient (on [0, 1]) smaller than this is not a rise
GINI_RISE = 0.1
#: the excluded loss "rises" when it at least doubles
EXCLUDED_RATIO = 2.0


def _main(ev: Evidence) -> RunEvidence | None:
    runs = ev.of("main")
    return runs[0] if runs else None


def _fmt(v: Any, f: str = ".3g") -> str:
    return "—" if v is None else format(v, f) if isinstance(v, float) else str(v)


def _not_grokked(m: Mapping[str, Any]) -> str:
    return (f"not grokked (test accuracy {_fmt(m.get('test_acc'), '.3f')} at epoch "
            f"{m.get('final_epoch')})")


def _base(r: RunEvidence) -> dict[str, Any]:
    return {"grokked": r.grokked, "grokking_epoch": r.grokking_epoch,
            "test_acc": r.final_test_acc, "final_epoch": r.final_epoch}


# --- key frequencies ----------------------------------------------------------------------
def _measure_keys(ev: Evidence) -> dict[str, Any]:
    r = _main(ev)
    if r is None:
        return {"missing": "no analysed run"}
    keys = (r.summary.get("key_frequencies") or {}).get("neurons")
    return {**_base(r), "keys": keys, "n": len(keys) if keys is not None else None,
            "n_freqs": (r.config.task.p - 1) // 2}


def _rule_keys(m: Mapping[str, Any]) -> bool | None:
    if not m.get("grokked") or m.get("n") is None:
        return None
    return 1 <= m["n"] <= min(8, m["n_freqs"] / 3)


def _show_keys(m: Mapping[str, Any]) -> str:
    if m.get("missing"):
        return m["missing"]
    if not m.get("grokked"):
        return _not_grokked(m)
    keys = ", ".join(str(k) for k in m.get("keys") or [])
    return f"{m['n']} of {m['n_freqs']} frequencies ({keys}); grokked at epoch {m['grokking_epoch']}"


# --- restricted loss falls before test loss -----------------------------------------------
def _measure_fall(ev: Evidence) -> dict[str, Any]:
    r = _main(ev)
    if r is None:
        return {"missing": "no analysed run"}
    after = r.phases.get("train_99")
    er, rl = r.column("restricted.restricted_loss")
    et, tl = r.column("loss.test_loss")
    return {**_base(r), "restricted_falls": start_of_fall(er, rl, after),
            "test_falls": start_of_fall(et, tl, after)}


def _rule_fall(m: Mapping[str, Any]) -> bool | None:
    if not m.get("grokked") or m.get("test_falls") is None:
        return None
    return m.get("restricted_falls") is not None and m["restricted_falls"] < m["test_falls"]


def _show_fall(m: Mapping[str, Any]) -> str:
    if m.get("missing"):
        return m["missing"]
    if not m.get("grokked"):
        return _not_grokked(m)
    return (f"restricted loss starts falling at epoch {_fmt(m.get('restricted_falls'))}, "
            f"test loss at epoch {_fmt(m.get('test_falls'))}")


# --- excluded loss rises during circuit formation -----------------------------------------
def _measure_excluded(ev: Evidence) -> dict[str, Any]:
    r = _main(ev)
    if r is None:
        return {"missing": "no analysed run"}
    mem, circ = r.phases.get("memorisation_end"), r.phases.get("circuit_formation_end")
    e, ex = r.column("restricted.excluded_loss")
    at_mem = value_near(e, ex, mem) if mem is not None else None
    at_circ = value_near(e, ex, circ) if circ is not None else None
    return {**_base(r), "memorisation_end": mem, "circuit_formation_end": circ,
            "at_mem": at_mem, "at_circ": at_circ}


def _rule_excluded(m: Mapping[str, Any]) -> bool | None:
    if m.get("at_mem") is None or m.get("at_circ") is None:
        return None
    return m["at_circ"] >= EXCLUDED_RATIO * m["at_mem"]


def _show_excluded(m: Mapping[str, Any]) -> str:
    if m.get("missing"):
        return m["missing"]
    if m.get("at_circ") is None:
        return (f"{_not_grokked(m) if not m.get('grokked') else 'no circuit-formation phase'}; "
                f"end of memorisation at epoch {_fmt(m.get('memorisation_end'))}")
    return (f"{_fmt(m['at_mem'])} at the end of memorisation (epoch {m['memorisation_end']}) → "
            f"{_fmt(m['at_circ'])} at the end of circuit formation (epoch "
            f"{m['circuit_formation_end']}): ×{m['at_circ'] / m['at_mem']:.3g}")


# --- Gini coefficients rise in cleanup ----------------------------------------------------
def _measure_gini(ev: Evidence) -> dict[str, Any]:
    r = _main(ev)
    if r is None:
        return {"missing": "no analysed run"}
    circ, clean = r.phases.get("circuit_formation_end"), r.phases.get("cleanup_end")
    out: dict[str, Any] = {**_base(r), "circuit_formation_end": circ, "cleanup_end": clean}
    for name in ("embedding", "logit_map"):
        e, g = r.column(f"gini.{name}")
        out[name] = (None if circ is None or clean is None
                     else (value_near(e, g, circ), value_near(e, g, clean)))
    return out


def _rule_gini(m: Mapping[str, Any]) -> bool | None:
    pairs = [m.get("embedding"), m.get("logit_map")]
    if any(p is None or None in p for p in pairs):
        return None
    return all(after - before >= GINI_RISE for before, after in pairs)  # type: ignore[misc]


def _show_gini(m: Mapping[str, Any]) -> str:
    if m.get("missing"):
        return m["missing"]
    if m.get("embedding") is None:
        return (f"{_not_grokked(m) if not m.get('grokked') else 'no cleanup phase detected'}")
    (e0, e1), (l0, l1) = m["embedding"], m["logit_map"]
    return (f"W_E {e0:.2f} → {e1:.2f}, W_L {l0:.2f} → {l1:.2f} (epochs "
            f"{m['circuit_formation_end']} → {m['cleanup_end']})")


# --- the three phases ---------------------------------------------------------------------
def _measure_phases(ev: Evidence) -> dict[str, Any]:
    r = _main(ev)
    if r is None:
        return {"missing": "no analysed run"}
    return {**_base(r), **{k: r.phases.get(k) for k in
                           ("memorisation_end", "circuit_formation_end", "cleanup_end")}}


def _rule_phases(m: Mapping[str, Any]) -> bool | None:
    mem, circ, clean = (m.get(k) for k in ("memorisation_end", "circuit_formation_end",
                                            "cleanup_end"))
    if mem is None or circ is None or clean is None or m.get("grokking_epoch") is None:
        return None
    return mem < circ <= m["grokking_epoch"] <= clean and mem < circ - mem


def _show_phases(m: Mapping[str, Any]) -> str:
    if m.get("missing"):
        return m["missing"]
    b = [m.get(k) for k in ("memorisation_end", "circuit_formation_end", "cleanup_end")]
    text = f"0–{_fmt(b[0])} / {_fmt(b[0])}–{_fmt(b[1])} / {_fmt(b[1])}–{_fmt(b[2])}"
    return text + (f"; grokked at epoch {m['grokking_epoch']}" if m.get("grokked")
                   else f"; {_not_grokked(m)}")


CLAIMS = (
    Claim("key-frequencies",
          "The grokked network computes x + y mod p with a few key frequencies.",
          "5 key frequencies (14, 35, 41, 42, 52) of the 56 for p = 113",
          "§4.1 (the mainline run's key frequencies)",
          _measure_keys, _rule_keys,
          "grokked, and its key frequencies (neuron rule, final checkpoint) number from 1 to "
          "min(8, a third of the (p − 1)/2 frequencies)", _show_keys),
    Claim("restricted-before-test",
          "Restricted loss (logits kept to the key frequencies) falls before test loss does.",
          "restricted loss falls during circuit formation (1.4k–9.4k epochs), test loss only at "
          "grokking (~9.4k)", "§5.1–5.2 (restricted loss over training)",
          _measure_fall, _rule_fall,
          "grokked, and the start of restricted loss's fall (10 % of its log fall after train "
          "accuracy reached 99 %) comes at an earlier checkpoint than the start of test loss's "
          "fall (same reading)", _show_fall),
    Claim("excluded-rises",
          "Excluded loss (key frequencies removed, training pairs) rises during circuit "
          "formation.",
          "excluded loss rises from the end of memorisation (1.4k) to grokking (9.4k)",
          "§5.1–5.2 (excluded loss over training)",
          _measure_excluded, _rule_excluded,
          f"memorisation and circuit formation detected, and the excluded loss at the end of "
          f"circuit formation is at least {EXCLUDED_RATIO:g}× its value at the end of "
          f"memorisation", _show_excluded),
    Claim("gini-cleanup",
          "The Gini coefficients of W_E's and W_L's Fourier norms rise during cleanup.",
          "both Gini coefficients rise sharply in cleanup (9.4k–14k epochs)",
          "§5.2 (Gini coefficients of W_E and W_L over training)",
          _measure_gini, _rule_gini,
          f"circuit formation and cleanup detected, and both Gini coefficients rise by at least "
          f"{GINI_RISE:g} from the end of circuit formation to the end of cleanup", _show_gini),
    Claim("phases",
          "Training splits into memorisation, circuit formation and cleanup, memorisation the "
          "shortest.",
          "memorisation 0–1.4k, circuit formation 1.4k–9.4k, cleanup 9.4k–14k epochs",
          "§5.2 (the three phases)",
          _measure_phases, _rule_phases,
          "all three boundaries detected (mechgrok's phase rule), in order, grokking between "
          "the end of circuit formation and the end of cleanup, and memorisation shorter than "
          "circuit formation", _show_phases),
)

_PAPER_SETTINGS = (
    Setting("task", "x + y mod 113, 30 % of pairs for training",
            f"{_CODE} l. 31, 33, 34 (Config.p, fn_name, frac_train)"),
    Setting("model", "1 layer, d_model 128, 4 heads (d_head 32), d_mlp 512, ReLU, no LayerNorm",
            f"{_CODE} l. 32, 46, 50–51, 53, 60"),
    Setting("optimiser", "AdamW, lr 1e-3, weight decay 1, betas (0.9, 0.98), 10-step warm-up",
            f"{_CODE} l. 29–30, 470–471"),
    Setting("batch", "full batch", f"{_CODE} l. 47 (batch_style = 'full')"),
    Setting("epochs", "50,000", f"{_CODE} l. 35 (num_epochs)"),
    Setting("loss", "cross-entropy in float64", f"{_CODE} l. 452 (cross_entropy_high_precision)"),
)

NANDA = Entry(
    name="nanda",
    paper=Paper("Nanda, Chan, Lieberum, Smith, Steinhardt", 2023,
                "Progress measures for grokking via mechanistic interpretability",
                "arXiv:2301.05217 (ICLR 2023)",
                "github.com/mechanistic-interpretability-grokking/progress-measures-paper"),
    summary="key frequencies, restricted and excluded loss, Gini, the three phases",
    claims=CLAIMS,
    budgets={
        QUICK: Budget(
            QUICK,
            (RunSet("main", "the quick preset (x + y mod 53, 40 %, d_model 64, lr 3e-3)",
                    {"preset": "quick", "train": {"epochs": 3000}}, probes=_PROBES,
                    checkpoints="full"),),
            seconds=150, measured=True,
            time_note="measured on this machine (docs/reproductions.md)",
            note="not the paper's settings: p = 53, 40 % data, a transformer of d_model 64 at "
                 "lr 3e-3, 3,000 epochs"),
        PAPER: Budget(
            PAPER,
            (RunSet("main", "the nanda preset at the paper's 50,000 epochs",
                    {"preset": "nanda", "train": {"epochs": 50_000}}, probes=_PROBES,
                    checkpoints="full"),),
            seconds=50_000 * 0.16 + 600, measured=False,
            time_note="estimate (160 ms an epoch measured here × 50,000, plus analysis); "
                      "not run yet",
            settings=_PAPER_SETTINGS),
    },
)

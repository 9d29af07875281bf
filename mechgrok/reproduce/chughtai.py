"""Chughtai, Chan, Nanda 2023, "A toy model of universality: reverse engineering how networks
learn group operations" (arXiv:2302.03025, ICML 2023): an MLP on composition in S5.

The paper's settings are those of its mainline run, `rep_theory/paper/mainline-S5/cfg.json` in
github.com/bilal-chughtai/rep-theory-mech-interp (commit 01b2063): `OneLayerMLP`
(`rep_theory/utils/models.py` lines 54–92: embeddings of 256 for x and y, concatenated, one
hidden layer of 128 ReLU units, no biases), AdamW lr 1e-3, weight decay 1, betas (0.9, 0.98),
40 % of the pairs, 250,000 full-batch epochs (`rep_theory/train_with_checkpoints.py` lines 69,
83–88: no warm-up). Its numbers: the mainline's key irreps `sign` and `standard`
(`mainline-S5/key_reps.txt`), the four S5 seeds of its universality table
(`rep_theory/paper/universality_results/mlp_all.csv`: {sign, standard-sign, standard, 5d-a},
{sign, standard}, {sign, standard, 5d-b}, {sign, standard}) and their mean restricted loss
2.2e-7 and excluded loss 11.7 (`mlp_avg.csv`).

Key irreps are read from the ``irreps`` probe's summary (``final_key``: Chughtai et al.'s rule,
logit similarity > 0.005 on the final checkpoint), named by partition: the standard irrep is
``(4,1)``, sign ``(1,1,1,1,1)``.

The quick budget is mechgrok's ``s5`` preset: the same network at lr 3e-3 and weight decay 3,
which groks in about 7,000 epochs here instead of tens of thousands, stopped 1,000 epochs
after grokking.

Settings mechgrok cannot match yet (said in the report): mechgrok's MLP shares one embedding
between x and y (the paper's has W_x and W_y) and draws it from N(0, 1) (theirs N(0, 1/256)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mechgrok.presets import PRESETS
from mechgrok.reproduce.entry import PAPER, QUICK, Budget, Claim, Entry, Paper, RunSet, Setting
from mechgrok.reproduce.evidence import Evidence

__all__ = ["CHUGHTAI", "STANDARD"]

#: the standard irrep of S5, by mechgrok's name (its partition)
STANDARD = "(4,1)"
_REPO = "rep-theory-mech-interp rep_theory/"
_PROBES = ("loss", "irreps")
#: the network, both budgets (what the paper's OneLayerMLP is in mechgrok's terms)
_NETWORK: dict[str, dict[str, Any]] = {
    "task": {"name": "s5", "frac_train": 0.4},
    "model": {"kind": "mlp", "embed": "learned", "d_embed": 256, "combine": "concat",
              "hidden": [128], "bias": False},
    "train": {"betas": [0.9, 0.98], "batch_size": None},
}


def _runs(ev: Evidence) -> list[dict[str, Any]]:
    out = []
    for r in ev.of("seeds"):
        irr = r.probe_summary("irreps")
        out.append({"seed": r.seed, "grokked": r.grokked, "test_acc": r.final_test_acc,
                    "key": irr.get("final_key"),
                    "aliases": {k: (irr.get("irreps") or {}).get(k, {}).get("alias", "")
                                for k in irr.get("final_key") or []},
                    "restricted_loss": irr.get("restricted_loss"),
                    "excluded_loss": irr.get("excluded_loss"), "n": r.config.task.n})
    return out


def _measure(ev: Evidence) -> dict[str, Any]:
    return {"runs": _runs(ev)}


def _grokked(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in m.get("runs") or [] if r["grokked"] and r.get("key") is not None]


def _rule_groks(m: Mapping[str, Any]) -> bool | None:
    runs = m.get("runs") or []
    return True if runs and all(r["grokked"] for r in runs) else None


def _rule_standard(m: Mapping[str, Any]) -> bool | None:
    g = _grokked(m)
    return all(STANDARD in r["key"] for r in g) if g else None


def _rule_vary(m: Mapping[str, Any]) -> bool | None:
    g = _grokked(m)
    if len(g) < 2:
        return None
    return len({tuple(sorted(r["key"])) for r in g}) >= 2


def _rule_suffice(m: Mapping[str, Any]) -> bool | None:
    g = [r for r in _grokked(m) if r["restricted_loss"] is not None
         and r["excluded_loss"] is not None]
    if not g:
        return None
    return all(r["restricted_loss"] < 0.01 and r["excluded_loss"] > math.log(r["n"]) for r in g)


def _keys(r: Mapping[str, Any]) -> str:
    return "{" + ", ".join(k + (f" {a}" if (a := r["aliases"].get(k)) else "")
                           for k in r["key"]) + "}"


def _each(m: Mapping[str, Any], what: Any) -> str:
    runs = m.get("runs") or []
    if not runs:
        return "no analysed run"
    return "; ".join(f"seed {r['seed']}: " + (what(r) if r["grokked"] else
                                               f"not grokked (test accuracy {r['test_acc']:.3f})")
                     for r in runs)


def _show_groks(m: Mapping[str, Any]) -> str:
    return _each(m, lambda r: f"grokked (test accuracy {r['test_acc']:.3f})")


def _show_keys(m: Mapping[str, Any]) -> str:
    return _each(m, lambda r: _keys(r) if r.get("key") is not None else "no irreps summary")


def _show_losses(m: Mapping[str, Any]) -> str:
    def one(r: Mapping[str, Any]) -> str:
        if r.get("restricted_loss") is None:
            return "no irreps summary"
        return f"restricted {r['restricted_loss']:.2g}, excluded {r['excluded_loss']:.3g}"
    return _each(m, one)


_UNIVERSALITY = f"{_REPO}paper/universality_results/mlp_all.csv (S5 rows)"

CLAIMS = (
    Claim("groks", "An MLP trained on 40 % of S5's products generalises to the rest.",
          "test accuracy 100 % (mainline: test loss 2.9e-6)",
          f"{_REPO}paper/mainline-S5/summary_metrics.json",
          _measure, _rule_groks,
          "every run grokked (test accuracy ≥ 99 % held to the end); a run that did not is "
          "not reached, never a difference", _show_groks),
    Claim("standard-is-key",
          "The key irreps (logit similarity > 0.005 on the final model) include the standard "
          "irrep (4,1).",
          "mainline: sign and standard; every S5 seed of the universality table includes "
          "standard", f"{_REPO}paper/mainline-S5/key_reps.txt; {_UNIVERSALITY}",
          _measure, _rule_standard,
          "every grokked run's final key irreps include (4,1)", _show_keys),
    Claim("irreps-vary",
          "Which irreps are key differs across seeds (the algorithm is the same, its irreps "
          "are not).",
          "4 seeds, 3 different sets: {sign, standard-sign, standard, 5d-a}, {sign, standard}, "
          "{sign, standard, 5d-b}, {sign, standard}", _UNIVERSALITY,
          _measure, _rule_vary,
          "at least two grokked runs, and at least two different sets of final key irreps "
          "among them", _show_keys),
    Claim("key-irreps-suffice",
          "Keeping only the key irreps' directions of the logits keeps the loss low; removing "
          "them destroys it.",
          "mean over S5 seeds: restricted loss 2.2e-7, excluded loss 11.7",
          f"{_REPO}paper/universality_results/mlp_avg.csv",
          _measure, _rule_suffice,
          "every grokked run's restricted loss (final key irreps) is below 0.01 and its "
          "excluded loss above ln |S5| = ln 120 (worse than chance)", _show_losses),
)

_PAPER_SETTINGS = (
    Setting("task", "x · y in S5, 40 % of the 14,400 pairs for training",
            f"{_REPO}paper/mainline-S5/cfg.json (group, group_parameter, frac_train)"),
    Setting("model", "embeddings of 256 for x and y, concatenated → 128 ReLU → 120, no biases",
            f"{_REPO}utils/models.py l. 54–92 (OneLayerMLP); cfg.json layers"),
    Setting("optimiser", "AdamW, lr 1e-3, weight decay 1, betas (0.9, 0.98), no warm-up",
            f"{_REPO}paper/mainline-S5/cfg.json; train_with_checkpoints.py l. 69"),
    Setting("batch", "full batch", f"{_REPO}train_with_checkpoints.py l. 84–88"),
    Setting("epochs", "250,000", f"{_REPO}paper/mainline-S5/cfg.json (num_epochs)"),
    Setting("seeds", "4 (the universality table's S5 seeds 1–4)", _UNIVERSALITY),
)


def _base(**train: Any) -> dict[str, Any]:
    """The network, on the ``s5`` preset when there is one, with ``train`` settings."""
    base: dict[str, Any] = {k: dict(v) for k, v in _NETWORK.items()}
    base["train"].update(train)
    return {"preset": "s5", **base} if "s5" in PRESETS else base


CHUGHTAI = Entry(
    name="chughtai",
    paper=Paper("Chughtai, Chan, Nanda", 2023,
                "A toy model of universality: reverse engineering how networks learn group "
                "operations", "arXiv:2302.03025 (ICML 2023)",
                "github.com/bilal-chughtai/rep-theory-mech-interp"),
    summary="an MLP on S5 groks; its key irreps include the standard one and vary by seed",
    claims=CLAIMS,
    budgets={
        QUICK: Budget(
            QUICK,
            (RunSet("seeds", "S5 MLP at lr 3e-3, weight decay 3, 2 seeds",
                    _base(lr=3e-3, weight_decay=3.0, warmup_steps=10, epochs=16_000,
                          eval_every=50, stop_after_grok=20, checkpoints_per_decade=10,
                          checkpoint_schedule="log"),
                    seeds=(0, 1), probes=_PROBES),),
            seconds=405, measured=True,
            time_note="measured on this machine (docs/reproductions.md)",
            note="not the paper's settings: lr 3e-3 and weight decay 3 (the paper: 1e-3 and 1), "
                 "2 seeds, stopped 1,000 epochs after grokking (at most 16,000 epochs)"),
        PAPER: Budget(
            PAPER,
            (RunSet("seeds", "the mainline settings, 4 seeds",
                    _base(lr=1e-3, weight_decay=1.0, warmup_steps=0, epochs=250_000,
                          stop_after_grok=None),
                    seeds=(1, 2, 3, 4), probes=_PROBES),),
            seconds=4 * 250_000 * 0.033, measured=False,
            time_note="estimate (33 ms an epoch measured here × 250,000 × 4 seeds); not run yet",
            settings=_PAPER_SETTINGS,
            note="mechgrok's MLP shares one embedding between x and y and draws it from "
                 "N(0, 1); the paper's has two, drawn from N(0, 1/256)"),
    },
)

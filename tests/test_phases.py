"""Phase rules on hand-built curves (no training): each expected epoch is worked out by hand
from the rule in ``mechgrok.probes.phases`` and the piecewise-linear knots below."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechgrok.probes.phases import (
    PhaseRules,
    detect_phases,
    first_held,
    first_reached,
    liu_label,
)

E = np.arange(0, 20001, 100)  # evaluation every 100 epochs: the sampling resolution


def nanda_run(end: int = 20000) -> dict[str, np.ndarray]:
    """A run shaped like Nanda et al.'s p = 113 reference (phases ~0–1.4k / 1.4k–9.4k / 9.4k–14k).

    * train accuracy e/1400, so 1.0 (held) from 1400;
    * test accuracy 0.01 → 0.02 at 9000 → 0.995 at 10000 → 1.0, with a one-sample blip to 0.995
      at 9500 (reached, not held);
    * log10 test loss 0.67 → peak 1.2 at 3000 → 1.1 at 9300 → sudden fall to −6.8 at 10300;
    * sum of squared weights 3000 → 2000 at 10000 → 1150 at 13800 → 1000 at 14000 → 990 at 20000;
    * excluded loss (every 250 epochs) with a global minimum 0.1 at 250 (before train_99), the
      minimum 0.5 at 1500 inside [train_99, grokking epoch], and 0.2 from 15000 (after grokking).
    """
    e = E[E <= end]
    test_acc = np.interp(e, [0, 9000, 10000, 20000], [0.01, 0.02, 0.995, 1.0])
    test_acc[e == 9500] = 0.995
    xe = np.arange(0, end + 1, 250)
    return {
        "epochs": e,
        "train_acc": np.clip(e / 1400, 0, 1),
        "test_acc": test_acc,
        "test_loss": 10 ** np.interp(e, [0, 3000, 9300, 10300, 20000],
                                     [0.67, 1.2, 1.1, -6.8, -6.8]),
        "sum_sq_weights": np.interp(e, [0, 10000, 13800, 14000, 20000],
                                    [3000, 2000, 1150, 1000, 990]),
        "excluded_loss_epochs": xe,
        "excluded_loss": np.interp(xe, [0, 250, 750, 1500, 9000, 10500, 15000, 20000],
                                   [4.6, 0.1, 2.0, 0.5, 3.0, 8.0, 0.2, 0.2]),
    }


def main_curves(run: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in run.items() if not k.startswith("excluded")}


# --- first_held / first_reached ---------------------------------------------------------------


def test_first_held_and_first_reached_differ_on_a_dip() -> None:
    e = [0, 10, 20, 30, 40]
    v = [0.5, 0.995, 0.98, 0.999, 1.0]
    assert first_reached(e, v, 0.99) == 10
    assert first_held(e, v, 0.99) == 30
    assert first_held(e, [0.5, 0.995, 0.999, 1.0, 0.98], 0.99) is None  # last value below
    assert first_reached(e, [0.1] * 5, 0.99) is None
    assert first_held(e, [0.99] * 5, 0.99) == 0  # ≥, not >
    assert first_held([], [], 0.99) is None and first_reached([], [], 0.99) is None


def test_crossings_return_python_ints() -> None:
    e = np.array([0, 5, 9], dtype=np.int64)
    assert type(first_held(e, np.array([0.0, 1.0, 1.0]), 0.5)) is int
    assert type(first_reached(e, np.array([0.0, 1.0, 1.0]), 0.5)) is int


def test_nan_counts_as_below() -> None:
    assert first_held([0, 1, 2], [1.0, float("nan"), 1.0], 0.99) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 0.98, 0.99, 0.995, 1.0]), max_size=12),
       st.integers(1, 50))
def test_crossings_match_their_definitions(values: list[float], step: int) -> None:
    e = [i * step for i in range(len(values))]
    held = [e[i] for i in range(len(values)) if all(v >= 0.99 for v in values[i:])]
    reached = [e[i] for i, v in enumerate(values) if v >= 0.99]
    assert first_held(e, values, 0.99) == (held[0] if held else None)
    assert first_reached(e, values, 0.99) == (reached[0] if reached else None)


# --- detect_phases: the reference-like run ----------------------------------------------------


def test_nanda_like_run_boundaries() -> None:
    res = detect_phases(**nanda_run())
    assert res["train_99"] == 1400
    assert res["grokking_epoch"] == 10000  # not the 9500 blip: it must hold
    assert res["grokking_delay"] == 8600
    # excluded loss: minimum inside [1400, 10000] is at 1500 (not the global 250 or the 15000
    # after grokking)
    assert res["memorisation_end"] == 1500
    # log10 loss: peak 1.2 at 3000, later min −6.8, target 1.2 − 0.1·8.0 = 0.4; L(9300) = 1.1,
    # L(9400) = 1.1 − 7.9·0.1 = 0.31. (On the raw loss the same rule would fire near 5900.)
    assert res["circuit_formation_end"] == 9400
    # W_g = 2000, W_f = 990, target 2000 − 0.9·1010 = 1091; W(13800) = 1150, W(13900) = 1075
    assert res["cleanup_end"] == 13900
    assert res["notes"] == []
    assert "circuit_drop=0.1" in res["phase_rule"] and "cleanup_frac=0.9" in res["phase_rule"]
    # the paper's eye-marked boundaries, within the sampling resolution (100; 250 for the
    # excluded loss)
    assert abs(res["memorisation_end"] - 1400) <= 250
    assert abs(res["circuit_formation_end"] - 9400) <= 100
    assert abs(res["cleanup_end"] - 14000) <= 100
    assert res["memorisation_end"] <= res["circuit_formation_end"] <= res["cleanup_end"]
    assert all(type(res[k]) is int for k in ("train_99", "grokking_epoch", "grokking_delay",
                                             "memorisation_end", "circuit_formation_end",
                                             "cleanup_end"))


def test_without_excluded_loss_memorisation_ends_at_train_99() -> None:
    res = detect_phases(**main_curves(nanda_run()))
    assert res["memorisation_end"] == 1400
    assert res["circuit_formation_end"] == 9400  # the peak at 3000 is still in the window
    assert res["cleanup_end"] == 13900


def test_accepts_plain_lists() -> None:
    run = {k: list(v) for k, v in nanda_run().items()}
    assert detect_phases(**run)["cleanup_end"] == 13900


def test_excluded_loss_that_never_turns_upward_is_noted() -> None:
    run = nanda_run()
    run["excluded_loss"] = 10.0 - run["excluded_loss_epochs"] / 2500  # falls throughout
    res = detect_phases(**run)
    assert res["memorisation_end"] == 10000  # last excluded sample in [1400, 10000]
    assert any("did not turn upward" in n for n in res["notes"])


def test_circuit_peak_is_searched_after_memorisation() -> None:
    # a higher loss peak before memorisation ends must not count: with the window starting at
    # 0 the target would be 3.0 − 0.1·9.8 = 2.02, reached right after the early peak
    run = main_curves(nanda_run())
    e = run["epochs"]
    run["test_loss"] = np.where(e == 500, 1000.0, run["test_loss"])
    assert detect_phases(**run)["circuit_formation_end"] == 9400


def test_zero_test_loss_is_floored_not_minus_infinity() -> None:
    run = main_curves(nanda_run())
    run["test_loss"] = np.where(run["epochs"] >= 10300, 0.0, run["test_loss"])
    # floor = smallest positive loss, L(10200) = 1.1 − 7.9·0.9 = −6.01; target 1.2 − 0.721
    assert detect_phases(**run)["circuit_formation_end"] == 9400


# --- cleanup ----------------------------------------------------------------------------------


def test_cleanup_uses_the_minimum_not_a_rebounding_last_value() -> None:
    run = main_curves(nanda_run())
    run["sum_sq_weights"] = np.interp(run["epochs"], [0, 10000, 14050, 20000],
                                      [3000, 2000, 1000, 1500])
    # W_f = W(14100) ≈ 1004.2, target ≈ 1103.8, W = 2000 − t/4.05 after 10000 → 13700.
    # (With the last value 1500 as W_f the target would be 1550, reached at 11900.)
    res = detect_phases(**run)
    assert res["cleanup_end"] == 13700
    assert not any("levelled" in n for n in res["notes"])


def test_run_ending_before_the_norm_levels_off_is_noted() -> None:
    res = detect_phases(**main_curves(nanda_run(end=14000)))
    # W_f = 1000 at 14000, target 1100, W(13900) = 1075; after it W falls 0.75/epoch, faster
    # than during cleanup (925/3900)
    assert res["cleanup_end"] == 13900
    assert any("before the weight norm levelled off" in n for n in res["notes"])
    # the full run levels off: after 13900 W falls (1075 − 990)/6100 ≈ 0.0139 per epoch, 0.059
    # of its rate during cleanup (925/3900 ≈ 0.237); only a level_ratio below that flags it
    assert not any("levelled" in n for n in detect_phases(**nanda_run())["notes"])
    strict = detect_phases(**main_curves(nanda_run()), rules=PhaseRules(level_ratio=0.05))
    assert strict["cleanup_end"] == 13900
    assert any("before the weight norm levelled off" in n for n in strict["notes"])


def test_cleanup_at_the_last_evaluation_is_noted() -> None:
    res = detect_phases([0, 100, 200, 300], [1, 1, 1, 1], [0, 1, 1, 1], [2.0, 1.0, 0.1, 0.01],
                        [10.0, 10.0, 9.0, 1.0])
    # W_g = 10, W_f = 1, target 1.9: only the last evaluation
    assert res["cleanup_end"] == 300
    assert any("cleanup_end 300 is the last evaluation" in n for n in res["notes"])


def test_flat_weight_norm_cleanup_is_the_grokking_epoch() -> None:
    run = main_curves(nanda_run())
    run["sum_sq_weights"] = np.full(run["epochs"].size, 500.0)
    res = detect_phases(**run)
    assert res["cleanup_end"] == 10000
    assert any("does not fall below" in n for n in res["notes"])


# --- monotone order ---------------------------------------------------------------------------


def test_boundaries_are_clipped_into_order() -> None:
    # test acc holds from 5000, the loss peaks at 5000, stays there and only falls from 8000;
    # the weight norm is flat, so the raw cleanup end (5000) precedes circuit formation (8200)
    e = E
    res = detect_phases(e, np.where(e >= 1000, 1.0, 0.5), np.where(e >= 5000, 1.0, 0.3),
                        10 ** np.interp(e, [0, 5000, 8000, 9500, 20000],
                                        [0.0, 1.0, 1.0, -5.0, -5.0]),
                        np.full(e.size, 500.0))
    # target 1 − 0.1·6 = 0.4; L(8100) = 0.6, L(8200) = 0.2
    assert res["circuit_formation_end"] == 8200
    assert res["cleanup_end"] == 8200
    assert any("cleanup end 5000 came before" in n for n in res["notes"])
    assert res["memorisation_end"] <= res["circuit_formation_end"] <= res["cleanup_end"]


def test_test_loss_that_never_falls_gives_no_circuit_boundary() -> None:
    e = E
    res = detect_phases(e, np.where(e >= 1000, 1.0, 0.5), np.where(e >= 5000, 1.0, 0.3),
                        np.linspace(1.0, 2.0, e.size), np.full(e.size, 500.0))
    assert res["grokking_epoch"] == 5000
    assert res["circuit_formation_end"] is None
    assert any("never fell below its peak" in n for n in res["notes"])


# --- runs that do not grok --------------------------------------------------------------------


def test_memorisation_only_run() -> None:
    run = main_curves(nanda_run())
    run["test_acc"] = np.interp(run["epochs"], [0, 20000], [0.01, 0.5])
    res = detect_phases(**run)
    assert res["train_99"] == 1400 and res["memorisation_end"] == 1400
    assert res["grokking_epoch"] is None and res["grokking_delay"] is None
    assert res["circuit_formation_end"] is None and res["cleanup_end"] is None
    assert any("test accuracy never held ≥ 99 %: no circuit-formation or cleanup boundary" in n
               for n in res["notes"])
    label, fig = liu_label(run["epochs"], run["train_acc"], run["test_acc"])
    assert label == "memorisation" and fig["train_90"] == 1300 and fig["test_90"] is None


def test_confusion_run() -> None:
    e = E
    tr = np.interp(e, [0, 20000], [0.01, 0.6])
    res = detect_phases(e, tr, tr / 2, np.ones(e.size), np.full(e.size, 9.0))
    assert all(res[k] is None for k in ("train_99", "grokking_epoch", "grokking_delay",
                                        "memorisation_end", "circuit_formation_end",
                                        "cleanup_end"))
    assert any("train accuracy never held" in n for n in res["notes"])
    assert liu_label(e, tr, tr / 2) == ("confusion", {"train_90": None, "test_90": None,
                                                      "ratio": None})


# --- Liu et al. labels ------------------------------------------------------------------------


def test_liu_grokking_uses_first_reached() -> None:
    run = nanda_run()
    label, fig = liu_label(run["epochs"], run["train_acc"], run["test_acc"])
    assert label == "grokking"
    assert fig["train_90"] == 1300  # 1260/1400 → first sample at 1300
    assert fig["test_90"] == 9500  # the blip counts: reached, not held
    assert fig["ratio"] == pytest.approx(9500 / 1300)


def test_liu_comprehension_and_the_ratio_boundary() -> None:
    e = np.arange(0, 2001, 50)
    tr = np.clip(e / 220, 0, 1)  # 0.9 at 198 → 200
    te = np.clip(e / 330, 0, 1)  # 0.9 at 297 → 300
    label, fig = liu_label(e, tr, te)
    assert (label, fig["train_90"], fig["test_90"], fig["ratio"]) == ("comprehension", 200,
                                                                      300, 1.5)
    assert liu_label(e, tr, te, PhaseRules(liu_delay_ratio=1.2))[0] == "grokking"
    at_two = np.where(e >= 400, 1.0, 0.0)  # test at exactly 2 × 200: still comprehension
    assert liu_label(e, tr, at_two)[0] == "comprehension"
    after_two = np.where(e >= 450, 1.0, 0.0)
    assert liu_label(e, tr, after_two)[0] == "grokking"
    res = detect_phases(e, tr, te, np.ones(e.size), np.full(e.size, 9.0))
    assert res["grokking_delay"] == 350 - 250  # ≥ 0.99 from 217.8 → 250 and 326.7 → 350


def test_liu_label_rejects_empty_curves() -> None:
    with pytest.raises(ValueError, match="at least one evaluation"):
        liu_label([], [], [])


# --- validation -------------------------------------------------------------------------------


def test_empty_input_gives_none_and_a_note() -> None:
    res = detect_phases([], [], [], [], [])
    assert all(res[k] is None for k in ("train_99", "grokking_epoch", "grokking_delay",
                                        "memorisation_end", "circuit_formation_end",
                                        "cleanup_end"))
    assert res["notes"] == ["no evaluations: no phase boundary can be found"]


@pytest.mark.parametrize("change, match", [
    ({"test_loss": [1.0, 1.0]}, "test_loss has 2 values but epochs has 3"),
    ({"epochs": [0, 100, 100]}, "strictly increasing"),
    ({"epochs": [0, 200, 100]}, "strictly increasing"),
    ({"epochs": [0, 0.5, 1]}, "whole numbers"),
    ({"train_acc": [10.0, 50.0, 99.0]}, r"fractions in \[0, 1\]"),
    ({"test_loss": [1.0, -0.1, 1.0]}, "test_loss must be finite"),
    ({"sum_sq_weights": [1.0, float("nan"), 1.0]}, "sum_sq_weights must be finite"),
    ({"excluded_loss": [1.0, 2.0]}, "give both"),
    ({"excluded_loss_epochs": [0, 100], "excluded_loss": [1.0]}, "excluded_loss has 1 values"),
    ({"excluded_loss_epochs": [100, 0], "excluded_loss": [1.0, 2.0]},
     "excluded_loss_epochs must be strictly increasing"),
])
def test_detect_phases_rejects_bad_input(change: dict, match: str) -> None:
    args = {"epochs": [0, 100, 200], "train_acc": [0.1, 1.0, 1.0], "test_acc": [0.1, 0.5, 1.0],
            "test_loss": [1.0, 2.0, 0.1], "sum_sq_weights": [5.0, 5.0, 4.0]}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        detect_phases(**args)


def test_crossings_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="values has 2 values but epochs has 3"):
        first_held([0, 1, 2], [1.0, 1.0], 0.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        first_reached([0, 2, 1], [1.0, 1.0, 1.0], 0.5)


@pytest.mark.parametrize("kw, match", [
    ({"acc": 99}, r"acc is an accuracy as a fraction in \(0, 1\]"),
    ({"acc": 0}, "acc is an accuracy"),
    ({"liu_acc": 1.5}, "liu_acc is an accuracy"),
    ({"circuit_drop": 0.0}, r"circuit_drop is a fraction in \(0, 1\]"),
    ({"cleanup_frac": 1.2}, "cleanup_frac is a fraction"),
    ({"level_ratio": -1.0}, "level_ratio is a fraction"),
    ({"liu_delay_ratio": 0.5}, "liu_delay_ratio must be ≥ 1"),
    ({"acc": True}, "must be a finite number"),
    ({"circuit_drop": float("nan")}, "must be a finite number"),
    ({"cleanup_frac": "0.9"}, "must be a finite number"),
])
def test_phase_rules_validation(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PhaseRules(**kw)


def test_phase_rules_defaults_are_the_documented_ones() -> None:
    r = PhaseRules()
    assert (r.acc, r.circuit_drop, r.cleanup_frac, r.level_ratio, r.liu_acc,
            r.liu_delay_ratio) == (0.99, 0.1, 0.9, 0.5, 0.9, 2.0)
    with pytest.raises(AttributeError):
        r.acc = 0.5  # type: ignore[misc]


def test_rules_change_the_boundaries() -> None:
    # circuit_drop 0.5: target 1.2 − 0.5·8.0 = −2.8; L(9800) = 1.1 − 7.9·0.5 = −2.85 ≤ −2.8,
    # L(9700) = −2.06
    res = detect_phases(**main_curves(nanda_run()), rules=PhaseRules(circuit_drop=0.5))
    assert res["circuit_formation_end"] == 9800
    assert "circuit_drop=0.5" in res["phase_rule"]

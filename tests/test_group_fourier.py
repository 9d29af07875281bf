"""Fourier over Z_p* (mul, div): the non-zero residues read in discrete-log order as Z_{p−1}.

Known answers come from models built by hand to compute through one frequency k of Z_{p−1}
(x = g^i ↦ (cos wi, sin wi), w = 2πk/(p − 1)): the Fourier probes must find exactly k by every
rule, restricted loss equal to the full loss and excluded loss log p (the logits are nothing
but that frequency). The identity view keeps add/sub's numbers bit-identical.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from mechgrok.analysis import analyze_model
from mechgrok.config import resolve_config
from mechgrok.measures import discrete_log_table, fourier_view, power_table, primitive_root
from mechgrok.probes.base import RunContext
from mechgrok.tasks import get_task, make_dataset
from tests.test_protocol import PlainClock

P, K, SCALE = 31, 7, 300.0  # Z_31* has order 30: frequencies 1 … 15 (the last the sign); 7 ⊥ 30


class LogClock(PlainClock):
    """x · y (``op="add"``) or x · y⁻¹ (``"sub"``) mod p through frequency k of Z_{p−1}: the
    embedding of x = g^i is (cos wi, sin wi) (0 embeds at the origin), the neurons are the
    four products, and the logit of class z = g^l is scale · cos(w(i ± j − l)); class 0's is 0."""

    def __init__(self, p: int, k: int, scale: float, op: str):
        torch.nn.Module.__init__(self)
        self.n_classes = p
        log = torch.tensor(discrete_log_table(p)[1:], dtype=torch.float64)
        w = 2 * math.pi * k * log / (p - 1)
        c = torch.cat([torch.zeros(1, dtype=torch.float64), w.cos()])  # token 0 first
        s = torch.cat([torch.zeros(1, dtype=torch.float64), w.sin()])
        self.W_E = torch.nn.Parameter(torch.stack([c, s], 1))  # (p, 2)
        sign = 1.0 if op == "add" else -1.0
        # cos(w(i ± j)) = cxcy ∓ sxsy, sin(w(i ± j)) = sxcy ± cxsy
        rows = [c, -sign * c, s, sign * s]
        self.W_L = torch.nn.Parameter(scale * torch.stack(rows))  # (4, p)


def test_the_view_reads_pairs_in_discrete_log_order() -> None:
    for name, op in (("mul", "add"), ("div", "sub")):
        view = fourier_view(name, P)
        assert view is not None and view.n == P - 1 and view.op == op and view.log_order
        assert (view.tokens == power_table(P)).all() and view.tokens[1] == primitive_root(P)
        t = get_task(name)
        pairs = t.pairs(P)[view.pairs]
        i = np.arange(P - 1)
        s = (i[:, None] + i[None, :]) if op == "add" else (i[:, None] - i[None, :])
        want = view.tokens[(s % (P - 1)).ravel()]
        assert (t.answer(pairs[:, 0], pairs[:, 1], P) == want).all()
        assert (pairs != 0).all() and len(set(view.pairs.tolist())) == (P - 1) ** 2
    for name in ("add", "sub"):
        view = fourier_view(name, P)
        assert view is not None and view.identity and view.n == P
    assert fourier_view("s5") is None and fourier_view("quad1", P) is None


@pytest.mark.parametrize("task, op", [("mul", "add"), ("div", "sub")])
def test_hand_built_log_clock(task: str, op: str) -> None:
    res = analyze_model(LogClock(P, K, SCALE, op), task, P,
                        probes=["key_freqs", "restricted", "fourier_embed", "gini",
                                "clock_pizza"])
    kf = res["key_freqs"]
    for rule in ("neurons_rule", "embedding_rule", "logit_map_rule"):
        assert (np.flatnonzero(kf[rule]) + 1).tolist() == [K], rule
    assert len(kf["neurons_rule"]) == (P - 1) // 2  # frequencies over Z_{p−1}
    assert kf["cluster_sizes"][K - 1] == 4 and kf["frac_clustered"] == 1.0
    assert res["fourier_embed"]["top_freq"] == K
    assert res["gini"]["embedding"] == pytest.approx(1 - 2 / (P - 1), abs=1e-9)
    r = res["restricted"]
    assert r["full_loss"] < 1e-2 and r["n_keys"] == 1
    assert r["restricted_loss"] == pytest.approx(r["full_loss"], rel=1e-9, abs=1e-12)
    # every class column is that frequency (or 0): removing it leaves uniform logits
    assert r["excluded_loss"] == pytest.approx(math.log(P), rel=1e-9)
    assert "clock/pizza is defined on Z_p's residues" in res["clock_pizza"]["n/a"]


def test_a_wrong_frequency_is_not_found() -> None:
    """The same model read in the integers' order (as if Z_p) finds no clean frequency: the
    discrete-log order is what makes the circuit visible."""
    res = analyze_model(LogClock(P, K, SCALE, "add"), "mul", P, probes=["key_freqs"],
                        final_model=LogClock(P, K + 1, SCALE, "add"))
    assert (np.flatnonzero(res["key_freqs"]["neurons_rule"]) + 1).tolist() == [K]
    emb = LogClock(P, K, SCALE, "add").W_E.detach()[1:]  # integer order 1 … p − 1
    from mechgrok.probes import fourier

    norms = fourier.frequency_norms(emb)
    assert float(norms.max()) < 0.6 * float(norms.norm())  # spread over many frequencies


def test_fourier_reasons_read_the_algebra() -> None:
    def ctx(name: str, p: int | None) -> RunContext:
        cfg = resolve_config("quick", overrides={"task.name": name, "task.p": p})
        data = make_dataset(name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
        return RunContext(types.SimpleNamespace(config=cfg), data)  # type: ignore[arg-type]

    for name in ("add", "sub", "mul", "div"):
        assert ctx(name, 7).fourier_reason() is None
    assert ctx("mul", 7).z_p_reason() == ("defined on Z_p's residues (add and sub); mul is a "
                                          "rule in the multiplicative group Z_p*")
    assert "irreps probe" in (ctx("s5", None).fourier_reason() or "")
    assert "spectrum2d" in (ctx("quad1", 7).fourier_reason() or "")


@pytest.mark.parametrize("task", ["div", "mul"])
def test_a_trained_div_or_mul_run_is_analysed_in_z_p_star(task: str, tmp_path) -> None:
    """div has p(p − 1) pairs (no y = 0): its stored split is read as such (it used to be held
    to p² pairs, so no div run could be analysed), and every Fourier probe runs over Z_{p−1}."""
    from mechgrok.analysis import analyze, measures_table
    from tests.conftest import tiny_config

    cfg = tiny_config(**{"task.name": task, "train.epochs": 40, "train.checkpoint_every": 20})
    from mechgrok.training import train

    train(cfg, tmp_path / "r", progress=False)
    res = analyze(tmp_path / "r", progress=False)
    assert not res.errors, res.errors
    assert res.not_applicable.keys() == {"clock_pizza", "spectrum2d", "irreps"}
    last = measures_table(tmp_path / "r")[-1]
    assert last["key_freqs.status"] == "ok" and last["fourier_embed.top_freq"] <= 5  # Z_10
    assert len(res.run.dataset().labels) == (11 * 10 if task == "div" else 121)

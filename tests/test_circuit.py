"""Restricted/excluded loss and variance explained in a group's irreps (measures.circuit) and
the ``irreps`` probe, on cases with known answers: logit tables and a model built by hand to
compute x·y in S5 through one chosen irrep, and the Fourier definitions on Z_p (to 1e-9, on a
trained model's logits)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechgrok.analysis import analyze_model
from mechgrok.measures import (
    answer_table,
    find_irrep,
    group,
    irreps,
    key_irreps,
    logit_similarities,
    variance_explained,
)
from mechgrok.measures.circuit import (
    answer_directions,
    answer_variance_explained,
    cross_entropy,
    restricted_and_excluded,
)
from mechgrok.probes import fourier
from tests.test_protocol import PlainClock


def _char_logits(gname: str, rep: str, rule: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """L[(x, y), z] = scale · χ_ρ(a(x, y) z⁻¹) and the labels a(x, y)."""
    g = group(gname)
    chi = find_irrep(g, rep).character
    a = answer_table(g, rule).reshape(-1)
    return scale * chi[g.mul[a][:, g.inv]], a


@pytest.mark.parametrize("gname, rule", [("C7", "xy"), ("C8", "xy^-1"), ("S4", "xyx^-1"),
                                         ("Z11*", "xy")])
def test_answer_directions_are_orthonormal(gname: str, rule: str) -> None:
    g = group(gname)
    q = answer_directions(g, [r.name for r in irreps(g)[1:]], rule)
    assert q.shape == (g.order ** 2, g.order)  # all irreps: every function of the answer
    assert np.allclose(q.T @ q, np.eye(g.order), atol=1e-12)


@pytest.mark.parametrize("p, op", [(7, "add"), (8, "sub"), (13, "add")])
def test_directions_on_z_p_are_nandas(p: int, op: str) -> None:
    keys = [1, p // 2] if p > 7 else [2, 3]
    q = answer_directions(group(f"C{p}"), [f"k={k}" for k in keys],
                          "xy" if op == "add" else "xy^-1")
    f = fourier.sum_direction_basis(p, keys, op).numpy()
    assert np.allclose(q @ q.T, f @ f.T, atol=1e-12)  # the same span, constant included


def test_a_table_of_one_irrep(scale: float = 30.0) -> None:
    """scale·χ_ρ(a z⁻¹) is ρ and nothing else: similarity 1 with ρ and 0 with every other,
    restricted loss = full loss, and removing ρ leaves constant logits: loss log |G|."""
    for gname, rep, rule in (("S5", "(4,1)", "xy"), ("S4", "(2,2)", "xyx"),
                             ("S5", "(3,1,1)", "xyx^-1")):
        g = group(gname)
        L, a = _char_logits(gname, rep, rule, scale)
        sims = logit_similarities(L, g, rule=rule)
        assert sims[rep] == pytest.approx(1.0, abs=1e-12)
        assert all(abs(v) < 1e-9 for k, v in sims.items() if k != rep)
        assert key_irreps(sims) == [rep]
        r = restricted_and_excluded(L, a, g, [rep], rule)
        assert r["restricted_loss"] == pytest.approx(cross_entropy(L, a), rel=1e-9)
        assert r["excluded_loss"] == pytest.approx(math.log(g.order), rel=1e-9)
        assert r["excluded_loss_per_irrep"] == {rep: pytest.approx(math.log(g.order), rel=1e-9)}
        other = next(x.name for x in irreps(g)[1:] if x.name != rep)
        r2 = restricted_and_excluded(L, a, g, [other], rule)
        assert r2["excluded_loss"] == pytest.approx(cross_entropy(L, a), rel=1e-9)
        assert r2["restricted_loss"] == pytest.approx(math.log(g.order), rel=1e-9)


def test_losses_equal_their_definition_on_random_logits() -> None:
    """The per-answer-sum computation equals the projection written out with the matrix."""
    g, rule = group("S4"), "xyx"
    rng = np.random.default_rng(0)
    L = rng.normal(size=(g.order ** 2, g.order + 3))  # extra classes, as a task's token 0
    y = rng.integers(0, g.order, g.order ** 2)
    keys = ["(3,1)", "(2,1,1)"]
    train = rng.choice(g.order ** 2, 200, replace=False)
    r = restricted_and_excluded(L, y, g, keys, rule, train)
    q = answer_directions(g, keys, rule)
    kept = q @ (q.T @ L)
    assert r["restricted_loss"] == pytest.approx(
        cross_entropy(kept + (L - kept).mean(0, keepdims=True), y), rel=1e-12)
    q1 = answer_directions(g, keys, rule, include_trivial=False)
    assert r["excluded_loss"] == pytest.approx(
        cross_entropy((L - q1 @ (q1.T @ L))[train], y[train]), rel=1e-12)
    for k in keys:
        qk = answer_directions(g, [k], rule, include_trivial=False)
        assert r["excluded_loss_per_irrep"][k] == pytest.approx(
            cross_entropy((L - qk @ (qk.T @ L))[train], y[train]), rel=1e-12)


def test_answer_variance_explained() -> None:
    g, rule = group("S4"), "xy"
    a = answer_table(g, rule).reshape(-1)
    rep = find_irrep(g, "(3,1)")
    acts = rep.matrices[a].reshape(len(a), -1) + 5.0  # entries of ρ(xy), plus a constant
    got = answer_variance_explained(acts, g, irreps(g), rule)
    want = np.array([1.0 if r.name == "(3,1)" else 0.0 for r in irreps(g)])
    assert np.allclose(got, want, atol=1e-12)
    x = np.repeat(np.arange(g.order), g.order)
    only_x = rep.matrices[x].reshape(len(x), -1)  # a function of x alone: no answer direction
    assert np.allclose(answer_variance_explained(only_x, g, irreps(g), rule), 0, atol=1e-12)
    assert (answer_variance_explained(np.ones((g.order ** 2, 3)), g, irreps(g)) == 0).all()


def test_z_p_core_equals_the_fourier_probes_on_a_trained_model(tmp_path: Path) -> None:
    """The representation core on add and sub reproduces Nanda's restricted and excluded loss
    (mechgrok.probes.fourier) to 1e-9 on the logits of a model trained for real."""
    from mechgrok.store import Run
    from mechgrok.training import train
    from tests.conftest import tiny_config

    for op, rule in (("add", "xy"), ("sub", "xy^-1")):
        cfg = tiny_config(**{"task.name": op, "train.epochs": 150})
        train(cfg, tmp_path / op, progress=False)
        run = Run(tmp_path / op)
        model, data = run.load_model(run.checkpoint()), run.dataset()
        p = cfg.task.p
        with torch.no_grad():
            logits = model(torch.from_numpy(data.tokens))[:, -1].double()
        labels = torch.from_numpy(data.labels)
        train_idx = torch.as_tensor(data.train_idx)
        for keys in ([1], [2, 5], list(range(1, p // 2 + 1))):
            want = fourier.restricted_and_excluded(logits, labels, keys, p, op, train_idx)
            got = restricted_and_excluded(logits.numpy(), data.labels, group(f"C{p}"),
                                          [f"k={k}" for k in keys], rule, data.train_idx)
            assert got["restricted_loss"] == pytest.approx(want["restricted_loss"], abs=1e-9)
            assert got["excluded_loss"] == pytest.approx(want["excluded_loss"], abs=1e-9)
            for k in keys:
                assert got["excluded_loss_per_irrep"][f"k={k}"] == pytest.approx(
                    want["excluded_loss_per_frequency"][k], abs=1e-9)


class IrrepModel(PlainClock):
    """x·y in S_n through one irrep ρ of dimension d (orthogonal: ρ(z)⁻¹ = ρ(z)ᵀ): the embedding
    of x is ρ(x) flattened; the d² neurons are the entries of ρ(x)ρ(y) = ρ(xy); the logit of z is
    scale · tr(ρ(xy) ρ(z)ᵀ) = scale · χ(xy z⁻¹), largest (scale · d) at z = xy."""

    def __init__(self, gname: str, rep: str, scale: float):
        torch.nn.Module.__init__(self)
        g = group(gname)
        mats = torch.from_numpy(np.array(find_irrep(g, rep).matrices))  # (order, d, d)
        self.n_classes, self.d = g.order, mats.shape[1]
        self.W_E = torch.nn.Parameter(mats.reshape(g.order, -1).clone())
        self.W_L = torch.nn.Parameter(scale * mats.reshape(g.order, -1).T.clone())

    def _forward(self, tokens: torch.Tensor, hooks: dict[str, list]) -> torch.Tensor:
        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            for fn in hooks.get(name, ()):
                out = fn(act, name)
                act = act if out is None else out
            return act

        e = at("hook_embed", self.W_E[tokens[:, :2]])  # (batch, 2, d²)
        rx = e[:, 0].reshape(-1, self.d, self.d)
        ry = e[:, 1].reshape(-1, self.d, self.d)
        h = at("neurons", (rx @ ry).reshape(len(tokens), -1))  # (batch, d²)
        return h @ self.W_L


@pytest.fixture(scope="module")
def s5_results() -> dict[str, Any]:
    return analyze_model(IrrepModel("S5", "(4,1)", 40.0), "s5", None,
                         probes=["irreps", "loss", "key_freqs"])


def test_hand_built_s5_model_through_the_standard_irrep(s5_results: dict[str, Any]) -> None:
    r = s5_results["irreps"]
    names = [x.name for x in irreps("S5")]
    i = names.index("(4,1)")
    assert s5_results["loss"]["train_acc"] == s5_results["loss"]["test_acc"] == 1.0
    assert r["similarity"][i] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(np.delete(r["similarity"], i), 0, atol=1e-9)
    assert r["key"].tolist() == r["final_key"].tolist() == [int(n == "(4,1)") for n in names]
    assert r["n_key"] == r["n_final_keys"] == 1 and r["logits_explained"] == pytest.approx(1.0)
    assert r["full_loss"] < 1e-6
    assert r["restricted_loss"] == pytest.approx(r["full_loss"], rel=1e-6, abs=1e-12)
    assert r["excluded_loss"] == pytest.approx(math.log(120), rel=1e-9)
    assert r["excluded_loss_per_irrep"][i] == pytest.approx(math.log(120), rel=1e-9)
    assert np.isnan(np.delete(r["excluded_loss_per_irrep"], i)).all()
    for part in ("embed_var", "unembed_var", "neuron_var"):
        assert r[part][i] == pytest.approx(1.0, abs=1e-9), part
        assert np.allclose(np.delete(r[part], i), 0, atol=1e-9), part
    assert "irreps probe" in s5_results["key_freqs"]["n/a"]


def test_z_p_star_irreps_are_its_frequencies_by_discrete_log() -> None:
    """On Z_p* the irreps are the frequencies over Z_{p−1} by discrete log: the hand-built log
    clock of test_group_fourier has exactly its frequency as key irrep, and removing it leaves
    the uniform loss. The irreps probe leaves such runs to the Fourier probes (same numbers)."""
    from tests.test_group_fourier import LogClock

    g = group("Z31*")
    model = LogClock(31, 7, 300.0, "add")
    tokens = torch.tensor([[x, y, 31] for x in range(1, 31) for y in range(1, 31)])
    with torch.no_grad():
        L = model(tokens).numpy()
    labels = (tokens[:, 0] * tokens[:, 1] % 31).numpy()
    assert key_irreps(logit_similarities(L[:, 1:], g)) == ["k=7"]  # classes 1 … 30
    r = restricted_and_excluded(L, labels, g, ["k=7"])
    assert r["excluded_loss"] == pytest.approx(math.log(31), rel=1e-9)
    assert r["restricted_loss"] == pytest.approx(cross_entropy(L, labels), rel=1e-9, abs=1e-12)
    res = analyze_model(model, "mul", 31, probes=["irreps"])
    assert "Fourier probes read them" in res["irreps"]["n/a"]


def test_irreps_probe_does_not_apply_without_a_group() -> None:
    res = analyze_model(PlainClock(11, 2, 10.0), "quad1", 11, probes=["irreps"])
    assert "not a rule in a group" in res["irreps"]["n/a"]


def test_variance_explained_agrees_with_the_answer_version() -> None:
    g = group("S4")
    rep = find_irrep(g, "(2,1,1)")
    E = rep.matrices.reshape(g.order, -1)
    assert variance_explained(E, irreps(g))[[r.name for r in irreps(g)].index("(2,1,1)")] == \
        pytest.approx(1.0)

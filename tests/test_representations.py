"""Irreps of Z_n, Z_p* and S_n and the measures on them (mechgrok.measures), checked exactly.

Every identity here is algebra, so it holds to rounding (1e-9), and every measure is tried on a
table built by hand whose answer is known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mechgrok.errors import ConfigError
from mechgrok.measures import (
    RULES,
    answer_table,
    basis,
    character_table,
    discrete_log_table,
    find_irrep,
    group,
    inner_product,
    irreps,
    key_irreps,
    logit_similarities,
    logit_similarity,
    partitions,
    projector,
    span_dimension,
    trace_template,
    variance_explained,
)
from mechgrok.measures.representations import Irrep
from mechgrok.probes.fourier import fourier_basis

GROUPS = ["C1", "C2", "C12", "C13", "Z13*", "Z97*", "S3", "S4", "S5", "S6"]
TOL = 1e-9


def _homomorphism_pairs(g_order: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (x, y) when that is cheap, else a seeded sample of 20,000 plus all x with the
    group's first elements (which include the generators of S_n's BFS)."""
    if g_order <= 120:
        x, y = np.meshgrid(np.arange(g_order), np.arange(g_order), indexing="ij")
        return x.ravel(), y.ravel()
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, g_order, size=(2, 20_000))
    first = np.arange(g_order)
    return (np.concatenate([x, first, first]), np.concatenate([y, first * 0 + 1, first]))


@pytest.mark.parametrize("name", GROUPS)
def test_every_irrep_is_an_orthogonal_homomorphism(name: str) -> None:
    g = group(name)
    x, y = _homomorphism_pairs(g.order)
    for rep in irreps(g):
        R = rep.matrices
        assert R.shape == (g.order, rep.dim, rep.dim) and R.dtype == np.float64
        assert np.abs(R[g.identity] - np.eye(rep.dim)).max() < TOL
        assert np.abs(R @ R.transpose(0, 2, 1) - np.eye(rep.dim)).max() < TOL
        assert np.abs(R[g.inv] - R.transpose(0, 2, 1)).max() < TOL
        for i in range(0, len(x), 40_000):  # blocks keep memory small for 16 × 16 matrices
            sl = slice(i, i + 40_000)
            err = R[g.mul[x[sl], y[sl]]] - R[x[sl]] @ R[y[sl]]
            assert np.abs(err).max() < TOL, (name, rep.name)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_symmetric_homomorphism_on_all_pairs(n: int) -> None:
    """All |G|² pairs for S_n, S6's 518,400 included, blocked over x."""
    g = group(f"S{n}")
    for rep in irreps(g):
        R = rep.matrices
        step = max(1, 2_000_000 // (g.order * rep.dim**2))
        for x0 in range(0, g.order, step):
            xs = np.arange(x0, min(x0 + step, g.order))
            err = R[g.mul[xs]] - R[xs][:, None] @ R[None, :]
            assert np.abs(err).max() < TOL, (n, rep.name)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_symmetric_irreps_count_dims_and_orthonormal_characters(n: int) -> None:
    g = group(f"S{n}")
    reps = irreps(g)
    assert len(reps) == len(partitions(n))
    assert sum(r.dim**2 for r in reps) == g.order
    chars = character_table(g)
    assert np.abs(chars @ chars.T / g.order - np.eye(len(reps))).max() < TOL
    assert [span_dimension(r) for r in reps] == [r.dim**2 for r in reps]


def test_s5_irreps_names_and_dims() -> None:
    reps = irreps("S5")
    assert [(r.name, r.alias, r.dim) for r in reps] == [
        ("(5)", "trivial", 1), ("(4,1)", "standard", 4), ("(3,2)", "s5_5d_b", 5),
        ("(3,1,1)", "s5_6d", 6), ("(2,2,1)", "s5_5d_a", 5), ("(2,1,1,1)", "standard_sign", 4),
        ("(1,1,1,1,1)", "sign", 1)]
    assert find_irrep("S5", "standard") is find_irrep("S5", "(4,1)") is reps[1]
    with pytest.raises(ConfigError):
        find_irrep("S5", "(5,1)")


def _sign(perm: np.ndarray) -> int:
    inversions = sum(int(perm[i] > perm[j]) for i in range(len(perm))
                     for j in range(i + 1, len(perm)))
    return -1 if inversions % 2 else 1


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_symmetric_characters_we_know(n: int) -> None:
    g = group(f"S{n}")
    fixed = (g.elements == np.arange(n)).sum(axis=1)
    sign = np.array([_sign(p) for p in g.elements])
    assert np.abs(find_irrep(g, "trivial").character - 1).max() < TOL
    assert np.abs(find_irrep(g, "sign").character - sign).max() < TOL
    assert np.abs(find_irrep(g, "standard").character - (fixed - 1)).max() < TOL
    # (2, 1ⁿ⁻²) = standard ⊗ sign; for n = 3 that is (2, 1) again, named "standard"
    twisted = find_irrep(g, "standard_sign" if n > 3 else "standard")
    assert np.abs(twisted.character - (fixed - 1) * sign).max() < TOL


def test_chughtai_aliases_match_their_generators() -> None:
    """The traces of Chughtai et al.'s generator matrices (utils/groups.py) on the transposition
    (0 1) and the n-cycle (0 1 … n−1) single out the partitions their names stand for."""
    theirs = {  # alias: (trace on (0 1), trace on the n-cycle)
        ("S4", "s4_2d"): (0, 0),
        ("S5", "s5_5d_a"): (-1, 0), ("S5", "s5_5d_b"): (1, 0), ("S5", "s5_6d"): (0, 1),
        ("S6", "s6_5d_a"): (1, 0), ("S6", "s6_5d_b"): (-1, 0),
    }
    for (name, alias), (t_transposition, t_cycle) in theirs.items():
        g = group(name)
        n = g.n
        transposition = np.arange(n)
        transposition[[0, 1]] = [1, 0]
        cycle = np.roll(np.arange(n), -1)
        chi = find_irrep(g, alias).character
        at = {tuple(p): i for i, p in enumerate(g.elements)}
        assert abs(chi[at[tuple(transposition)]] - t_transposition) < TOL, alias
        assert abs(chi[at[tuple(cycle)]] - t_cycle) < TOL, alias


@pytest.mark.parametrize("n", [2, 3, 12, 13, 97, 113])
def test_cyclic_irreps_are_the_fourier_basis(n: int) -> None:
    """The entries of frequency k span the rows of fourier_basis(n) of frequency k (1e-12)."""
    g = group(f"C{n}")
    reps = irreps(g)
    assert len(reps) == n // 2 + 1
    assert [r.name for r in reps] == [f"k={k}" for k in range(n // 2 + 1)]
    F = fourier_basis(n).numpy()
    row_freq = (np.arange(n) + 1) // 2
    for k, rep in enumerate(reps):
        rows = F[row_freq == k]  # const; or cos k, sin k; or (−1)^a at k = n/2
        Q = basis(rep)
        assert Q.shape == (n, len(rows))
        assert np.abs(Q @ Q.T - rows.T @ rows).max() < 1e-12, (n, k)
        assert rep.dim == (2 if 0 < 2 * k < n else 1)


@pytest.mark.parametrize("name", ["C12", "C13", "Z13*", "Z97*"])
def test_cyclic_characters_over_the_reals(name: str) -> None:
    """Real characters of a cyclic group: mutually orthogonal, ⟨χ, χ⟩ = 2 for the rotations and
    1 for the trivial and the sign; Σ d²/⟨χ, χ⟩ = |G| (Σ d² ≠ |G| over the reals)."""
    g = group(name)
    reps = irreps(g)
    chars = character_table(g)
    gram = chars @ chars.T / g.order
    assert np.abs(gram - np.diag([float(r.dim) for r in reps])).max() < TOL
    assert sum(r.dim**2 / inner_product(r.character, r.character) for r in reps) == \
        pytest.approx(g.order, abs=TOL)
    assert sum(r.dim**2 for r in reps) != g.order
    assert [span_dimension(r) for r in reps] == [1 if r.dim == 1 else 2 for r in reps]


@pytest.mark.parametrize("p", [13, 97])
def test_multiplicative_irreps_go_through_the_discrete_log(p: int) -> None:
    mult, cyc = group(f"Z{p}*"), group(f"C{p - 1}")
    dlog = discrete_log_table(p)[mult.elements]
    for rm, rc in zip(irreps(mult), irreps(cyc), strict=True):
        assert (rm.name, rm.alias, rm.dim) == (rc.name, rc.alias, rc.dim)
        assert np.abs(rm.matrices - rc.matrices[dlog]).max() == 0.0


@pytest.mark.parametrize("name", GROUPS)
def test_spans_are_orthogonal_and_fill_the_space(name: str) -> None:
    g = group(name)
    reps = irreps(g)
    Q = np.concatenate([basis(r) for r in reps], axis=1)
    assert Q.shape == (g.order, g.order)
    assert np.abs(Q.T @ Q - np.eye(g.order)).max() < TOL
    assert np.abs(projector(reps) - np.eye(g.order)).max() < TOL
    for r in reps:
        assert basis(r).shape[1] == span_dimension(r)
    if len(reps) > 1:
        P = projector(reps[1:])
        assert np.abs(P @ P - P).max() < TOL and np.abs(P - P.T).max() < TOL
        assert np.trace(P) == pytest.approx(g.order - 1)


def test_projector_refuses_mixed_or_repeated_irreps() -> None:
    s4, s5 = irreps("S4"), irreps("S5")
    for bad in ([], [s4[1], s5[1]], [s5[1], s5[1]]):
        with pytest.raises(ValueError):
            projector(bad)


# --- logit similarity ----------------------------------------------------------------------

KNOWN = [("S5", "(4,1)", "xy"), ("S5", "sign", "xy"), ("S5", "(3,1,1)", "xyx^-1"),
         ("S5", "(2,2,1)", "xyx"), ("S4", "(2,2)", "xy"), ("S4", "(3,1)", "xy^-1"),
         ("Z13*", "k=5", "xy"), ("Z13*", "k=6", "xy^-1"), ("C13", "k=3", "xy^-1"),
         ("C12", "k=4", "xyx")]


@pytest.mark.parametrize(("name", "rep_name", "rule"), KNOWN)
def test_one_irrep_logits_have_similarity_one_there_and_zero_elsewhere(
        name: str, rep_name: str, rule: str) -> None:
    g = group(name)
    rep = find_irrep(g, rep_name)
    # tr ρ(a) ρ(z)⁻¹ built directly from the matrices, uncentred, with a per-row offset and scale
    a = answer_table(g, rule).reshape(-1)
    logits = np.einsum("rij,zij->rz", rep.matrices[a], rep.matrices)  # tr ρ(a) ρ(z)ᵀ
    logits = 3.0 * logits + np.arange(g.order**2)[:, None] % 7
    sims = logit_similarities(logits, g, rule=rule)
    for other in irreps(g):
        expected = 1.0 if other is rep else 0.0
        assert abs(sims[other.name] - expected) < TOL, (other.name, sims[other.name])
    assert logit_similarity(logits, g, rep_name, rule) == pytest.approx(1.0, abs=TOL)
    assert key_irreps(sims) == [rep.name]


def test_the_rule_matters() -> None:
    g = group("S5")
    T = trace_template(g, "standard", "xyx^-1")
    assert T.shape == (120 * 120, 120)
    sims = {rule: logit_similarity(T, g, "standard", rule) for rule in RULES}
    assert sims["xyx^-1"] == pytest.approx(1.0, abs=TOL)
    assert all(abs(v) < 0.9 for r, v in sims.items() if r != "xyx^-1")


def test_similarity_of_a_mixture_and_the_correct_answer() -> None:
    """Logits = Σ_ρ c_ρ T_ρ / ‖T_ρ‖ have similarities c_ρ / ‖c‖ (the templates are orthogonal);
    for one-hot logits at the answer the similarity is the cosine computed the slow way."""
    g = group("S4")
    reps = irreps(g)
    rng = np.random.default_rng(3)
    coef = rng.normal(size=len(reps))
    logits = np.zeros((g.order**2, g.order))
    for c, rep in zip(coef[1:], reps[1:], strict=True):
        T = trace_template(g, rep)
        logits += c * T / np.linalg.norm(T)
    sims = logit_similarities(logits, g)
    expected = coef[1:] / np.linalg.norm(coef[1:])
    assert np.abs(np.array([sims[r.name] for r in reps[1:]]) - expected).max() < TOL
    assert sims[reps[0].name] == 0.0
    # one-hot at the answer: cosine with the template computed the slow way
    onehot = np.eye(g.order)[answer_table(g).reshape(-1)]
    for rep in reps[1:]:
        T = trace_template(g, rep).ravel()
        L = (onehot - onehot.mean(axis=1, keepdims=True)).ravel()
        assert logit_similarity(onehot, g, rep) == pytest.approx(
            L @ T / np.linalg.norm(L) / np.linalg.norm(T), abs=TOL)


def test_similarity_shapes_and_degenerate_inputs() -> None:
    g = group("S3")
    with pytest.raises(ValueError):
        logit_similarity(np.zeros((36, 5)), g, "sign")
    with pytest.raises(ConfigError):
        logit_similarity(np.zeros((36, 6)), g, "sign", rule="yx")
    assert logit_similarity(np.zeros((36, 6)), g, "sign") == 0.0
    torch = pytest.importorskip("torch")
    T = trace_template(g, "sign")
    assert logit_similarity(torch.tensor(T, dtype=torch.float32), g, "sign") == \
        pytest.approx(1.0, abs=1e-6)


# --- variance explained --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["S4", "S5", "Z13*", "C12"])
def test_embedding_from_one_irrep_is_all_in_its_span(name: str) -> None:
    g = group(name)
    reps = irreps(g)
    rng = np.random.default_rng(5)
    for rep in reps[1:]:
        flat = rep.matrices.reshape(g.order, -1)
        emb = flat @ rng.normal(size=(flat.shape[1], 32)) + rng.normal(size=32)  # + a mean
        frac = variance_explained(emb, reps)
        expected = np.array([1.0 if r is rep else 0.0 for r in reps])
        assert np.abs(frac - expected).max() < TOL, (name, rep.name)


def test_variance_fractions_add_up_and_centring() -> None:
    g = group("S5")
    reps = irreps(g)
    rng = np.random.default_rng(6)
    m = rng.normal(size=(g.order, 40)) + 5.0
    frac = variance_explained(m, reps)
    assert frac.sum() == pytest.approx(1.0, abs=TOL) and frac[0] == pytest.approx(0.0, abs=TOL)
    raw = variance_explained(m, [basis(r) for r in reps], centre=False)
    assert raw.sum() == pytest.approx(1.0, abs=TOL) and raw[0] > 0.5  # the mean is trivial
    assert (variance_explained(np.full((120, 3), 0.1), reps) == 0.0).all()
    with pytest.raises(ValueError):
        variance_explained(np.zeros((119, 3)), reps)


def test_irrep_is_frozen_and_read_only() -> None:
    rep = irreps("S4")[1]
    assert isinstance(rep, Irrep)
    with pytest.raises(AttributeError):
        rep.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        rep.matrices[0, 0, 0] = 2.0
    assert rep.order == 24 and math.isclose(float(rep.character[0]), 3.0)

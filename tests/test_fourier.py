"""Fourier probes (MEASURES.md §4) on inputs built by hand, with answers known in advance."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechgrok.probes import fourier as F

F64 = torch.float64


def _grid(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y of every pair, row-major (index x·p + y), each (p²,)."""
    x = torch.arange(p).repeat_interleave(p)
    y = torch.arange(p).repeat(p)
    return x, y


def _w(k: int, p: int) -> float:
    return 2 * math.pi * k / p


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits.to(F64), labels))


def _logit_table(p: int, keys: list[int], scale: float, op: str,
                 shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits[x·p + y, c] = scale · Σ_k cos(w_k (s + shift − c)), s = x ± y; labels s mod p.

    With shift 0 the largest logit is the label's; every column lies in the span of the
    cos(w_k s), sin(w_k s) directions.
    """
    x, y = _grid(p)
    s = (x + y if op == "add" else x - y) + shift
    c = torch.arange(p)
    logits = sum(torch.cos(_w(k, p) * (s[:, None] - c[None, :]).to(F64)) for k in keys)
    return scale * logits, s % p


# --- basis -----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4, 5, 12, 113])
def test_basis_is_orthonormal(p: int) -> None:
    B = F.fourier_basis(p)
    assert B.shape == (p, p) and B.dtype == F64
    assert torch.allclose(B @ B.T, torch.eye(p, dtype=F64), rtol=0, atol=1e-12)
    assert torch.allclose(B.T @ B, torch.eye(p, dtype=F64), rtol=0, atol=1e-12)


def test_row_order_is_cos_before_sin() -> None:
    p = 7
    B = F.fourier_basis(p)
    x = torch.arange(p, dtype=F64)
    unit = math.sqrt(2 / p)
    assert torch.allclose(B[0], torch.full((p,), 1 / math.sqrt(p), dtype=F64), atol=1e-15)
    for k in (1, 2, 3):
        assert torch.allclose(B[2 * k - 1], unit * torch.cos(_w(k, p) * x), atol=1e-14)
        assert torch.allclose(B[2 * k], unit * torch.sin(_w(k, p) * x), atol=1e-14)
    # the TransformerLens demo's order would put sin 1 (which is 0 at x = 0) in row 1
    assert B[1, 0] == pytest.approx(unit) and B[2, 0] == pytest.approx(0.0, abs=1e-15)
    assert F.basis_labels(p) == ["const", "cos 1", "sin 1", "cos 2", "sin 2", "cos 3", "sin 3"]
    assert F.row_frequency(p).tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert F.row_frequency(p).dtype == torch.int64
    assert F.n_frequencies(p) == 3


def test_even_p_ends_with_cos_of_half_p() -> None:
    p = 12
    B = F.fourier_basis(p)
    x = torch.arange(p, dtype=F64)
    assert torch.allclose(B[-1], (-1.0) ** x / math.sqrt(p), atol=1e-15)
    assert torch.allclose(B[9], math.sqrt(2 / p) * torch.cos(_w(5, p) * x), atol=1e-14)
    assert F.basis_labels(p)[-3:] == ["cos 5", "sin 5", "cos 6"]
    assert F.row_frequency(p).tolist()[-3:] == [5, 5, 6]
    assert F.n_frequencies(p) == 6
    assert F.basis_labels(2) == ["const", "cos 1"] and F.n_frequencies(2) == 1


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=60))
def test_basis_properties(p: int) -> None:
    B = F.fourier_basis(p)
    assert torch.allclose(B @ B.T, torch.eye(p, dtype=F64), rtol=0, atol=1e-12)
    freq = F.row_frequency(p)
    assert len(F.basis_labels(p)) == p and int(freq.max()) == F.n_frequencies(p)
    # every row but the constant has zero mean
    assert torch.allclose(B[1:].sum(dim=1), torch.zeros(p - 1, dtype=F64), atol=1e-12)


def test_bad_p() -> None:
    with pytest.raises(ValueError, match="p must be"):
        F.fourier_basis(1)
    with pytest.raises(ValueError, match="p must be"):
        F.n_frequencies(0)


# --- embedding and logit-map norms -----------------------------------------------------------


def test_embedding_of_chosen_frequencies() -> None:
    p, d, keys = 23, 16, [3, 7]
    B = F.fourier_basis(p)
    g = torch.Generator().manual_seed(0)
    rows = [2 * k - 1 for k in keys] + [2 * k for k in keys]
    W_E = (B[rows].T @ torch.randn(len(rows), d, generator=g, dtype=F64)).float()  # (p, d)
    norms = F.frequency_norms(W_E)
    assert norms.shape == (F.n_frequencies(p),) and norms.dtype == F64
    nonzero = (norms > 1e-6).nonzero().flatten() + 1
    assert nonzero.tolist() == keys
    assert F.key_frequencies_from_norms(norms) == keys
    # Parseval: the per-row norms hold all of ‖W‖²
    rows_n = F.fourier_norms(W_E)
    assert rows_n.shape == (p,)
    assert float(rows_n.square().sum()) == pytest.approx(float(W_E.double().square().sum()))
    assert float(norms.square().sum() + rows_n[0] ** 2) == pytest.approx(float(rows_n.square().sum()))


def test_key_frequencies_from_norms_rule() -> None:
    v = torch.tensor([1.0, 0.25, 0.26, 0.0, 4.0 / 4.0])
    assert F.key_frequencies_from_norms(v) == [1, 3, 5]  # strictly above max / 4
    assert F.key_frequencies_from_norms(v, ratio=0.9) == [1, 5]
    assert F.key_frequencies_from_norms(torch.zeros(5)) == []


def test_logit_map_rule_reads_the_output_axis() -> None:
    p, n, keys = 17, 40, [2, 6]
    B = F.fourier_basis(p)
    g = torch.Generator().manual_seed(1)
    rows = [2 * k - 1 for k in keys] + [2 * k for k in keys]
    W_L = torch.randn(n, len(rows), generator=g, dtype=F64) @ B[rows]  # (N, p)
    norms = F.logit_map_frequency_norms(W_L)
    assert (norms > 1e-6).nonzero().flatten().add(1).tolist() == keys
    assert F.key_frequencies_from_norms(norms) == keys
    # variation over neurons only (constant over outputs) has no nonzero output frequency
    flat_out = torch.randn(n, 1, generator=g, dtype=F64).expand(n, p)
    assert float(F.logit_map_frequency_norms(flat_out).abs().max()) < 1e-12


# --- neurons -----------------------------------------------------------------------------


def _literal_fractions(acts: torch.Tensor) -> torch.Tensor:
    """The definition, term by term: centre, C = F A Fᵀ, sum C² over each {0, k}² block."""
    p = acts.shape[0]
    B = F.fourier_basis(p)
    A = acts.to(F64) - acts.to(F64).mean(dim=(0, 1))
    C2 = torch.einsum("ax,xyn,by->nab", B, A, B).square()  # (N, p, p)
    total = C2.sum(dim=(1, 2))
    freq = F.row_frequency(p)
    cols = []
    for k in range(1, F.n_frequencies(p) + 1):
        m = (freq == k) | (freq == 0)
        cols.append(C2[:, m][:, :, m].sum(dim=(1, 2)) / total)
    frac = torch.stack(cols, dim=1)
    return torch.cat([1 - frac.sum(dim=1, keepdim=True), frac], dim=1)


@pytest.mark.parametrize("p", [2, 3, 4, 5, 6, 7, 12, 13])
def test_fractions_match_the_literal_definition(p: int) -> None:
    g = torch.Generator().manual_seed(p)
    acts = torch.randn(p, p, 9, generator=g) + 3.0  # an offset, so centring matters
    acts[..., 0] = torch.relu(acts[..., 0] - 3.0)
    got = F.neuron_frequency_fractions(acts)
    assert got.shape == (9, F.n_frequencies(p) + 1) and got.dtype == F64
    assert torch.allclose(got, _literal_fractions(acts), rtol=0, atol=1e-12)
    assert torch.allclose(got.sum(dim=1), torch.ones(9, dtype=F64), atol=1e-12)
    assert float(got.min()) >= 0.0


def test_hand_made_neurons_cluster_by_frequency() -> None:
    p, keys = 23, [2, 5, 9]
    x = torch.arange(p, dtype=F64)[:, None]
    y = torch.arange(p, dtype=F64)[None, :]
    neurons, expect = [], {}
    for k in keys:
        w = _w(k, p)
        members = []
        for j, phi in enumerate((0.0, 0.7, 1.9, 4.0)):
            members.append(len(neurons))
            if j < 2:
                neurons.append(torch.cos(w * (x + y) + phi) + 0.5)  # a clock-like neuron
            elif j == 2:
                neurons.append(torch.cos(w * x + phi) * torch.cos(w * y))  # a product term
            else:
                neurons.append(torch.cos(w * x) + torch.sin(w * y + phi))  # separable terms
        expect[k] = members
    g = torch.Generator().manual_seed(3)
    noise = len(neurons)
    neurons.append(torch.randn(p, p, generator=g, dtype=F64))
    constant, dead = noise + 1, noise + 2
    neurons += [torch.full((p, p), 0.3, dtype=F64), torch.zeros(p, p, dtype=F64)]
    acts = torch.stack(neurons, dim=-1).float()  # (p, p, N), float32 like a model's cache
    frac = F.neuron_frequency_fractions(acts)
    for k, members in expect.items():
        assert float(frac[members, k].min()) >= 0.99
    clusters = F.neuron_clusters(frac)
    assert clusters == expect
    assert all(noise not in m for m in clusters.values())
    assert float(frac[noise, 1:].max()) < 0.85
    for i in (constant, dead):
        assert frac[i, 0] == 1.0 and float(frac[i, 1:].abs().max()) == 0.0
    assert F.key_frequencies_from_clusters(clusters, acts.shape[-1]) == keys


def test_clusters_and_minimum_size() -> None:
    frac = torch.zeros(6, 4, dtype=F64)
    frac[:, 0] = 1.0
    frac[0, 1] = frac[3, 1] = 0.9
    frac[1, 2] = frac[2, 2] = frac[4, 2] = 0.85  # ≥ threshold counts
    frac[5, 3] = 0.8499
    clusters = F.neuron_clusters(frac)
    assert clusters == {1: [0, 3], 2: [1, 2, 4]}
    assert F.neuron_clusters(frac, threshold=0.5) == {1: [0, 3], 2: [1, 2, 4], 3: [5]}
    # default minimum: max(3, ⌈1 % of the neurons⌉)
    assert F.key_frequencies_from_clusters(clusters, 6) == [2]
    assert F.key_frequencies_from_clusters(clusters, 300) == [2]
    assert F.key_frequencies_from_clusters(clusters, 301) == []  # needs 4
    assert F.key_frequencies_from_clusters(clusters, 6, min_size=2) == [1, 2]
    big = {4: list(range(6)), 7: list(range(5))}
    assert F.key_frequencies_from_clusters(big, 512) == [4]  # 512 neurons need 6


def test_fractions_shape_errors() -> None:
    with pytest.raises(ValueError, match="p, p, n_neurons"):
        F.neuron_frequency_fractions(torch.zeros(5, 4, 3))


# --- restricted and excluded loss ---------------------------------------------------------


@pytest.mark.parametrize(("p", "op"), [(5, "add"), (12, "add"), (23, "add"), (12, "sub"), (23, "sub")])
def test_sum_direction_basis_is_orthonormal(p: int, op: str) -> None:
    keys = list(range(1, F.n_frequencies(p) + 1))
    Q = F.sum_direction_basis(p, keys, op)
    m = p  # const + cos and sin per frequency, less sin(p/2) for even p: p columns
    assert Q.shape == (p * p, m)
    assert torch.allclose(Q.T @ Q, torch.eye(m, dtype=F64), rtol=0, atol=1e-12)


def test_sum_direction_basis_columns() -> None:
    p = 12
    x, y = _grid(p)
    Q = F.sum_direction_basis(p, [6, 1], "sub", include_constant=False)
    assert Q.shape == (p * p, 3)  # cos 6 (its sin is 0), cos 1, sin 1
    assert torch.allclose(Q[:, 0], (-1.0) ** (x - y).to(F64) / p, atol=1e-15)
    expect = torch.sin(_w(1, p) * (x - y).to(F64))
    assert torch.allclose(Q[:, 2], expect / expect.norm(), atol=1e-15)
    assert F.sum_direction_basis(5, [], "add").shape == (25, 1)
    assert F.sum_direction_basis(5, [], "add", include_constant=False).shape == (25, 0)


@pytest.mark.parametrize("bad", [[0], [3], [1, 1]])
def test_sum_direction_basis_rejects_bad_keys(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="distinct and in 1..2"):
        F.sum_direction_basis(5, bad)


def test_sum_direction_basis_rejects_other_ops() -> None:
    with pytest.raises(ValueError, match="op must be"):
        F.sum_direction_basis(5, [1], "mul")
    logits, labels = _logit_table(5, [1], 1.0, "add")
    with pytest.raises(ValueError, match="op must be"):
        F.restricted_loss(logits, labels, [1], 5, "div")


@pytest.mark.parametrize("op", ["add", "sub"])
def test_losses_on_a_table_of_key_frequencies(op: str) -> None:
    p, keys = 23, [4, 9]
    logits, labels = _logit_table(p, keys, 50.0, op)
    full = _ce(logits, labels)
    assert full < 1e-4
    # the table lies in the key directions: restriction changes nothing
    assert F.restricted_loss(logits, labels, keys, p, op) == pytest.approx(full, abs=1e-9)
    # per-class biases are constant over the grid: kept by the restriction as well
    bias = torch.linspace(-2.0, 2.0, p, dtype=F64)
    assert F.restricted_loss(logits + bias, labels, keys, p, op) == pytest.approx(
        _ce(logits + bias, labels), abs=1e-9)
    # another frequency, pointing at the wrong class s + 3, is removed by the restriction
    other, _ = _logit_table(p, [2], 200.0, op, shift=3)
    assert _ce(logits + other, labels) > 1.0
    assert F.restricted_loss(logits + other, labels, keys, p, op) == pytest.approx(full, abs=1e-9)
    # restricting to one key leaves exactly that key's part of the table
    only4, _ = _logit_table(p, [4], 50.0, op)
    assert F.restricted_loss(logits, labels, [4], p, op) == pytest.approx(_ce(only4, labels))
    assert _ce(only4, labels) > full + 0.1
    # excluding every key leaves logits equal across classes: loss log p
    assert F.excluded_loss(logits, labels, keys, p, op) == pytest.approx(math.log(p), abs=1e-9)
    train = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))[: p * p // 3]
    assert F.excluded_loss(logits, labels, keys, p, op, train) == pytest.approx(math.log(p), abs=1e-9)
    assert F.excluded_loss(logits, labels, [], p, op) == pytest.approx(full, abs=1e-12)
    # one key removed at a time: the other still does part of the job
    per = F.excluded_loss_per_frequency(logits, labels, keys, p, op, train)
    assert sorted(per) == keys
    for k, other_k in zip(keys, keys[::-1]):
        rest, _ = _logit_table(p, [other_k], 50.0, op)
        assert per[k] == pytest.approx(_ce(rest[train], labels[train]), abs=1e-9)
        assert per[k] < math.log(p) - 0.5


def test_directions_depend_on_the_operation() -> None:
    p, keys = 13, [2, 5]
    logits, labels = _logit_table(p, keys, 30.0, "sub")
    full = _ce(logits, labels)
    # the x + y directions are orthogonal to an x − y table
    assert F.excluded_loss(logits, labels, keys, p, "add") == pytest.approx(full, abs=1e-9)
    assert F.restricted_loss(logits, labels, keys, p, "add") == pytest.approx(math.log(p), abs=1e-9)
    assert F.excluded_loss(logits, labels, keys, p, "sub") == pytest.approx(math.log(p), abs=1e-9)


def test_losses_accept_float32_and_check_shapes() -> None:
    p, keys = 11, [3]
    logits, labels = _logit_table(p, keys, 10.0, "add")
    r64 = F.restricted_loss(logits, labels, keys, p)
    r32 = F.restricted_loss(logits.float(), labels, keys, p)
    assert isinstance(r32, float) and r32 == pytest.approx(r64, rel=1e-5)
    with pytest.raises(ValueError, match="row-major"):
        F.restricted_loss(logits[:-1], labels[:-1], keys, p)
    with pytest.raises(ValueError, match="labels"):
        F.excluded_loss(logits, labels[:-1], keys, p)
    with pytest.raises(ValueError, match="no pairs"):
        F.excluded_loss(logits, labels, keys, p, train_idx=torch.tensor([], dtype=torch.long))


# --- Gini ----------------------------------------------------------------------------------


def test_gini_known_values() -> None:
    n = 7
    assert F.gini(torch.nn.functional.one_hot(torch.tensor(3), n).float()) == pytest.approx(1 - 1 / n)
    assert F.gini(torch.full((n,), 0.4)) == pytest.approx(0.0, abs=1e-15)
    # [1, 2, 3]: 1 − 2 (1·2.5 + 2·1.5 + 3·0.5) / (6 · 3) = 1 − 14/18 = 2/9
    assert F.gini(torch.tensor([3.0, 1.0, 2.0])) == pytest.approx(2 / 9)
    # |[3, 0, −1, 0]| sorted [0, 0, 1, 3]: 1 − 2 (1·1.5 + 3·0.5) / (4 · 4) = 5/8
    assert F.gini(torch.tensor([3.0, 0.0, -1.0, 0.0])) == pytest.approx(5 / 8)
    assert F.gini(torch.zeros(5)) == 0.0
    assert F.gini(torch.tensor([2.5])) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="empty"):
        F.gini(torch.zeros(0))


def test_gini_scale_and_order_invariant() -> None:
    c = torch.rand(20, generator=torch.Generator().manual_seed(4))
    g = F.gini(c)
    assert 0.0 < g < 1 - 1 / 20
    assert F.gini(7.0 * c) == pytest.approx(g)
    assert F.gini(c[torch.randperm(20)]) == pytest.approx(g)


@pytest.mark.parametrize(("p", "op", "keys"), [(23, "add", [3, 7]), (12, "sub", [2, 6]),
                                               (13, "add", [1])])
def test_restricted_and_excluded_equals_the_definitions(p: int, op: str, keys: list[int]) -> None:
    """The analysis's one-pass version equals the three definitional functions."""

    g = torch.Generator().manual_seed(p)
    logits = torch.randn(p * p, p, generator=g, dtype=torch.float64)
    labels = torch.randint(0, p, (p * p,), generator=g)
    train = torch.randperm(p * p, generator=g)[: p * p // 3]
    got = F.restricted_and_excluded(logits, labels, keys, p, op, train)
    assert got["restricted_loss"] == pytest.approx(F.restricted_loss(logits, labels, keys, p, op),
                                                   rel=1e-12)
    assert got["excluded_loss"] == pytest.approx(
        F.excluded_loss(logits, labels, keys, p, op, train), rel=1e-12)
    want = F.excluded_loss_per_frequency(logits, labels, keys, p, op, train)
    assert got["excluded_loss_per_frequency"] == pytest.approx(want, rel=1e-12)

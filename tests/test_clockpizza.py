"""Clock or pizza (MEASURES.md §5): known answers from hand-built logits, embeddings and models."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mechgrok.errors import ConfigError
from mechgrok.models import build_model
from mechgrok.probes import NotApplicable
from mechgrok.probes.base import CheckpointContext, RunContext, check_output
from mechgrok.probes.clockpizza import (
    CLOCKPIZZA_PROBES,
    VERDICTS,
    VerdictRules,
    circularity,
    clock_pizza,
    distance_irrelevance,
    gradient_symmetricity,
    logit_table_sd,
    verdict,
)
from tests.conftest import tiny_config, tiny_mlp_config

# --- helpers -------------------------------------------------------------------------------


def _grid(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(p, dtype=torch.float64)
    return x[:, None], x[None, :]  # broadcast to (p, p) [x, y]


def _correct(full: torch.Tensor, p: int, op: str = "add") -> torch.Tensor:
    """Hand-built logits ``full[x, y, c]`` → correct-class logits ``(p, p)`` [x, y]."""
    x, y = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    ans = (x + y) % p if op == "add" else (x - y) % p
    return full.gather(2, ans[..., None])[..., 0]


def _reference_di(correct: np.ndarray, p: int, op: str = "add") -> tuple[np.ndarray, float]:
    """The public script's loop: ``oo[s][d] = C[x, y]``, ``mean(std(oo, axis=0)) / std(oo)``."""
    oo = np.zeros((p, p))
    for x in range(p):
        for y in range(p):
            s, d = ((x + y) % p, (x - y) % p) if op == "add" else ((x - y) % p, (x + y) % p)
            oo[s, d] = correct[x, y]
    return oo, float(np.mean(np.std(oo, axis=0)) / np.std(oo))


def _ctx_for(model, cfg) -> CheckpointContext:
    from mechgrok.store import CheckpointInfo
    from mechgrok.tasks import make_dataset

    class _FakeRun:  # just what RunContext reads: a config
        def __init__(self, config):
            self.config = config

    t = cfg.task
    run_ctx = RunContext(_FakeRun(cfg), make_dataset(t.name, t.p, t.frac_train, t.data_seed))
    return CheckpointContext(run_ctx, CheckpointInfo(0, 0, "", 0, ""), model)


def _mlp(p: int, combine: str, **kw) -> torch.nn.Module:
    cfg = tiny_mlp_config(**{"task.p": p, "model.combine": combine, **kw})
    return build_model(cfg).double()


# --- the (s, d) table ----------------------------------------------------------------------


@pytest.mark.parametrize("p", [7, 11, 13])
@pytest.mark.parametrize("op", ["add", "sub"])
def test_logit_table_sd_is_a_bijection(p: int, op: str) -> None:
    ids = torch.arange(p * p, dtype=torch.float64).reshape(p, p)  # C[x, y] = x·p + y
    L = logit_table_sd(ids, p, op)
    assert sorted(L.flatten().long().tolist()) == list(range(p * p))  # each (x, y) once
    for s in range(p):
        for d in range(p):
            x, y = divmod(int(L[s, d]), p)
            if op == "add":
                assert ((x + y) % p, (x - y) % p) == (s, d)
            else:  # s is the answer x − y, d = x + y
                assert ((x - y) % p, (x + y) % p) == (s, d)


def test_logit_table_sd_refuses_even_p_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="needs p odd"):
        logit_table_sd(torch.zeros(8, 8), 8)
    with pytest.raises(ValueError, match="shape"):
        logit_table_sd(torch.zeros(7, 6), 7)
    with pytest.raises(ValueError, match="op"):
        logit_table_sd(torch.zeros(7, 7), 7, op="mul")


# --- distance irrelevance ------------------------------------------------------------------


def test_clock_logits_have_distance_irrelevance_one() -> None:
    """Clock: L[x, y, c] = cos(w(x + y − c)) + β_c. The correct logit is 1 + β_{x+y}, a function
    of s only: DI = 1 exactly (population stds)."""
    p, k = 23, 4
    w = 2 * math.pi * k / p
    x, y = _grid(p)
    c = torch.arange(p, dtype=torch.float64)
    beta = torch.from_numpy(np.random.default_rng(0).normal(size=p))
    full = torch.cos(w * (x + y)[..., None] - w * c) + beta  # (p, p, p)
    di = distance_irrelevance(_correct(full, p), p)
    assert di > 0.99 and di == pytest.approx(1.0, abs=1e-12)


def test_ideal_clock_has_constant_correct_logit_and_no_di() -> None:
    p, k = 11, 2
    w = 2 * math.pi * k / p
    x, y = _grid(p)
    c = torch.arange(p, dtype=torch.float64)
    full = torch.cos(w * (x + y)[..., None] - w * c)  # correct logit cos(0) = 1 everywhere
    assert math.isnan(distance_irrelevance(_correct(full, p), p))
    assert math.isnan(distance_irrelevance(torch.zeros(p, p), p))


def test_pizza_logits_have_distance_irrelevance_zero() -> None:
    """Zhong's pizza: L[x, y, c] = |cos(w(x − y)/2)| · cos(w(x + y − c)). The correct logit is
    |cos(πk(x − y)/p)|, a function of d only: DI = 0."""
    p, k = 23, 5
    w = 2 * math.pi * k / p
    x, y = _grid(p)
    c = torch.arange(p, dtype=torch.float64)
    radius = torch.abs(torch.cos(w * (x - y) / 2))  # (p, p)
    full = radius[..., None] * torch.cos(w * (x + y)[..., None] - w * c)
    di = distance_irrelevance(_correct(full, p), p)
    assert di < 0.5 and di == pytest.approx(0.0, abs=1e-12)


def test_mixed_logits_have_the_exact_distance_irrelevance() -> None:
    """Correct logit f(s) + g(d) over the (s, d) product grid: std_s is std(f) for every d and
    std(L)² = var f + var g, so DI = std f / √(var f + var g)."""
    p, k = 13, 3
    s = np.arange(p)
    f = 0.4 * np.cos(2 * np.pi * 2 * s / p) + 0.1 * np.random.default_rng(1).normal(size=p)
    g = np.abs(np.cos(np.pi * k * s / p))  # the pizza's distance term, as a function of d
    want = f.std() / math.sqrt(f.var() + g.var())
    x, y = np.meshgrid(s, s, indexing="ij")
    sd = {"add": ((x + y) % p, (x - y) % p), "sub": ((x - y) % p, (x + y) % p)}
    for op, (ss, dd) in sd.items():
        correct = torch.from_numpy(f[ss] + g[dd])  # (p, p) [x, y]
        assert distance_irrelevance(correct, p, op) == pytest.approx(want, abs=1e-12)
        assert _reference_di(correct.numpy(), p, op)[1] == pytest.approx(want, abs=1e-12)
    assert 0.2 < want < 0.8  # a genuinely mixed value, not an end point


# --- gradient symmetricity -----------------------------------------------------------------


def test_summed_operands_give_gradient_symmetricity_one() -> None:
    for embed in ("learned", "onehot"):
        gs = gradient_symmetricity(_mlp(11, "sum", **{"model.embed": embed}), 11)
        assert gs == pytest.approx(1.0, abs=1e-6)


def test_concatenated_operands_are_asymmetric() -> None:
    gs = gradient_symmetricity(_mlp(11, "concat"), 11)
    assert gs < 0.9


def test_transformer_gradient_symmetricity_constant_vs_learned_attention() -> None:
    """With constant attention (α = 0, no LayerNorm) the read-out position sees a and b only
    through W_V(e_a + pos_0) + W_V(e_b + pos_1): the gradients are equal, GS = 1."""
    sym = build_model(tiny_config(**{"task.p": 7, "model.attn_alpha": 0.0})).double()
    assert gradient_symmetricity(sym, 7, n_triples=50) == pytest.approx(1.0, abs=1e-6)
    asym = build_model(tiny_config(**{"task.p": 7, "model.attn_alpha": 1.0})).double()
    assert gradient_symmetricity(asym, 7, n_triples=50) < 0.99


def test_zero_gradients_count_as_cosine_zero() -> None:
    model = _mlp(7, "sum")
    with torch.no_grad():
        model.unembed.W_U.zero_()  # every logit is the bias: no gradient at all
    assert gradient_symmetricity(model, 7, n_triples=10) == 0.0


def test_gradient_symmetricity_is_seeded() -> None:
    model = _mlp(11, "concat")
    a = gradient_symmetricity(model, 11, n_triples=20, seed=3)
    assert gradient_symmetricity(model, 11, n_triples=20, seed=3) == a
    assert gradient_symmetricity(model, 11, n_triples=20, seed=4) != a


def test_gradient_symmetricity_leaves_the_model_alone() -> None:
    model = _mlp(7, "concat")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # the analysis's default mode; the function turns grad on itself
        gradient_symmetricity(model, 7, n_triples=30)
    for name, prm in model.named_parameters():
        assert prm.grad is None, name
        assert torch.equal(prm, before[name]), name
    for name, hp in model.hook_dict.items():
        assert not hp._forward_hooks and not hp._backward_hooks, name


def test_gradient_symmetricity_removes_its_hook_when_the_forward_fails() -> None:
    model = _mlp(7, "concat")
    with pytest.raises(IndexError):  # p = 9 on a p = 7 model: tokens 7, 8 are out of range
        gradient_symmetricity(model, 9, n_triples=100)
    assert not model.hook_dict["hook_embed"]._forward_hooks


def test_gradient_symmetricity_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="n_triples"):
        gradient_symmetricity(_mlp(7, "sum"), 7, n_triples=7**3 + 1)
    with pytest.raises(ValueError, match="n_triples"):
        gradient_symmetricity(_mlp(7, "sum"), 7, n_triples=0)


# --- circularity ---------------------------------------------------------------------------


def _circle(p: int, k: int, radius: float = 1.0) -> torch.Tensor:
    x = torch.arange(p, dtype=torch.float64)
    w = 2 * math.pi * k / p
    return radius * torch.stack([torch.cos(w * x), torch.sin(w * x)], dim=1)  # (p, 2)


def test_exact_circle_has_circularity_one() -> None:
    p, k = 23, 5
    c = circularity(_circle(p, k), p, n_components=2)
    assert c["circularity"] == pytest.approx(1.0, abs=1e-12)
    assert c["pc_best_freq"].tolist() == [k, k]
    assert c["projections"].shape == (p, 2)
    assert c["explained_variance_ratio"] == pytest.approx([0.5, 0.5])


def test_two_circles_and_degenerate_components() -> None:
    p = 23
    two = torch.cat([_circle(p, 2, radius=2.0), _circle(p, 7)], dim=1)  # (p, 4)
    rot = torch.linalg.qr(torch.from_numpy(np.random.default_rng(0).normal(size=(6, 6))))[0]
    c = circularity(torch.cat([two, torch.zeros(p, 2)], dim=1) @ rot, p, n_components=4)
    assert c["circularity"] == pytest.approx(1.0, abs=1e-9)
    assert c["pc_best_freq"].tolist() == [2, 2, 7, 7]  # larger circle first
    # one circle in 6 dimensions: PCs 3 and 4 have no variance, hence no frequency
    c = circularity(torch.cat([_circle(p, 3), torch.zeros(p, 4)], dim=1) @ rot, p, n_components=4)
    assert c["circularity"] == pytest.approx(1.0, abs=1e-9)
    assert c["pc_best_freq"].tolist() == [3, 3, 0, 0]
    assert np.isnan(c["pc_power_frac"][2:]).all()


def test_random_embedding_is_not_circular() -> None:
    p = 23
    emb = torch.from_numpy(np.random.default_rng(0).normal(size=(p, 16)))
    c = circularity(emb, p)
    assert c["circularity"] < 0.6
    assert c["projections"].shape == (p, 4) and c["pc_power_frac"].shape == (4,)
    assert all(1 <= k <= 11 for k in c["pc_best_freq"])


def test_circularity_edge_cases() -> None:
    with pytest.raises(ValueError, match="n_components"):
        circularity(_circle(7, 1), 7, n_components=3)  # d = 2
    with pytest.raises(ValueError, match="shape"):
        circularity(_circle(7, 1), 11, n_components=2)
    c = circularity(torch.ones(7, 3), 7, n_components=2)
    assert math.isnan(c["circularity"]) and c["pc_best_freq"].tolist() == [0, 0]


# --- verdict -------------------------------------------------------------------------------


@pytest.mark.parametrize(("gs", "di", "circ", "want"), [
    (0.99, 0.40, 0.90, "pizza"),
    (0.98, 0.40, 0.90, "mixed"),  # GS must be > 0.98
    (0.99, 0.50, 0.90, "mixed"),  # DI must be < 0.5 for pizza …
    (0.30, 0.61, 0.90, "clock"),
    (0.30, 0.60, 0.90, "mixed"),  # … and > 0.6 for clock
    (0.40, 0.74, 0.90, "clock"),  # zhong-clock seed 0 (GS 0.398, DI 0.736)
    (0.90, 0.90, 0.90, "mixed"),  # clock needs GS < 0.9
    (0.99, 0.90, 0.90, "mixed"),  # symmetric but distance-blind: not a clock (nor a pizza)
    (1.00, 0.45, 0.98, "pizza"),  # zhong-pizza seed 1
    (0.99, 0.10, 0.49, "non-circular"),
    (0.99, 0.10, 0.50, "pizza"),  # circularity equal to circ_min counts as circular
])
def test_verdict_rule(gs: float, di: float, circ: float, want: str) -> None:
    assert verdict(gs, di, circ) == want
    assert VerdictRules().classify(gs, di, circ) == want


def test_verdict_thresholds_and_codes() -> None:
    assert VERDICTS == ("non-circular", "clock", "pizza", "mixed")
    assert verdict(0.95, 0.4, 0.9) == "mixed"
    assert verdict(0.95, 0.4, 0.9, pizza_gs=0.9) == "pizza"
    assert verdict(0.5, 0.7, 0.9, clock_di=0.75) == "mixed"
    assert verdict(0.95, 0.7, 0.9, clock_gs=0.96) == "clock"
    assert verdict(0.5, 0.7, 0.3, circ_min=0.2) == "clock"
    assert verdict(0.5, 0.7, 0.3) == "non-circular"
    with pytest.raises(ValueError, match="distance irrelevance"):
        verdict(0.99, math.nan, 0.9)


@pytest.mark.parametrize(("kw", "needle"), [
    ({"pizza_gs": 1.5}, "pizza_gs"),
    ({"pizza_di": -0.1}, "pizza_di"),
    ({"clock_di": 1.2}, "clock_di"),
    ({"clock_gs": -1.5}, "clock_gs"),
    ({"circ_min": math.nan}, "circ_min"),
    ({"circ_min": True}, "circ_min"),
    ({"pizza_di": 0.9, "clock_di": 0.8}, "clock_di"),
])
def test_verdict_rules_validation(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        VerdictRules(**kw)
    with pytest.raises(ConfigError, match=needle):
        verdict(0.99, 0.1, 0.9, **kw)


def test_verdict_rules_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        VerdictRules().pizza_gs = 0.5  # type: ignore[misc]


# --- the probe -----------------------------------------------------------------------------


def test_probe_on_a_tiny_transformer() -> None:
    p = 11
    cfg = tiny_config(**{"task.p": p})
    model = build_model(cfg)
    ctx = _ctx_for(model, cfg)
    assert clock_pizza.applies(ctx.run) is None
    with torch.no_grad():  # as the analysis runs a probe that does not declare "grad"
        out = clock_pizza.compute(ctx)
    res = check_output(clock_pizza, out)
    assert set(res.scalars) == {"gradient_symmetricity", "distance_irrelevance", "circularity",
                                "verdict_code"}
    assert res.scalars["verdict_code"] in range(4)
    assert -1 <= res.scalars["gradient_symmetricity"] <= 1
    assert 0 <= res.scalars["distance_irrelevance"] <= 1
    shapes = {k: v.shape for k, v in res.arrays.items()}
    assert shapes == {"logit_sd": (p, p), "pc_projections": (p, 4), "pc_best_freq": (4,),
                      "pc_power_frac": (4,), "explained_variance_ratio": (4,)}
    # the table and DI agree with the public script's loop over (x, y)
    ap = ctx.all_pairs()
    correct = ap.logits.gather(1, ap.labels[:, None]).reshape(p, p).double().numpy()
    oo, di = _reference_di(correct, p)
    assert np.allclose(res.arrays["logit_sd"], oo)
    assert res.scalars["distance_irrelevance"] == pytest.approx(di, rel=1e-9)
    assert CLOCKPIZZA_PROBES == [clock_pizza]


def test_probe_on_a_hand_built_pizza() -> None:
    """An MLP that sums its operands' circle embeddings, E_x = (cos wx, sin wx), builds Zhong's
    pizza: E_a + E_b = 2 cos(w(a − b)/2) · (cos φ, sin φ) with φ = w(a + b)/2; ReLU neurons
    along 40 evenly spaced directions θ_j and W_U[j, c] = cos(2θ_j − wc) keep the second harmonic
    of ReLU(cos), so logit_c ∝ |cos(w(a − b)/2)| · cos(w(a + b − c)). It is exact (accuracy 1),
    symmetric (GS = 1), one circle (circularity 1), and its correct logit depends on d = a − b
    only, up to the discretisation of θ (DI ≈ 0): a pizza."""
    p, k, width = 23, 3, 40
    cfg = tiny_mlp_config(**{"task.p": p, "model.combine": "sum", "model.d_embed": 2,
                             "model.hidden": [width]})
    model = build_model(cfg).double()
    w = 2 * math.pi * k / p
    theta = 2 * math.pi * torch.arange(width, dtype=torch.float64) / width
    c = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        model.embed.W_E.copy_(_circle(p, k))  # (p, 2)
        model.layers[0].W.copy_(torch.stack([torch.cos(theta), torch.sin(theta)]))  # (2, width)
        model.layers[0].b.zero_()
        model.unembed.W_U.copy_(torch.cos(2 * theta[:, None] - w * c[None, :]))  # (width, p)
        model.unembed.b_U.zero_()
    ctx = _ctx_for(model, cfg)
    out = clock_pizza.compute(ctx)
    ap = ctx.all_pairs()
    assert bool((ap.logits.argmax(1) == ap.labels).all())
    assert out["gradient_symmetricity"] == pytest.approx(1.0, abs=1e-9)
    assert out["distance_irrelevance"] < 0.05
    assert out["circularity"] == pytest.approx(1.0, abs=1e-9)
    assert out["pc_best_freq"].tolist() == [k, k]  # d = 2: two components
    assert VERDICTS[out["verdict_code"]] == "pizza"


def test_probe_on_sub_uses_the_answer_as_s() -> None:
    p = 7
    cfg = tiny_mlp_config(**{"task.name": "sub", "task.p": p})
    model = build_model(cfg)
    ctx = _ctx_for(model, cfg)
    out = clock_pizza.compute(ctx)
    ap = ctx.all_pairs()
    correct = ap.logits.gather(1, ap.labels[:, None]).reshape(p, p).double().numpy()
    oo, di = _reference_di(correct, p, "sub")
    assert np.allclose(out["logit_sd"].numpy(), oo)
    assert out["distance_irrelevance"] == pytest.approx(di, rel=1e-9)


def test_probe_is_not_applicable_to_even_p_or_other_tasks() -> None:
    cfg = tiny_mlp_config(**{"task.p": 12})
    ctx = _ctx_for(build_model(cfg), cfg)
    reason = clock_pizza.applies(ctx.run)
    assert reason is not None and "odd" in reason
    with pytest.raises(NotApplicable, match="odd"):
        clock_pizza.compute(ctx)
    cfg = tiny_mlp_config(**{"task.name": "quad1", "task.p": 7})
    reason = clock_pizza.applies(_ctx_for(build_model(cfg), cfg).run)
    assert reason is not None and "quad1" in reason

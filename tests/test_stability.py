"""StableMax, ⊥Grad and Grokfast (mechgrok.stability) against their formulas."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mechgrok.errors import ConfigError
from mechgrok.stability import (
    GrokfastEMA,
    GrokfastMA,
    OrthoGrad,
    log_stablemax,
    orthogonalize_,
    stablemax,
    stablemax_cross_entropy,
    stablemax_s,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _direct_stablemax(z: torch.Tensor) -> torch.Tensor:
    """s(z) / Σ s(z), written out in float64 from the definition."""
    z = z.to(F64)
    s = torch.where(z >= 0, z + 1, 1 / (1 - torch.where(z < 0, z, torch.zeros_like(z))))
    return s / s.sum(dim=-1, keepdim=True)


# --- StableMax -----------------------------------------------------------------------------


def test_s_known_values_and_finite_gradient():
    # x = 1 is where a naive 1 / (1 − x) branch divides by zero (NaN gradient through where)
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, -1e30, 1e30], dtype=F64,
                     requires_grad=True)
    s = stablemax_s(x)
    expected = torch.tensor([0.25, 0.5, 1 / 1.5, 1.0, 1.5, 2.0, 3.0, 1e-30, 1e30], dtype=F64)
    torch.testing.assert_close(s, expected, rtol=1e-14, atol=0)
    s.sum().backward()
    # s'(x) = 1 for x ≥ 0 and 1 / (1 − x)² for x < 0
    dexp = torch.tensor([1 / 16, 1 / 4, 1 / 2.25, 1.0, 1.0, 1.0, 1.0, 1e-60, 1.0], dtype=F64)
    torch.testing.assert_close(x.grad, dexp, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_stablemax_matches_formula_and_sums_to_one(dtype):
    z = (torch.randn(5, 7, generator=_gen(1), dtype=F64) * 4).to(dtype)
    p = stablemax(z)
    assert p.dtype == dtype
    tol = 1e-13 if dtype == F64 else 2e-6
    torch.testing.assert_close(p.to(F64), _direct_stablemax(z), rtol=tol, atol=0)
    torch.testing.assert_close(p.sum(-1).to(F64), torch.ones(5, dtype=F64), rtol=tol, atol=0)
    torch.testing.assert_close(log_stablemax(z).exp(), p)
    # dim=0 is the same as transposing
    torch.testing.assert_close(stablemax(z.T, dim=0), p.T)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_stablemax_extreme_logits_known_values_and_finite_gradients(dtype):
    z = torch.tensor([[1e30, -1e30, 0.0], [-1e30, -1e30, -1e30], [1e30, 1e30, 3.0]], dtype=dtype,
                     requires_grad=True)
    logp = log_stablemax(z)
    assert torch.isfinite(logp).all()
    log_big = math.log1p(1e30)  # ≈ 69.08
    expected = torch.tensor([[0.0, -2 * log_big, -log_big],
                             [-math.log(3)] * 3,
                             [-math.log(2), -math.log(2), math.log(4 / 2e30)]], dtype=F64)
    torch.testing.assert_close(logp.to(F64), expected, rtol=1e-5, atol=1e-5)
    p = stablemax(z)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(-1).to(F64), torch.ones(3, dtype=F64), rtol=1e-6, atol=0)
    labels = torch.tensor([1, 2, 2])
    loss = stablemax_cross_entropy(z, labels, reduction="sum")
    assert torch.isfinite(loss)
    (loss + (p * torch.arange(3.0, dtype=dtype)).sum()).backward()
    assert torch.isfinite(z.grad).all()


def test_stablemax_cross_entropy_matches_formula_and_reductions():
    z = (torch.randn(6, 5, generator=_gen(2), dtype=F64) * 3).to(torch.float32)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    direct = -_direct_stablemax(z)[torch.arange(6), y].log()  # (6,) float64
    none = stablemax_cross_entropy(z, y, dtype=F64, reduction="none")
    assert none.dtype == F64 and none.shape == (6,)
    torch.testing.assert_close(none, direct, rtol=1e-12, atol=0)
    torch.testing.assert_close(stablemax_cross_entropy(z, y, dtype=F64), direct.mean(),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(stablemax_cross_entropy(z, y, dtype=F64, reduction="sum"),
                               direct.sum(), rtol=1e-12, atol=0)
    f32 = stablemax_cross_entropy(z, y)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.to(F64), direct.mean(), rtol=1e-5, atol=0)
    # batched leading axes: (2, 3, C) with labels (2, 3)
    torch.testing.assert_close(
        stablemax_cross_entropy(z.to(F64).reshape(2, 3, 5), y.reshape(2, 3), reduction="none"),
        direct.reshape(2, 3), rtol=1e-12, atol=0)


def test_stablemax_cross_entropy_rejects_bad_arguments():
    z, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="reduction"):
        stablemax_cross_entropy(z, y, reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        stablemax_cross_entropy(z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        stablemax_cross_entropy(z, torch.zeros(4))


# --- ⊥Grad ---------------------------------------------------------------------------------


def _project(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The ⊥Grad formula written out: g − (⟨w,g⟩/⟨w,w⟩) w, rescaled to ‖g‖ (float64)."""
    w, g = w.to(F64).flatten(), g.to(F64).flatten()
    go = g - (w @ g) / (w @ w) * w
    return go * g.norm() / go.norm()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.to(F64).flatten(), b.to(F64).flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 1e-5)])
def test_orthograd_sgd_step_is_orthogonal_with_the_gradient_norm(dtype, tol):
    gen = _gen(3)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=gen, dtype=F64).to(dtype)),
              torch.nn.Parameter(torch.randn(5, generator=gen, dtype=F64).to(dtype))]
    grads = [torch.randn(p.shape, generator=gen, dtype=F64).to(dtype) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    before = [p.detach().clone() for p in params]
    opt = OrthoGrad(torch.optim.SGD(params, lr=1.0))
    assert abs(_cos(grads[0], before[0])) > 0.01  # the raw gradient is not orthogonal
    opt.step()
    for w0, p, g in zip(before, params, grads):
        update = (w0 - p.detach()).to(F64)
        assert abs(_cos(update, w0)) < (1e-6 if dtype == F64 else 1e-5)
        assert math.isclose(float(update.norm()), float(g.to(F64).norm()), rel_tol=tol)
        torch.testing.assert_close(update.flatten(), _project(w0, g), rtol=tol, atol=tol)


def test_orthogonalize_leaves_zero_weights_and_parallel_gradients_alone():
    a = torch.nn.Parameter(torch.zeros(4, dtype=F64))
    b = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=F64))
    c = torch.nn.Parameter(torch.ones(2, dtype=F64))  # no gradient: skipped
    a.grad = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    b.grad = 2 * b.detach()  # parallel to w: g⊥ = 0
    ga, gb = a.grad.clone(), b.grad.clone()
    orthogonalize_([a, b, c])
    assert torch.equal(a.grad, ga) and torch.equal(b.grad, gb) and c.grad is None


def _manual_adamw(p, g, m, v, t, lr, betas, eps, wd):
    """One AdamW step written out (decoupled weight decay, bias correction)."""
    b1, b2 = betas
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * mhat / (vhat.sqrt() + eps), m, v


def test_orthograd_keeps_the_base_hyperparameters_and_equals_manual_adamw():
    gen = _gen(4)
    w0 = torch.randn(6, generator=gen, dtype=F64)
    gs = [torch.randn(6, generator=gen, dtype=F64) for _ in range(3)]
    lr, betas, eps, wd = 0.05, (0.8, 0.95), 1e-6, 0.1
    p = torch.nn.Parameter(w0.clone())
    base = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    opt = OrthoGrad(base)
    assert opt.base is base and opt.param_groups is base.param_groups
    assert opt.param_groups[0]["betas"] == betas and opt.param_groups[0]["eps"] == eps
    assert opt.param_groups[0]["weight_decay"] == wd and opt.param_groups[0]["lr"] == lr
    ref, m, v = w0.clone(), torch.zeros(6, dtype=F64), torch.zeros(6, dtype=F64)
    for t, g in enumerate(gs, start=1):
        p.grad = g.clone()
        gp = _project(ref, g)  # projected at the current weights
        opt.step()
        ref, m, v = _manual_adamw(ref, gp, m, v, t, lr, betas, eps, wd)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-14)
    assert int(opt.state[p]["step"]) == 3


def test_orthograd_state_dict_round_trip_zero_grad_and_scheduler():
    gen = _gen(5)
    w0 = torch.randn(3, 2, generator=gen, dtype=F64)
    gs = [torch.randn(3, 2, generator=gen, dtype=F64) for _ in range(4)]

    def make(w):
        p = torch.nn.Parameter(w.clone())
        return p, OrthoGrad(torch.optim.Adam([p], lr=0.01, betas=(0.9, 0.98)))

    p1, o1 = make(w0)
    for g in gs[:2]:
        p1.grad = g.clone()
        o1.step()
    sd = o1.state_dict()
    assert set(sd) == {"state", "param_groups"} and sd["param_groups"][0]["betas"] == (0.9, 0.98)
    p2, o2 = make(p1.detach())
    o2.load_state_dict(copy.deepcopy(sd))
    for g in gs[2:]:
        for p, o in ((p1, o1), (p2, o2)):
            p.grad = g.clone()
            o.step()
    assert torch.equal(p1.detach(), p2.detach())

    o1.zero_grad(set_to_none=False)
    assert torch.equal(p1.grad, torch.zeros_like(p1))
    o1.zero_grad()
    assert p1.grad is None

    # a wrapper is an Optimizer: LR schedulers drive the base's learning rate
    assert isinstance(o1, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(o1, lambda s: 0.5)
    p1.grad = gs[0].clone()
    o1.step()
    sched.step()
    assert o1.base.param_groups[0]["lr"] == pytest.approx(0.005)


def test_orthograd_closure_and_bad_arguments():
    p = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=F64))
    opt = OrthoGrad(torch.optim.SGD([p], lr=1.0))

    def closure():
        opt.zero_grad()
        loss = (p * torch.tensor([1.0, 1.0], dtype=F64)).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == 1.0
    # g = (1, 1), w = (1, 0): g⊥ = (0, 1), rescaled to ‖g‖ = √2
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -math.sqrt(2)], dtype=F64))
    with pytest.raises(TypeError):
        OrthoGrad([p])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="eps"):
        OrthoGrad(torch.optim.SGD([p], lr=1.0), eps=-1.0)


# --- Grokfast ------------------------------------------------------------------------------


def _grad_sequence(n_steps: int, seed: int = 6) -> list[list[torch.Tensor]]:
    gen = _gen(seed)
    return [[torch.randn(3, generator=gen, dtype=F64), torch.randn(2, 2, generator=gen, dtype=F64)]
            for _ in range(n_steps)]


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3, dtype=F64)),
            torch.nn.Parameter(torch.zeros(2, 2, dtype=F64))]


def _run(filt, params, seq) -> list[list[torch.Tensor]]:
    out = []
    for gs in seq:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        filt.apply()
        out.append([p.grad.clone() for p in params])
    return out


def test_grokfast_ema_matches_its_recurrence():
    alpha, lamb = 0.9, 2.0
    seq = _grad_sequence(5)
    params = _params()
    got = _run(GrokfastEMA(params, alpha=alpha, lamb=lamb), params, seq)
    mu = [None, None]
    for t, gs in enumerate(seq):
        for i, g in enumerate(gs):
            mu[i] = g.clone() if mu[i] is None else alpha * mu[i] + (1 - alpha) * g
            torch.testing.assert_close(got[t][i], g + lamb * mu[i], rtol=1e-13, atol=1e-14)
    # the first filtered gradient is (1 + λ) g, as in gradfilter_ema
    torch.testing.assert_close(got[0][0], (1 + lamb) * seq[0][0], rtol=1e-14, atol=0)


def test_grokfast_ema_skips_parameters_without_gradient():
    params = _params()
    filt = GrokfastEMA(params, alpha=0.5, lamb=1.0)
    params[0].grad = torch.ones(3, dtype=F64)
    filt.apply()
    assert params[1].grad is None and filt.mu[1] is None
    torch.testing.assert_close(params[0].grad, torch.full((3,), 2.0, dtype=F64))


def test_grokfast_ma_matches_its_recurrence_and_waits_for_a_full_window():
    window, lamb = 3, 5.0
    seq = _grad_sequence(6, seed=7)
    params = _params()
    got = _run(GrokfastMA(params, window=window, lamb=lamb), params, seq)
    for t, gs in enumerate(seq):
        for i, g in enumerate(gs):
            if t + 1 < window:
                assert torch.equal(got[t][i], g)  # unchanged until the window is full
            else:
                mean = sum(seq[s][i] for s in range(t + 1 - window, t + 1)) / window
                torch.testing.assert_close(got[t][i], g + lamb * mean, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("make", [lambda ps: GrokfastEMA(ps, alpha=0.8, lamb=1.5),
                                  lambda ps: GrokfastMA(ps, window=3, lamb=2.0)],
                         ids=["ema", "ma"])
def test_grokfast_tensors_round_trip_continues_identically(make):
    from safetensors.torch import load, save

    seq = _grad_sequence(5, seed=8)
    pa, pb = _params(), _params()
    a = make(pa)
    _run(a, pa, seq[:2])
    b = make(pb)
    b.load_tensors(load(save(a.tensors())))  # through safetensors bytes
    assert torch.equal(torch.stack([x[0] for x in _run(a, pa, seq[2:])]),
                       torch.stack([x[0] for x in _run(b, pb, seq[2:])]))
    assert all(torch.equal(x, y) for x, y in zip(_run(a, pa, seq[:1])[0],
                                                 _run(b, pb, seq[:1])[0]))


def test_grokfast_load_tensors_refuses_another_config():
    params = _params()
    ema = GrokfastEMA(params, alpha=0.8)
    with pytest.raises(ConfigError, match="alpha"):
        GrokfastEMA(params, alpha=0.9).load_tensors(ema.tensors())
    ma = GrokfastMA(params, window=3)
    with pytest.raises(ConfigError, match="window"):
        GrokfastMA(params, window=4).load_tensors(ma.tensors())


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, math.nan, True])
def test_grokfast_ema_rejects_bad_alpha(alpha):
    with pytest.raises(ConfigError, match=r"alpha .*\(0, 1\)"):
        GrokfastEMA(_params(), alpha=alpha)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_grokfast_ma_rejects_bad_window(window):
    with pytest.raises(ConfigError, match="window must be an integer ≥ 1"):
        GrokfastMA(_params(), window=window)


@pytest.mark.parametrize("lamb", [math.nan, math.inf, -math.inf])
def test_grokfast_rejects_non_finite_lamb(lamb):
    with pytest.raises(ConfigError, match="lamb"):
        GrokfastEMA(_params(), lamb=lamb)
    with pytest.raises(ConfigError, match="lamb"):
        GrokfastMA(_params(), lamb=lamb)
    assert issubclass(ConfigError, ValueError)

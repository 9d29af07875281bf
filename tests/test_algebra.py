"""Each task carries its algebra (mechgrok.algebra, Task.algebra): the group it is a rule in, the
rule, the basis it is read in; the group's tables agree with the task's answers; ``mul``."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from mechgrok.algebra import ALGEBRA_KINDS, Algebra
from mechgrok.errors import ConfigError
from mechgrok.measures import (
    RULES,
    answer_table,
    group_pairs,
    group_tokens,
    power_table,
    task_group,
)
from mechgrok.probes.base import RunContext
from mechgrok.tasks import TASKS, make_dataset

GROUP_TASKS = [n for n, t in TASKS.items() if t.algebra.is_group]
MODULAR_GROUP_TASKS = [n for n in GROUP_TASKS if TASKS[n].modular]
S5_TASKS = [n for n in GROUP_TASKS if not TASKS[n].modular]

#: what each task is, written out: (kind, rule, group in words, basis in words)
EXPECTED = {
    "add": ("cyclic", "xy", "cyclic group Z_p", "Fourier over Z_p"),
    "sub": ("cyclic", "xy^-1", "cyclic group Z_p", "Fourier over Z_p"),
    "mul": ("multiplicative", "xy", "multiplicative group Z_p*",
            "Fourier over Z_{p−1} in discrete-log order"),
    "div": ("multiplicative", "xy^-1", "multiplicative group Z_p*",
            "Fourier over Z_{p−1} in discrete-log order"),
    "s5": ("symmetric", "xy", "symmetric group S5", "irreducible representations of S5"),
    "s5conj": ("symmetric", "xyx^-1", "symmetric group S5", "irreducible representations of S5"),
    "s5aba": ("symmetric", "xyx", "symmetric group S5", "irreducible representations of S5"),
    **{n: ("none", "", "none", "2-D Fourier over Z_p × Z_p")
       for n in ("cond", "quad1", "quad2", "quad3", "cube1", "cube2")},
}


def test_every_task_declares_its_algebra() -> None:
    assert set(EXPECTED) == set(TASKS)
    for name, t in TASKS.items():
        a = t.algebra
        assert isinstance(a, Algebra) and a.kind in ALGEBRA_KINDS, name
        assert (a.kind, a.rule, a.group_name, a.basis) == EXPECTED[name], name
        assert (a.rule in RULES) == a.is_group, name
        assert bool(a.zero) == (a.kind == "multiplicative"), name  # 0 handled where it is outside


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"kind": "ring"}, "kind"), ({"kind": "cyclic"}, "rule"), ({"kind": "cyclic", "rule": "yx"}, "rule"),
    ({"kind": "none", "rule": "xy"}, "rule"), ({"kind": "symmetric", "rule": "xy"}, "degree"),
    ({"kind": "cyclic", "rule": "xy", "degree": 5}, "degree"),
])
def test_algebra_refuses_nonsense(kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        Algebra(**kwargs)


def _check_table(name: str, p: int | None) -> None:
    """The task's answers equal the group's answer table of the task's rule, through the map
    from group elements to the task's tokens, on exactly the task's pairs the group covers."""
    t = TASKS[name]
    g = task_group(t, p)
    assert g is not None
    tokens, rows = group_tokens(t, p), group_pairs(t, p)
    assert tokens is not None and rows is not None
    pairs = t.pairs(p)
    labels = t.answer(pairs[:, 0], pairs[:, 1], p)
    want = tokens[answer_table(g, t.algebra.rule)]  # (order, order) in tokens
    xs, ys = np.meshgrid(tokens, tokens, indexing="ij")
    assert (pairs[rows] == np.stack([xs.ravel(), ys.ravel()], axis=1)).all()
    assert (labels[rows] == want.ravel()).all()
    assert (t.answer(xs, ys, p) == want).all()
    left_out = np.setdiff1d(np.arange(len(pairs)), rows)
    if t.algebra.kind == "multiplicative":  # the pairs with a zero, and nothing else
        assert p is not None and len(rows) == (p - 1) ** 2
        assert (pairs[left_out] == 0).any(axis=1).all()
    else:
        assert len(left_out) == 0


@pytest.mark.parametrize("p", [5, 7, 13])
@pytest.mark.parametrize("name", MODULAR_GROUP_TASKS)
def test_modular_group_tasks_are_their_groups_tables(name: str, p: int) -> None:
    _check_table(name, p)


@pytest.mark.parametrize("name", S5_TASKS)
def test_s5_tasks_are_their_groups_tables(name: str) -> None:
    _check_table(name, None)
    assert task_group(name).name == "S5"  # type: ignore[union-attr]


@pytest.mark.parametrize("p", [5, 7, 13])
@pytest.mark.parametrize(("name", "sign"), [("mul", 1), ("div", -1)])
def test_mul_and_div_through_the_discrete_log(name: str, sign: int, p: int) -> None:
    """With x = g^i, y = g^j: x · y = g^(i + j), x · y⁻¹ = g^(i − j) (exponents mod p − 1)."""
    power = power_table(p)
    i, j = np.meshgrid(np.arange(p - 1), np.arange(p - 1), indexing="ij")
    got = TASKS[name].answer(power[i], power[j], p)
    assert (got == power[(i + sign * j) % (p - 1)]).all()


@pytest.mark.parametrize("p", [5, 7, 13, 97])
def test_mul_has_every_pair_and_zero_absorbs(p: int) -> None:
    d = make_dataset("mul", p, 0.5, 0)
    assert len(d.pairs) == p * p and d.n == p
    table = np.full((p, p), -1)
    table[d.pairs[:, 0], d.pairs[:, 1]] = d.labels
    assert (table[0] == 0).all() and (table[:, 0] == 0).all()  # x · 0 = 0 · y = 0
    assert (table[1:, 1:] != 0).all()  # Z_p* is closed: no zero divisors mod a prime
    assert (table == np.arange(p)[:, None] * np.arange(p)[None, :] % p).all()


def test_div_zero_convention() -> None:
    p = 7
    d = make_dataset("div", p, 0.5, 0)
    assert (d.pairs[:, 1] != 0).all() and len(d.pairs) == p * (p - 1)
    assert (d.labels[d.pairs[:, 0] == 0] == 0).all()  # 0 / y = 0


def test_tasks_without_a_group_have_none() -> None:
    for name, t in TASKS.items():
        if not t.algebra.is_group:
            assert task_group(t, 7) is None and group_tokens(t, 7) is None
            assert group_pairs(name, 7) is None


def test_mul_needs_a_prime_and_says_why() -> None:
    with pytest.raises(ConfigError, match="Z_p\\*.*12 is not prime"):
        make_dataset("mul", 12, 0.5, 0)
    with pytest.raises(ConfigError, match="not prime"):
        task_group("mul", 12)


def _run_context(name: str, p: int | None) -> RunContext:
    from mechgrok.config import resolve_config

    cfg = resolve_config("quick", overrides={"task.name": name, "task.p": p})
    data = make_dataset(name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
    return RunContext(types.SimpleNamespace(config=cfg), data)  # type: ignore[arg-type]


def test_fourier_applicability_reads_the_algebra() -> None:
    from mechgrok.probes.base import FOURIER_TASKS

    assert FOURIER_TASKS == {"add": "add", "sub": "sub"}
    for name in ("add", "sub"):
        ctx = _run_context(name, 7)
        assert ctx.op == name and ctx.fourier_reason() is None and ctx.z_p() == (7, name)
    for name in ("mul", "div"):  # Z_p* is read in Fourier over Z_{p−1} by discrete log
        ctx = _run_context(name, 7)
        assert ctx.fourier_reason() is None and ctx.fourier_view().n == 6
        assert ctx.z_p_reason() == (f"defined on Z_p's residues (add and sub); {name} is a rule "
                                    f"in the multiplicative group Z_p*")
    for name in ("s5", "s5conj", "s5aba"):
        why = _run_context(name, None).fourier_reason()
        assert why == (f"Fourier analysis over Z_p does not apply to {name} (a group of "
                       f"permutations; its natural basis is S5's representations: see the "
                       f"irreps probe)")
    for name in ("cond", "quad1", "cube2"):
        assert _run_context(name, 7).fourier_reason() == (
            f"Fourier analysis applies to rules in a cyclic group (add, sub, div, mul); {name} "
            f"is not a group operation on Z_p (read in the 2-D Fourier basis: see the "
            f"spectrum2d probe)")


@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_mul_trains_with_every_model_and_round_trips(kind: str, tmp_path: Path) -> None:
    from mechgrok.store import Run
    from mechgrok.training import train, train_seeds
    from tests.conftest import tiny_config, tiny_mlp_config

    make = tiny_config if kind == "transformer" else tiny_mlp_config
    cfg = make(**{"task.name": "mul", "task.p": 13, "train.epochs": 10})
    assert cfg.run_id().startswith(f"quick-mul-{kind}-p13-s0-")
    res = train(cfg, tmp_path / "one", progress=False)
    run = Run(tmp_path / "one")
    assert run.config == cfg and run.config.run_id() == cfg.run_id()
    assert res is not None and run.is_final
    many = train_seeds(cfg, [0, 1], [tmp_path / "s0", tmp_path / "s1"], progress=False)
    assert len(many) == 2 and all(Run(tmp_path / f"s{k}").config.task.name == "mul" for k in (0, 1))

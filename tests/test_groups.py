"""Groups as tables (mechgrok.measures.groups, MEASURES.md §7): axioms, conventions, names."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mechgrok.errors import ConfigError
from mechgrok.measures import groups as G
from mechgrok.measures import young as Y
from mechgrok.tasks import TASKS, s5_elements, s5_tables

PRIMES = [3, 5, 7, 11, 13, 97, 113]


def _check_group_axioms(g: G.Group, rng: np.random.Generator) -> None:
    n = g.order
    mul, inv, e = g.mul, g.inv, g.identity
    assert mul.shape == (n, n) and mul.dtype == np.int64
    assert inv.shape == (n,)
    # Latin square: every row and column a permutation of the elements
    assert (np.sort(mul, axis=0) == np.arange(n)[:, None]).all()
    assert (np.sort(mul, axis=1) == np.arange(n)[None, :]).all()
    assert (mul[e] == np.arange(n)).all() and (mul[:, e] == np.arange(n)).all()
    assert (mul[np.arange(n), inv] == e).all() and (mul[inv, np.arange(n)] == e).all()
    if n ** 3 <= 2_000_000:  # associativity on every triple
        assert (mul[mul[:, :, None], np.arange(n)[None, None, :]]
                == mul[np.arange(n)[:, None, None], mul[None, :, :]]).all()
    else:
        a, b, c = rng.integers(0, n, size=(3, 50_000))
        assert (mul[mul[a, b], c] == mul[a, mul[b, c]]).all()


@pytest.mark.parametrize("name", ["C1", "C2", "C12", "C13", "C113", "Z2*", "Z13*", "Z97*",
                                  "S1", "S2", "S3", "S4", "S5", "S6"])
def test_tables_are_groups(name: str) -> None:
    _check_group_axioms(G.group(name), np.random.default_rng(0))


def test_cyclic_convention() -> None:
    g = G.cyclic(12)
    assert (g.name, g.kind, g.n, g.order, g.identity) == ("C12", "cyclic", 12, 12, 0)
    assert (g.elements == np.arange(12)).all()
    assert g.mul[7, 8] == 3 and g.inv[5] == 7


@pytest.mark.parametrize("p", PRIMES)
def test_multiplicative_keeps_natural_order(p: int) -> None:
    g = G.multiplicative(p)
    assert (g.name, g.kind, g.n, g.order, g.identity) == (f"Z{p}*", "multiplicative", p, p - 1, 0)
    x = g.elements
    assert (x == np.arange(1, p)).all()
    assert (x[g.mul] == (x[:, None] * x[None, :]) % p).all()
    assert (x[g.inv] * x % p == 1).all()


def _is_primitive_root_brute(g: int, p: int) -> bool:
    return len({pow(g, i, p) for i in range(p - 1)}) == p - 1


@pytest.mark.parametrize("p", PRIMES)
def test_discrete_log_tables_invert(p: int) -> None:
    g = G.primitive_root(p)
    assert _is_primitive_root_brute(g, p)
    assert not any(_is_primitive_root_brute(h, p) for h in range(2, g))  # the smallest
    power, dlog = G.power_table(p), G.discrete_log_table(p)
    assert power.shape == (p - 1,) and dlog.shape == (p,) and dlog[0] == -1
    assert sorted(power.tolist()) == list(range(1, p))  # g generates Z_p*
    assert (power == [pow(g, i, p) for i in range(p - 1)]).all()
    assert (dlog[power] == np.arange(p - 1)).all()
    assert (power[dlog[1:]] == np.arange(1, p)).all()
    assert dlog[1] == 0 and dlog[g] == 1
    # the log turns the product into a sum mod p − 1
    x = np.arange(1, p)
    prod = (x[:, None] * x[None, :]) % p
    assert (dlog[prod] == (dlog[x][:, None] + dlog[x][None, :]) % (p - 1)).all()


def test_known_primitive_roots() -> None:
    assert [G.primitive_root(p) for p in (2, 3, 5, 7, 11, 13, 97, 113)] == [1, 2, 2, 3, 2, 2, 5, 3]


def test_s5_is_the_task_s5() -> None:
    g = G.symmetric(5)
    prod, inv = s5_tables()
    assert (g.elements == s5_elements()).all()
    assert (g.mul == prod).all() and (g.inv == inv).all() and g.identity == 0


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_symmetric_convention(n: int) -> None:
    g = G.symmetric(n)
    assert g.order == math.factorial(n) == len(g.elements)
    assert [tuple(r) for r in g.elements] == list(itertools.permutations(range(n)))
    rng = np.random.default_rng(n)
    for x, y in rng.integers(0, g.order, size=(200, 2)):
        xp, yp = g.elements[x], g.elements[y]
        assert tuple(g.elements[g.mul[x, y]]) == tuple(xp[yp])  # apply y first, then x
        assert tuple(g.elements[g.inv[x]][xp]) == tuple(range(n))


def test_tables_are_read_only_and_shared() -> None:
    g = G.group("S4")
    assert g is G.symmetric(4)
    with pytest.raises(ValueError):
        g.mul[0, 0] = 1
    with pytest.raises(ValueError):
        G.discrete_log_table(13)[2] = 0


@pytest.mark.parametrize(("name", "expected"), [
    ("C13", "C13"), ("Z13", "C13"), ("c 13", "C13"), ("Z97*", "Z97*"), ("zmul97", "Z97*"),
    ("U97", "Z97*"), ("S5", "S5"), ("s6", "S6")])
def test_group_names(name: str, expected: str) -> None:
    assert G.group(name).name == expected
    assert G.group(G.group(name)) is G.group(name)


@pytest.mark.parametrize("name", ["", "D7", "C0", "C5000", "Z12*", "S7", "S0", "Zmul", "5",
                                  "C-3", "Z97**"])
def test_bad_group_names_are_one_line_config_errors(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        G.group(name)
    assert "\n" not in str(err.value)


def test_bad_parameters() -> None:
    for call in (lambda: G.cyclic(0), lambda: G.symmetric(7), lambda: G.multiplicative(15),
                 lambda: G.primitive_root(1), lambda: G.cyclic(True), lambda: G.cyclic(2.0)):
        with pytest.raises(ConfigError):
            call()


def test_task_rules_on_s5() -> None:
    """The three S5 tasks are the rules xy, xyx⁻¹ and xyx on the group's table."""
    from mechgrok.measures import answer_table

    x, y = np.meshgrid(np.arange(120), np.arange(120), indexing="ij")
    for task, rule in (("s5", "xy"), ("s5conj", "xyx^-1"), ("s5aba", "xyx")):
        assert (TASKS[task].answer(x, y, None) == answer_table("S5", rule)).all()
    prod, inv = s5_tables()
    assert (answer_table("S5", "xy^-1") == prod[x, inv[y]]).all()


def test_task_rules_on_cyclic() -> None:
    from mechgrok.measures import answer_table

    p = 13
    x, y = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    assert (TASKS["add"].answer(x, y, p) == answer_table(f"C{p}", "xy")).all()
    assert (TASKS["sub"].answer(x, y, p) == answer_table(f"C{p}", "xy^-1")).all()
    # div restricted to x, y ≠ 0 is x · y⁻¹ in Z_p* (element index = integer − 1)
    xs, ys = x[1:, 1:], y[1:, 1:]
    assert (TASKS["div"].answer(xs, ys, p) - 1 == answer_table(f"Z{p}*", "xy^-1")).all()


# --- Young tableaux ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "count"), [(1, 1), (2, 2), (3, 3), (4, 5), (5, 7), (6, 11)])
def test_partitions(n: int, count: int) -> None:
    parts = Y.partitions(n)
    assert len(parts) == count == len(set(parts))
    assert parts[0] == (n,) and parts[-1] == (1,) * n
    assert all(sum(p) == n and list(p) == sorted(p, reverse=True) for p in parts)
    assert list(parts) == sorted(parts, reverse=True)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_standard_tableaux_count_is_the_hook_length_dimension(n: int) -> None:
    for shape in Y.partitions(n):
        words = Y.standard_tableaux(shape)
        assert len(words) == Y.hook_length_dimension(shape) == len(set(words))
        assert list(words) == sorted(words)
        for w in words:  # a Yamanouchi word: row r never longer than row r − 1
            counts = [0] * len(shape)
            for r in w:
                counts[r] += 1
                assert r == 0 or counts[r] <= counts[r - 1]
            assert tuple(counts) == shape
    assert sum(Y.hook_length_dimension(s) ** 2 for s in Y.partitions(n)) == math.factorial(n)


def test_bad_shape() -> None:
    with pytest.raises(ValueError):
        Y.standard_tableaux((1, 2))
    assert Y.partition_name((3, 1, 1)) == "(3,1,1)"

"""The degree n of S_n as a task parameter (issue 13): ``task.degree`` for ``s5``, ``s5conj`` and
``s5aba``, n = 3 … 6 (None: 5). S5 runs written before keep their ids, configs and data to the
bit; S_n's data are S_n's products by definition; a degree where none belongs is one line."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mechgrok.config import RunConfig, TaskConfig, resolve_config
from mechgrok.errors import ConfigError
from mechgrok.measures import (
    answer_table,
    fourier_view,
    group_pairs,
    group_tokens,
    symmetric,
    task_group,
)
from mechgrok.tasks import (
    TASKS,
    make_dataset,
    s5_elements,
    s5_tables,
    symmetric_elements,
    symmetric_tables,
)
from tests.conftest import assert_one_line_error, cli_here, run_cli, tiny_mlp_config

RULES = {"s5": "xy", "s5conj": "xyx^-1", "s5aba": "xyx"}

#: run ids computed by mechgrok before the degree existed (preset, task, model kind) → id
OLD_IDS = {
    ("nanda", "s5", "transformer"): "nanda-s5-transformer-s5-s0-c33cdeb1",
    ("nanda", "s5conj", "mlp"): "nanda-s5conj-mlp-s5-s0-6a3bd850",
    ("nanda", "add", "transformer"): "nanda-add-transformer-p113-s0-493c0507",
    ("zhong-clock", "s5aba", "transformer"): "zhong-clock-s5aba-transformer-s5-s0-7f04d955",
    ("zhong-pizza", "s5", "mlp"): "zhong-pizza-s5-mlp-s5-s0-8e8ae58b",
    ("prieto", "s5", "mlp"): "prieto-s5-mlp-s5-s0-f6c18244",
    ("prieto", "s5conj", "transformer"): "prieto-s5conj-transformer-s5-s0-9d2a14b2",
    ("prieto", "s5aba", "transformer"): "prieto-s5aba-transformer-s5-s0-694c53a7",
    ("zhong-clock", "add", "mlp"): "zhong-clock-add-mlp-p59-s0-d352ecf1",
}

#: a ``config.json`` as mechgrok wrote it before the degree existed (``quick``, s5conj, MLP, seed 2)
OLD_SAVED = {
    "kind": "mechgrok.run_config", "schema_version": 1, "preset": "quick",
    "task": {"name": "s5conj", "p": None, "frac_train": 0.4, "data_seed": 0},
    "model": {"kind": "mlp", "embed": "learned", "d_embed": 128, "combine": "concat",
              "hidden": [256], "act": "relu", "bias": True, "init_scale": 1.0},
    "train": {"epochs": 2000, "optimizer": "adamw", "lr": 0.003, "weight_decay": 1.0,
              "betas": [0.9, 0.98], "eps": 1e-08, "momentum": 0.0, "warmup_steps": 10,
              "batch_size": None, "loss_dtype": "float64", "model_dtype": "float32",
              "freeze_biases": False, "seed": 2, "eval_every": 10, "checkpoint_every": 50,
              "dense_until": 500, "dense_every": 10, "stop_after_grok": None, "threads": None,
              "loss": "cross_entropy", "orthograd": False, "grokfast": None,
              "grokfast_alpha": 0.98, "grokfast_lamb": None, "grokfast_window": 100,
              "checkpoint_schedule": "linear", "checkpoints_per_decade": 40,
              "checkpoint_precision": "exact"},
}
OLD_SAVED_ID = "quick-s5conj-mlp-s5-s2-caa75eae"

#: SHA-256 of S5's tables and of each S5 task's data (pairs, labels, split of frac 0.3, seed 0)
#: as mechgrok computed them before the degree existed
OLD_S5 = {
    "elements": "5fd40fba094bafe92210e11ee4aa7ffbc9a0a83e40aa66a31f6ffed6484a8bd6",
    "prod": "1cc1b58c6d6c717e3b359f25645955ffcde2fbb859828956a4917a9717937c25",
    "inv": "0ac24a76227cce53a250ec202c1865cdaa7511b10506d44eb4b607ce6a6dfc73",
    "s5": "716bd6739f62407d1eda4e23a6f797faecdbdeba14ee17852ec320522051f330",
    "s5conj": "3bfe17109ee2afa41584aee795f00bc3f9e5cc6c0d5c0f3b30c729c851761d8c",
    "s5aba": "3fe0aa399733b6052f375d196768fbb23c9db850657d09b14bbd5aecb55e6488",
}


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    return h.hexdigest()


def _cfg(preset: str, task: str, kind: str, more: dict[str, Any] | None = None) -> RunConfig:
    over: dict[str, Any] = {"task.name": task, "model.kind": kind, **(more or {})}
    return resolve_config(preset, overrides=over)


# --- compatibility: ids, saved configs, data ------------------------------------------------

@pytest.mark.parametrize(("key", "rid"), list(OLD_IDS.items()))
def test_run_ids_written_before_are_unchanged(key: tuple[str, str, str], rid: str) -> None:
    cfg = _cfg(*key)
    assert cfg.run_id() == rid
    if key[1] != "add":  # degree 5 spelt out is S5 all the same
        assert _cfg(*key, {"task.degree": 5}).run_id() == rid
    assert "degree" not in cfg.to_dict()["task"]  # config.json as it was


def test_saved_s5_config_loads_and_keeps_its_id_and_file() -> None:
    cfg = RunConfig.from_saved(OLD_SAVED)
    assert cfg.task.degree is None and cfg.task.size == 5 and cfg.task.n == 120
    assert cfg.run_id() == OLD_SAVED_ID
    assert cfg.to_dict() == OLD_SAVED  # what it writes back is byte for byte what it read
    s4 = json.loads(json.dumps(OLD_SAVED))
    s4["task"]["degree"] = 4
    c4 = RunConfig.from_saved(s4)
    assert c4.task.degree == 4 and c4.to_dict() == s4 and c4.task.n == 24
    assert c4.run_id().startswith("quick-s5conj-mlp-s4-s2-")
    assert c4.run_id().rsplit("-", 1)[1] != OLD_SAVED_ID.rsplit("-", 1)[1]


def test_s5_tables_and_data_are_bit_identical() -> None:
    prod, inv = s5_tables()
    assert _sha(s5_elements()) == OLD_S5["elements"]
    assert (_sha(prod), _sha(inv)) == (OLD_S5["prod"], OLD_S5["inv"])
    for task in RULES:
        for degree in (None, 5):
            d = make_dataset(task, None, 0.3, 0, degree=degree)
            assert _sha(d.pairs, d.labels, d.train_idx, d.test_idx) == OLD_S5[task]
            assert d.degree == 5 and d.n == 120 and d.p is None


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_task_tables_are_the_groups_tables(n: int) -> None:
    g = symmetric(n)
    prod, inv = symmetric_tables(n)
    assert (symmetric_elements(n) == g.elements).all()
    assert (prod == g.mul).all() and (inv == g.inv).all()


# --- S_n's data by definition -----------------------------------------------------------------

def _by_definition(el: np.ndarray, x: np.ndarray, y: np.ndarray, rule: str) -> np.ndarray:
    """The answers as permutations, composed from their definition: (a · b)[i] = a[b[i]]."""
    def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, b, axis=1)

    xy = compose(el[x], el[y])
    if rule == "xy":
        return xy
    last = np.argsort(el[x], axis=1) if rule == "xyx^-1" else el[x]  # x⁻¹[x[i]] = i
    return compose(xy, last)


@pytest.mark.parametrize("n", [3, 4, 6])
@pytest.mark.parametrize("task", list(RULES))
def test_sn_datasets_are_sn_products(task: str, n: int) -> None:
    d = make_dataset(task, None, 0.5, 1, degree=n)
    order = math.factorial(n)
    assert d.n == order and d.vocab_size == order + 1 and d.degree == n
    assert len(d.pairs) == order**2 and len(d.train_idx) + len(d.test_idx) == order**2
    assert d.algebra.group_name == f"symmetric group S{n}"
    g = symmetric(n)
    x, y = d.pairs[:, 0], d.pairs[:, 1]
    assert (d.labels.reshape(order, order) == answer_table(g, RULES[task])).all()
    # the answer's permutation is the rule's, composed by hand
    assert (g.elements[d.labels] == _by_definition(g.elements, x, y, RULES[task])).all()
    # the task read as its group is S_n, the identity map on tokens and pairs
    assert task_group(task, degree=n).name == f"S{n}"  # type: ignore[union-attr]
    assert (group_tokens(task, degree=n) == np.arange(order)).all()  # type: ignore[union-attr]
    assert (group_pairs(task, None, degree=n) == np.arange(order**2)).all()  # type: ignore
    assert fourier_view(task, degree=n) is None


def test_existing_calls_still_mean_s5() -> None:
    assert task_group("s5").name == "S5"  # type: ignore[union-attr]
    assert TASKS["s5"].n_elements(None) == 120 and len(TASKS["s5aba"].pairs(None)) == 14400
    assert task_group("add", 7).name == "C7"  # type: ignore[union-attr]


# --- the config and its checks --------------------------------------------------------------

def test_config_degree_canonical_size_and_ids() -> None:
    ids = {}
    for n in (3, 4, 5, 6):
        t = TaskConfig(name="s5aba", degree=n)
        assert t.degree == (None if n == 5 else n) and t.size == n
        assert t.n == math.factorial(n) and t.size_label == f"s{n}"
        ids[n] = _cfg("quick", "s5aba", "mlp", {"task.degree": n}).run_id()
        assert ids[n].startswith(f"quick-s5aba-mlp-s{n}-s0-")
    assert len({i.rsplit("-", 1)[1] for i in ids.values()}) == 4  # the hash differs too
    assert TaskConfig(name="s5", p=113, degree=4).p is None  # p ignored for S_n, as before
    assert TaskConfig(name="add", p=7).size == 7 and TaskConfig(name="add", p=7).degree is None
    data = TaskConfig(name="s5conj", degree=3, frac_train=0.5).dataset()
    assert data.n == 6 and len(data.pairs) == 36


@pytest.mark.parametrize(("task", "degree", "needle"), [
    ("add", 4, "has no degree"), ("mul", 5, "has no degree"), ("quad1", 3, "has no degree"),
    ("s5", 7, "from 3 to 6"), ("s5", 2, "from 3 to 6"), ("s5", True, "integer"),
    ("s5conj", 4.0, "integer"),
])
def test_bad_degree_is_one_line(task: str, degree: Any, needle: str) -> None:
    p = None if task.startswith("s5") else 7
    for make in (lambda: TaskConfig(name=task, p=p, degree=degree),
                 lambda: make_dataset(task, p, 0.5, 0, degree=degree),
                 lambda: task_group(task, p, degree=degree)):
        with pytest.raises(ConfigError, match=needle) as e:
            make()
        assert "\n" not in str(e.value)


def test_degree_type_from_a_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match="task.degree must be an integer or none"):
        resolve_config("quick", file={"task": {"name": "s5", "degree": "four"}})


def test_cli_refuses_degree_on_a_modular_task(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    assert_one_line_error(run_cli("train", "--task", "add", "--degree", "4", "--out-dir",
                                  str(tmp_path)), "task 'add' has no degree")
    assert_one_line_error(cli_here(capsys, "train", "--task", "s5", "--degree", "7",
                                   "--out-dir", str(tmp_path)), "from 3 to 6")
    assert not any(tmp_path.iterdir())


def test_tasks_listing_says_the_degree_is_a_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    r = cli_here(capsys, "tasks")
    assert r.returncode == 0
    assert "--degree" in r.stdout and "S4 24" in r.stdout and "S6 720" in r.stdout


# --- sizes follow n! ------------------------------------------------------------------------

def test_models_and_memory_follow_the_degree() -> None:
    from mechgrok.models import build_model
    from mechgrok.resources import check_memory, estimate_memory, param_count

    for n in (3, 4):
        for kind in ("mlp", "transformer"):
            cfg = tiny_mlp_config(**{"task.name": "s5", "task.degree": n}) if kind == "mlp" else \
                _cfg("quick", "s5", kind, {"task.degree": n, "model.d_model": 16})
            model = build_model(cfg)
            assert model.n_classes == math.factorial(n)
            assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    s6 = _cfg("quick", "s5", "transformer", {"task.degree": 6})
    s5 = _cfg("quick", "s5", "transformer")
    assert estimate_memory(s6)["analysis"] > 30 * estimate_memory(s5)["analysis"]  # 36× pairs
    with pytest.raises(ConfigError, match="518,400 pairs.*smaller task.degree"):
        check_memory(s6, 2**30, analysis=True)


# --- end to end: a tiny S4 run trains and is analysed -------------------------------------------

def test_tiny_s4_run_trains_and_analyses(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    from mechgrok.store import Run
    from mechgrok.training import train

    cfg = tiny_mlp_config(**{"task.name": "s5conj", "task.degree": 4, "task.frac_train": 0.5,
                             "train.epochs": 20, "train.eval_every": 10,
                             "train.checkpoint_every": 10})
    assert cfg.run_id().startswith("quick-s5conj-mlp-s4-")
    path = tmp_path / cfg.run_id()
    train(cfg, path, progress=False)
    run = Run(path)
    assert run.config == cfg and run.config.task.degree == 4
    assert run.load_model().n_classes == 24
    data = run.dataset()
    assert len(data.pairs) == 576 and data.degree == 4
    assert (data.labels.reshape(24, 24) == answer_table(symmetric(4), "xyx^-1")).all()
    r = cli_here(capsys, "analyze", str(path))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "S5" not in r.stdout  # read as S4, nowhere as S5
    assert "S4" in r.stdout

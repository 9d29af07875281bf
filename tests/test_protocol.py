"""The GrokModel protocol and analyze_model: any model object, analysed without a run directory.

Known answers come from models built by hand in this file (not mechgrok classes): a clock for
addition mod p at one frequency k, whose key frequency, losses, weight norm and gradient
symmetricity can be computed on paper.
"""

from __future__ import annotations

import math
import re
import runpy
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mechgrok.analysis import analyze_model, run_probe
from mechgrok.config import RunConfig, TaskConfig
from mechgrok.errors import ConfigError, MechgrokError
from mechgrok.models import GrokModel, build_model, check_model
from mechgrok.models.protocol import MEMBERS, OPTIONAL_MEMBERS, PROBE_MEMBERS
from mechgrok.probes import NotApplicable, probe
from mechgrok.probes.base import CheckpointContext, RunContext
from mechgrok.probes.builtin import BUILTIN_PROBES, final_key_frequency_finder
from mechgrok.probes.clockpizza import _triples
from mechgrok.store import Run
from mechgrok.tasks import make_dataset
from mechgrok.training import train
from tests.conftest import ROOT, tiny_config, tiny_mlp_config

P, K, SCALE = 31, 7, 300.0
BUILTINS = [p.name for p in BUILTIN_PROBES]


# --------------------------------------------------------------------------------------------
# A user's own model: a plain nn.Module (no TransformerLens), its hooks and cache by hand
# --------------------------------------------------------------------------------------------
class PlainClock(nn.Module):
    """Addition mod p through frequency k: embedding e_x = (cos wx, sin wx), w = 2πk/p; neurons
    cx·cy, sx·sy, sx·cy, cx·sy; logit z = scale·cos(w(x + y − z)). The cache is a dict."""

    neuron_hook = "neurons"
    hook_names = ("hook_embed", "neurons")

    def __init__(self, p: int, k: int, scale: float):
        super().__init__()
        self.n_classes = p
        w = 2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p
        self.W_E = nn.Parameter(torch.stack([w.cos(), w.sin()], 1))  # (p, 2)
        self.W_L = nn.Parameter(scale * torch.stack([w.cos(), -w.cos(), w.sin(), w.sin()]))

    def _forward(self, tokens: torch.Tensor, hooks: dict[str, list]) -> torch.Tensor:
        def at(name: str, act: torch.Tensor) -> torch.Tensor:
            for fn in hooks.get(name, ()):
                out = fn(act, name)
                act = act if out is None else out
            return act

        e = at("hook_embed", self.W_E[tokens[:, :2]])  # (batch, 2, 2)
        (cx, sx), (cy, sy) = e[:, 0].unbind(-1), e[:, 1].unbind(-1)
        h = at("neurons", torch.stack([cx * cy, sx * sy, sx * cy, cx * sy], -1))  # (batch, 4)
        return h @ self.W_L  # (batch, p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._forward(tokens, {})

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks=()) -> torch.Tensor:
        hooks: dict[str, list] = {}
        for name, fn in fwd_hooks:
            hooks.setdefault(name, []).append(fn)
        return self._forward(tokens, hooks)

    def run_with_cache(self, tokens: torch.Tensor, names_filter=None):
        cache: dict[str, torch.Tensor] = {}

        def keep(name: str):
            return lambda act, hook: cache.__setitem__(name, act)

        names = [n for n in self.hook_names if names_filter is None or names_filter(n)]
        return self.run_with_hooks(tokens, [(n, keep(n)) for n in names]), cache

    def token_embedding(self) -> torch.Tensor:
        return self.W_E

    def neuron_logit_map(self) -> torch.Tensor:
        return self.W_L

    def neurons(self, cache: Any) -> torch.Tensor:
        return cache[self.neuron_hook]


class PlainClockFast(PlainClock):
    """The same, with the optional fast path the collapse probe differentiates through."""

    def forward_last(self, tokens: torch.Tensor) -> torch.Tensor:
        return self(tokens)


def _freqs(multi_hot: np.ndarray) -> list[int]:
    return (np.flatnonzero(multi_hot) + 1).tolist()


# --------------------------------------------------------------------------------------------
# (a), (b): the protocol and check_model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [tiny_config(), tiny_mlp_config(),
                                 tiny_mlp_config(**{"model.embed": "onehot"})],
                         ids=["transformer", "mlp", "mlp-onehot"])
def test_mechgrok_models_satisfy_the_protocol(cfg: RunConfig) -> None:
    model = build_model(cfg)
    assert isinstance(model, GrokModel)
    check_model(model)
    assert callable(model.forward_last)  # the optional member too


def test_hand_built_model_satisfies_the_protocol() -> None:
    model = PlainClock(P, K, SCALE)
    assert isinstance(model, GrokModel)
    check_model(model)


class Half:
    """Some of the members, and a wrong one: an empty neuron_hook."""

    neuron_hook = ""

    def run_with_cache(self, tokens, names_filter=None):  # pragma: no cover - never called
        raise AssertionError

    def token_embedding(self):  # pragma: no cover - never called
        raise AssertionError


def test_missing_members_refused_in_one_line() -> None:
    assert not isinstance(Half(), GrokModel)
    with pytest.raises(MechgrokError) as e:
        check_model(Half())
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("Half is not a GrokModel")
    for name in ("neuron_hook", "n_classes", "run_with_hooks", "neuron_logit_map", "neurons",
                 "parameters", "named_parameters"):
        assert re.search(rf"\b{name} \(", msg), (name, msg)
        assert MEMBERS[name] in msg  # … and what it is for
    for name in ("run_with_cache", "token_embedding", "forward_last"):
        assert not re.search(rf"\b{name} \(", msg), (name, msg)
    # analyze_model refuses it the same way, before any work
    with pytest.raises(MechgrokError, match="Half is not a GrokModel"):
        analyze_model(Half(), "add", P)


def test_wrong_number_of_classes_or_split_refused() -> None:
    with pytest.raises(ConfigError, match="n_classes = 31.*23 answer classes"):
        analyze_model(PlainClock(P, K, SCALE), "add", 23)
    with pytest.raises(ConfigError, match="repeated or in both"):
        analyze_model(PlainClock(P, K, SCALE), "add", P, split=([0, 1, 2], [2, 3]))
    with pytest.raises(ConfigError, match="outside"):
        analyze_model(PlainClock(P, K, SCALE), "add", P, split=([0, 1], [P * P]))


# --------------------------------------------------------------------------------------------
# (c): a hand-built model, known answers
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clock_results() -> dict[str, dict[str, Any]]:
    return analyze_model(PlainClock(P, K, SCALE), "add", P, frac_train=0.3, data_seed=0)


def test_every_builtin_probe_reported(clock_results) -> None:
    assert list(clock_results) == BUILTINS
    for name, res in clock_results.items():
        assert "error" not in res, (name, res)


def test_hand_built_clock_key_frequency(clock_results) -> None:
    kf = clock_results["key_freqs"]
    for rule in ("neurons_rule", "embedding_rule", "logit_map_rule"):
        assert _freqs(kf[rule]) == [K], rule
    assert kf["cluster_sizes"][K - 1] == 4 and kf["cluster_sizes"].sum() == 4
    assert kf["frac_clustered"] == 1.0
    assert clock_results["fourier_embed"]["top_freq"] == K


def test_hand_built_clock_losses(clock_results) -> None:
    loss = clock_results["loss"]
    assert loss["train_acc"] == loss["test_acc"] == 1.0
    r = clock_results["restricted"]
    assert r["n_keys"] == 1 and r["keys_from_neuron_rule"] is True
    # the logits scale·cos(w(x + y − z)) lie in the key directions: projecting changes nothing
    assert r["full_loss"] < 1e-2
    assert r["restricted_loss"] == pytest.approx(r["full_loss"], rel=1e-9, abs=1e-12)
    # removing them leaves constant logits: the loss of a uniform guess, log p
    assert r["excluded_loss"] == pytest.approx(math.log(P), rel=1e-9)
    assert r["excluded_loss_per_freq"][K - 1] == pytest.approx(math.log(P), rel=1e-9)
    assert np.isnan(np.delete(r["excluded_loss_per_freq"], K - 1)).all()


def test_hand_built_clock_weights_and_clock_pizza(clock_results) -> None:
    # ‖W_E‖² = p (unit rows); ‖W_L‖² = scale²·(2·p/2 + 2·p/2)
    w = clock_results["weights"]
    assert w["W_E"] == pytest.approx(P, rel=1e-12)
    assert w["total"] == pytest.approx(P + 2 * P * SCALE**2, rel=1e-12)
    cp = clock_results["clock_pizza"]
    assert cp["circularity"] == pytest.approx(1.0, abs=1e-9)  # the embedding is a circle at k
    assert (cp["pc_best_freq"] == K).all()
    # ∂logit_c/∂e_a = scale·(cos θ_b, −sin θ_b) with θ_b = w(b − c), and the same for b: their
    # cosine is cos(w(b − a)), averaged over the probe's sampled triples
    a, b, _ = _triples(P, 100, 0)
    want = float(torch.cos(2 * math.pi * K * (b - a).double() / P).mean())
    assert cp["gradient_symmetricity"] == pytest.approx(want, abs=1e-9)
    # an ideal clock's correct logit is the constant scale: no distance irrelevance, no verdict
    assert math.isnan(cp["distance_irrelevance"]) and cp["verdict_code"] is None


def test_collapse_needs_forward_last(clock_results) -> None:
    (reason,) = clock_results["collapse"].values()
    assert list(clock_results["collapse"]) == ["n/a"]
    assert "forward_last" in reason
    res = analyze_model(PlainClockFast(P, K, SCALE), "add", P, probes=["collapse"])
    c = res["collapse"]
    assert "n/a" not in c and "error" not in c, c
    assert 0.0 <= c["sc_fraction_float64"] <= 1.0 and math.isfinite(c["nlm_cosine"])


def test_key_frequencies_come_from_the_final_model() -> None:
    """A clock at frequency 3 analysed against a final model at K: restricted/excluded loss use
    K, where this model has nothing, while the per-checkpoint key_freqs probe sees 3."""
    now, final = PlainClock(P, 3, SCALE), PlainClock(P, K, SCALE)
    res = analyze_model(now, "add", P, final_model=final, probes=["key_freqs", "restricted"])
    assert _freqs(res["key_freqs"]["neurons_rule"]) == [3]
    r = res["restricted"]
    assert r["excluded_loss"] == pytest.approx(r["full_loss"], rel=1e-6)
    assert r["restricted_loss"] == pytest.approx(math.log(P), rel=1e-6)


def test_not_applicable_errors_selection_and_modes() -> None:
    @probe("boom", description="raises")
    def boom(ctx):
        raise ValueError("no luck")

    model = PlainClock(P, K, SCALE).train()
    before = {n: t.detach().clone() for n, t in model.named_parameters()}
    res = analyze_model(model, "quad1", P, probes=["loss", "restricted", boom])
    assert list(res) == ["loss", "restricted", "boom"]
    assert res["loss"]["train_acc"] < 0.5  # a clock for addition does not compute x² + y²
    assert list(res["restricted"]) == ["n/a"] and "quad1" in res["restricted"]["n/a"]
    assert res["boom"] == {"error": "ValueError: no luck"}
    assert model.training  # put back as it was
    assert all(torch.equal(t, before[n]) for n, t in model.named_parameters())


def test_explicit_split() -> None:
    """The addition clock on sub is right exactly where x + y ≡ x − y, i.e. y = 0 (pair x·p):
    with those pairs as the training split, train accuracy is 1 and test accuracy 0."""
    train_idx = np.arange(P) * P
    test_idx = np.setdiff1d(np.arange(P * P), train_idx)
    res = analyze_model(PlainClock(P, K, SCALE), "sub", P, split=(torch.from_numpy(train_idx),
                                                                  test_idx.tolist()),
                        probes=["loss"])
    assert res["loss"]["train_acc"] == 1.0 and res["loss"]["test_acc"] == 0.0


# --------------------------------------------------------------------------------------------
# The table of which probe uses which member matches what the probes really touch
# --------------------------------------------------------------------------------------------
class Recorder:
    """Passes everything to a model, noting which members were read."""

    def __init__(self, model: Any):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._model, name)


def test_probe_members_table_is_what_the_probes_use() -> None:
    assert set(PROBE_MEMBERS) == set(BUILTINS)
    assert set(OPTIONAL_MEMBERS) <= set(MEMBERS)
    from tests.test_circuit import IrrepModel

    def context(model: Any, task: str) -> CheckpointContext:
        p = None if task == "s5" else P
        data = make_dataset(task, p, 0.3, 0)
        run = SimpleNamespace(config=RunConfig(task=TaskConfig(name=task, p=p)))
        rc = RunContext(run, data, lambda: final_key_frequency_finder(rc, model))
        return CheckpointContext(rc, SimpleNamespace(epoch=0), model)

    for p in BUILTIN_PROBES:
        rec = Recorder(PlainClockFast(P, K, SCALE))
        ctx = context(rec, "add")
        if p.applies(ctx.run) is not None:  # the 2-D spectrum: a task with no group
            ctx = context(rec, "quad1")
        if p.applies(ctx.run) is not None:  # the irreps: a task in S_n
            rec = Recorder(IrrepModel("S5", "(4,1)", 40.0))
            ctx = context(rec, "s5")
        assert p.applies(ctx.run) is None, p.name
        with torch.set_grad_enabled("grad" in p.needs):
            p.compute(ctx)
        assert rec.read, p.name
        assert rec.read <= set(PROBE_MEMBERS[p.name]), (p.name, rec.read)


# --------------------------------------------------------------------------------------------
# (d): one code path: analyze_model on a checkpoint equals run_probe on the run
# --------------------------------------------------------------------------------------------
GROKS = {"task.p": 23, "task.frac_train": 0.8, "train.lr": 1e-2, "model.d_model": 32,
         "model.d_mlp": 64, "train.epochs": 700, "train.checkpoint_every": 50,
         "train.eval_every": 10, "train.stop_after_grok": 5}


@pytest.fixture(scope="module", params=["transformer", "mlp"])
def tiny_run(request, tmp_path_factory) -> Run:
    path = tmp_path_factory.mktemp("runs") / request.param
    cfg = tiny_config(**GROKS) if request.param == "transformer" else tiny_mlp_config()
    train(cfg, path, progress=False)
    return Run(path)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_analyze_model_equals_run_probe(tiny_run: Run) -> None:
    cks = tiny_run.checkpoints()
    ck = cks[len(cks) // 2]  # not the final one: key frequencies come from the final model
    got = analyze_model(tiny_run.load_model(ck), tiny_run.config.task.name, tiny_run.config.task.p,
                        split=tiny_run.split(), final_model=tiny_run.load_model(),
                        epoch=ck.epoch, train_config=tiny_run.config.train)
    assert list(got) == BUILTINS
    for name in BUILTINS:
        try:
            want = run_probe(name, tiny_run, ck.epoch)
        except NotApplicable as e:
            want = {"n/a": str(e)}
        assert list(got[name]) == list(want), name
        for k, v in want.items():
            assert _same(got[name][k], v), (name, k, got[name][k], v)


# --------------------------------------------------------------------------------------------
# The worked example of docs/hooked-models.md runs, and is the file it claims to be
# --------------------------------------------------------------------------------------------
EXAMPLE = ROOT / "examples" / "own_model.py"
DOC = ROOT / "docs" / "hooked-models.md"


def test_doc_example_is_the_example_file() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert EXAMPLE.read_text() in blocks


def test_example_runs_with_known_answers(capsys) -> None:
    ns = runpy.run_path(str(EXAMPLE), run_name="__main__")
    res = ns["results"]
    assert ns["key_freqs"] == [ns["K"]]
    assert res["loss"]["test_acc"] == 1.0
    r = res["restricted"]
    assert r["restricted_loss"] == pytest.approx(r["full_loss"], rel=1e-9, abs=1e-12)
    assert r["excluded_loss"] == pytest.approx(math.log(ns["P"]), rel=1e-9)
    assert list(res["collapse"]) == ["n/a"]
    out = capsys.readouterr().out
    assert f"key frequencies: [{ns['K']}]" in out

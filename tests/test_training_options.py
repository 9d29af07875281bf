"""The training options issue 14's reproductions need: the MLP's PyTorch-default initialisation
(``model.init = "torch"``), training at a fixed total weight norm (``train.fixed_weight_norm``,
Omnigrok), and a new run started from another run's checkpoint (``train --from RUN[@EPOCH]``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mechgrok.config import ADDED_FIELDS, MLPConfig, RunConfig
from mechgrok.errors import ConfigError, RunDirError
from mechgrok.models import build_model
from mechgrok.store import MANIFEST_FILE, Run, read_verified
from mechgrok.training import loop, resume, train
from mechgrok.training.norm import rescale_to_norm_, total_norm
from mechgrok.training.vmap import train_seeds
from tests.conftest import assert_one_line_error, cli_here, run_cli, tiny_config, tiny_mlp_config

F64 = {"train.model_dtype": "float64", "train.loss_dtype": "float64"}


def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _norms(path: Path) -> list[float]:
    return [math.sqrt(m["sum_sq_weights"]) for m in Run(path).metrics()]


# --------------------------------------------------------------------------------------------
# model.init
# --------------------------------------------------------------------------------------------
def test_default_init_is_unchanged_bit_for_bit() -> None:
    # recipe: tests/test_training_options.py::_digest of the model mechgrok built before
    # model.init existed (commit 1b4932d), for these two configs
    a = tiny_mlp_config(**{"train.seed": 3})
    b = tiny_mlp_config(**{"model.embed": "onehot", "model.bias": False,
                           "model.hidden": [20, 20], "model.init_scale": 2.0})
    assert isinstance(a.model, MLPConfig) and isinstance(b.model, MLPConfig)
    assert a.model.init == b.model.init == "normal"
    assert _digest(build_model(a)) == "0b3a46d85f8a6e03"
    assert _digest(build_model(b)) == "e1dfc84c4b7facd3"


@pytest.mark.parametrize("over", [
    {"model.hidden": [24, 16]},
    {"model.embed": "onehot", "model.hidden": [20], "model.combine": "sum"},
    {"model.bias": False, "model.init_scale": 3.0},
], ids=["learned", "onehot-sum", "nobias-scaled"])
def test_torch_init_is_what_nn_linear_reset_parameters_draws(over: dict) -> None:
    """Each layer equals ``nn.Linear(d_in, d_out).reset_parameters()`` itself, run on torch's
    global generator put in the state of the model's own generator (transposed: mechgrok
    stores ``(d_in, d_out)``), times ``init_scale``; the embedding is N(0, 1) as before."""
    cfg = tiny_mlp_config(**{"model.init": "torch", "train.seed": 7}, **over)
    mc = cfg.model
    assert isinstance(mc, MLPConfig)
    sd = build_model(cfg).state_dict()
    s = mc.init_scale
    gen = torch.Generator().manual_seed(7)
    if mc.embed == "learned":
        w_e = torch.randn(sd["embed.W_E"].shape, generator=gen, dtype=torch.float64)
        assert torch.equal(sd["embed.W_E"], w_e.float() * s)  # models.base.init_normal_
    layers = [(f"layers.{i}.W", f"layers.{i}.b") for i in range(len(mc.hidden))]
    layers.append(("unembed.W_U", "unembed.b_U"))
    with torch.random.fork_rng(devices=[]):
        refs = [nn.Linear(sd[w].shape[0], sd[w].shape[1], bias=mc.bias, dtype=torch.float64)
                for w, _ in layers]
        torch.random.default_generator.set_state(gen.get_state())
        for (w_name, b_name), ref in zip(layers, refs):
            ref.reset_parameters()  # PyTorch's own code, on the global generator
            assert torch.equal(sd[w_name], (ref.weight.detach().T * s).float()), w_name
            if mc.bias:
                assert torch.equal(sd[b_name], (ref.bias.detach() * s).float()), b_name
            else:
                assert b_name not in sd


def test_torch_init_distribution() -> None:
    cfg = tiny_mlp_config(**{"model.init": "torch", "model.hidden": [400], "model.d_embed": 200})
    sd = build_model(cfg).state_dict()
    for name in ("layers.0.W", "layers.0.b", "unembed.W_U", "unembed.b_U"):
        fan_in = sd[name.replace(".b_U", ".W_U").replace(".b", ".W")].shape[0]
        t, bound = sd[name].double(), 1 / math.sqrt(fan_in)
        assert float(t.abs().max()) <= bound
        if t.numel() > 1000:  # uniform on ±bound: variance bound²/3, the extremes near ±bound
            assert float(t.abs().max()) > 0.99 * bound
            assert float(t.var()) == pytest.approx(bound**2 / 3, rel=0.05)
    assert (sd["layers.0.b"] != 0).all()


def test_init_scale_multiplies_every_parameter_of_both_kinds() -> None:
    for make, extra in ((tiny_mlp_config, {"model.init": "torch"}),
                        (tiny_config, {"model.layernorm": True, "model.unembed_bias": True})):
        one = build_model(make(**extra)).state_dict()
        two = build_model(make(**extra, **{"model.init_scale": 2.0})).state_dict()
        for k in one:
            if k.endswith(".w"):  # LayerNorm's gain stays 1
                assert (two[k] == 1).all()
            else:
                assert torch.equal(two[k], 2 * one[k]), k


def test_init_setting_checked_and_transformer_has_none(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    with pytest.raises(ConfigError, match="model.init must be"):
        tiny_mlp_config(**{"model.init": "xavier"})
    with pytest.raises(ConfigError, match="unknown setting model.init"):
        tiny_config(**{"model.init": "torch"})
    assert_one_line_error(cli_here(capsys, "train", "--init", "torch"), "model.init")


def test_saved_configs_without_the_new_fields_load_with_their_ids(tmp_path: Path) -> None:
    for cfg in (tiny_mlp_config(), tiny_config()):
        saved = cfg.to_dict()
        assert ADDED_FIELDS["model"] == {"init": "normal"}
        assert {"fixed_weight_norm": False, "weight_norm_target": None}.items() <= \
            ADDED_FIELDS["train"].items()
        for section, added in ADDED_FIELDS.items():  # what a run saved before them holds
            for k in added:
                saved[section].pop(k, None)
        loaded = RunConfig.from_saved(saved)
        assert loaded == cfg
        body = {k: v for k, v in saved.items() if k != "preset"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
        assert loaded.run_id().endswith(digest)  # the id such a run was given before
    base = tiny_mlp_config()
    # unused, they are not written: config.json is what it was before they existed
    assert "init" not in base.to_dict()["model"]
    assert not {"fixed_weight_norm", "weight_norm_target"} & set(base.to_dict()["train"])
    for over in ({"model.init": "torch"}, {"train.fixed_weight_norm": True},
                 {"train.fixed_weight_norm": True, "train.weight_norm_target": 3.0}):
        used = tiny_mlp_config(**over)
        assert used.run_id() != base.run_id()
        assert RunConfig.from_saved(json.loads(used.to_json())) == used
        for k, v in over.items():
            section, _, name = k.partition(".")
            assert used.to_dict()[section][name] == v


# --------------------------------------------------------------------------------------------
# train.fixed_weight_norm
# --------------------------------------------------------------------------------------------
def test_rescale_to_norm_single_and_stacked() -> None:
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(7, generator=g,
                                                                             dtype=torch.float64)]
    rescale_to_norm_(ps, 2.5)
    assert total_norm(ps) == pytest.approx(2.5, rel=1e-14)
    stacked = [torch.randn(3, 5, 3, generator=g), torch.randn(3, 7, generator=g)]
    before = [p.clone() for p in stacked]
    target = torch.tensor([1.0, 2.0, 30.0], dtype=torch.float64)
    rescale_to_norm_(stacked, target)
    for k in range(3):
        assert total_norm(p[k] for p in stacked) == pytest.approx(float(target[k]), rel=1e-6)
        ratio = stacked[0][k] / before[0][k]  # one factor per seed: the direction is kept
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-6)
    zero = [torch.zeros(3)]
    rescale_to_norm_(zero, 1.0)
    assert (zero[0] == 0).all()


def test_settings_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="set train.fixed_weight_norm"):
        tiny_config(**{"train.weight_norm_target": 3.0})
    with pytest.raises(ConfigError, match="weight_norm_target must be a positive"):
        tiny_config(**{"train.fixed_weight_norm": True, "train.weight_norm_target": -1.0})
    assert_one_line_error(cli_here(capsys, "train", "--weight-norm-target", "3"),
                          "fixed_weight_norm")


@pytest.mark.parametrize("make,over", [
    (tiny_config, {}),
    (tiny_mlp_config, {"train.batch_size": 8, "model.init_scale": 3.0, "train.weight_decay": 0.0}),
], ids=["transformer", "mlp-minibatch-scaled"])
def test_every_step_at_the_initial_norm_and_loss_falls(make, over: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import mechgrok.training.single as single

    cfg = make(**{"train.fixed_weight_norm": True, "train.epochs": 40, "train.eval_every": 1},
               **over)
    after_step: list[float] = []
    real = single.rescale_to_norm_

    def spy(params, target):
        real(params, target)
        after_step.append(total_norm(params))

    monkeypatch.setattr(single, "rescale_to_norm_", spy)
    train(cfg, tmp_path / "r", progress=False)
    init = total_norm(build_model(cfg).parameters())
    steps = Run(tmp_path / "r").metrics()[-1]["step"]
    assert len(after_step) == steps >= 40  # every step of every epoch
    assert all(abs(n / init - 1) < 1e-6 for n in after_step)
    norms = _norms(tmp_path / "r")
    assert norms[0] == pytest.approx(init, rel=1e-12)  # epoch 0: the initialisation itself
    assert all(abs(n / init - 1) < 1e-6 for n in norms)
    losses = [m["train_loss"] for m in Run(tmp_path / "r").metrics()]
    assert losses[-1] < 0.9 * losses[0]
    free = make(**{"train.epochs": 40, "train.eval_every": 1}, **over)
    train(free, tmp_path / "free", progress=False)
    assert abs(_norms(tmp_path / "free")[-1] / init - 1) > 1e-3  # the constraint did something


def test_a_given_target_norm(tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.fixed_weight_norm": True, "train.weight_norm_target": 7.5,
                         "train.epochs": 20, "train.eval_every": 1})
    train(cfg, tmp_path / "r", progress=False)
    norms = _norms(tmp_path / "r")
    assert norms[0] != pytest.approx(7.5, rel=1e-3)  # epoch 0 is not rescaled
    assert all(abs(n / 7.5 - 1) < 1e-6 for n in norms[1:])


def test_vmapped_seeds_equal_separate_runs(tmp_path: Path) -> None:
    cfg = tiny_mlp_config(**F64, **{"train.fixed_weight_norm": True, "train.epochs": 30,
                                    "train.batch_size": 16, "train.eval_every": 1})
    paths = [tmp_path / "vm0", tmp_path / "vm1"]
    train_seeds(cfg, [0, 1], paths, progress=False)
    for s, p in zip((0, 1), paths):
        sep = tmp_path / f"sep{s}"
        train(dataclasses.replace(cfg, train=cfg.train.replace(seed=s)), sep, progress=False)
        init = _norms(sep)[0]
        assert all(abs(n / init - 1) < 1e-12 for n in _norms(p))
        ra, rb = Run(p), Run(sep)
        for ca, cb in zip(ra.checkpoints(), rb.checkpoints(), strict=True):
            a, b = ra.load_state(ca), rb.load_state(cb)
            assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-9


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, n: int, module: str = "single") -> None:
    """Make the n-th optimiser step of the single (or the vmapped) trainer raise
    KeyboardInterrupt, as Ctrl-C would."""
    import mechgrok.training.single as single
    import mechgrok.training.vmap as vmap

    where = single if module == "single" else vmap
    calls = {"n": 0}
    real = where.set_lr

    def set_lr(opt, lr):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt
        real(opt, lr)

    monkeypatch.setattr(where, "set_lr", set_lr)


def test_resume_keeps_the_norm_bit_identical(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(**{"train.fixed_weight_norm": True, "train.epochs": 40,
                         "model.init_scale": 2.0})
    train(cfg, tmp_path / "ref", progress=False)
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 25)
        with pytest.raises(loop.TrainingInterrupted):
            train(cfg, tmp_path / "r", progress=False)
    resume(tmp_path / "r", progress=False)
    a, b = Run(tmp_path / "r").load_state(), Run(tmp_path / "ref").load_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vmapped_resume_keeps_each_seeds_norm_bit_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(**{"train.fixed_weight_norm": True, "train.epochs": 30})
    ref = [tmp_path / "ref0", tmp_path / "ref1"]
    train_seeds(cfg, [0, 1], ref, progress=False)
    paths = [tmp_path / "r0", tmp_path / "r1"]
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 15, "vmap")
        with pytest.raises(loop.TrainingInterrupted):
            train_seeds(cfg, [0, 1], paths, progress=False)
    train_seeds(cfg, [0, 1], paths, progress=False)
    for p, r in zip(paths, ref):
        a, b = Run(p).load_state(), Run(r).load_state()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert _norms(ref[0])[0] != pytest.approx(_norms(ref[1])[0], rel=1e-3)  # its own target
    for r in ref:
        assert all(abs(n / _norms(r)[0] - 1) < 1e-6 for n in _norms(r))


# --------------------------------------------------------------------------------------------
# train --from RUN[@EPOCH]
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parent") / "par"
    train(tiny_config(**{"train.epochs": 40}), path, progress=False)
    return path


def _optim_steps(path: Path) -> set[float]:
    r = json.loads((path / MANIFEST_FILE).read_text())["resume"]
    tensors, _ = read_verified(path / r["file"], r["size"], r["sha256"])
    return {float(v) for k, v in tensors.items() if k.endswith(".step")}


@pytest.mark.parametrize("epoch", [20, None], ids=["epoch-20", "last"])
def test_from_starts_at_the_parents_checkpoint(parent: Path, epoch: int | None,
                                               tmp_path: Path) -> None:
    cfg = tiny_config(**{"task.frac_train": 0.3, "task.data_seed": 4, "train.epochs": 10})
    train(cfg, tmp_path / "child", progress=False, from_run=parent, from_epoch=epoch)
    child, par = Run(tmp_path / "child"), Run(parent)
    ck = par.checkpoint(epoch)
    want, got = par.load_state(ck), child.load_state(0)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert child.parent == {"run_id": "par", "path": str(parent.resolve()), "epoch": ck.epoch,
                            "step": ck.step, "sha256": ck.sha256, "precision": "exact"}
    assert child.config == cfg and child.dataset().split_sha256() != par.dataset().split_sha256()
    assert _optim_steps(tmp_path / "child") == {10.0}  # a fresh optimiser: 10 steps, not 50
    assert Run(parent).parent is None  # a run trained from its initialisation names none


def test_from_with_a_fixed_norm_holds_the_parents_norm_and_resumes(
        parent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(**{"task.frac_train": 0.3, "train.epochs": 30,
                         "train.fixed_weight_norm": True, "train.freeze_biases": False})
    train(cfg, tmp_path / "ref", progress=False, from_run=parent)
    start = total_norm(Run(parent).load_state().values())
    assert all(abs(n / start - 1) < 1e-6 for n in _norms(tmp_path / "ref"))
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 15)
        with pytest.raises(loop.TrainingInterrupted):
            train(cfg, tmp_path / "r", progress=False, from_run=parent)
    resume(tmp_path / "r", progress=False)
    a, b = Run(tmp_path / "r").load_state(), Run(tmp_path / "ref").load_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_from_refusals_in_python(parent: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no checkpoint at epoch 7"):
        train(tiny_config(), tmp_path / "c", from_run=parent, from_epoch=7)
    with pytest.raises(ConfigError, match=r"task\.p 11 → 13.*model\.d_mlp 32 → 64"):
        train(tiny_config(**{"task.p": 13, "model.d_mlp": 64}), tmp_path / "c", from_run=parent)
    with pytest.raises(ConfigError, match="model.kind transformer → mlp"):
        train(tiny_mlp_config(), tmp_path / "c", from_run=parent)
    with pytest.raises(ConfigError, match="give from_run"):
        train(tiny_config(), tmp_path / "c", from_epoch=3)
    assert not (tmp_path / "c").exists()  # nothing created


def test_from_on_the_command_line(parent: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "runs")
    proc = cli_here(capsys, "train", "--from", f"{parent}@20", "--frac-train", "0.3",
                    "--epochs", "10", "--out-dir", out, "--name", "child", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "started from run par at epoch 20" in proc.stdout and "fresh optimiser" in proc.stdout
    child = Run(tmp_path / "runs" / "child")
    assert child.parent is not None and child.parent["epoch"] == 20
    par_cfg = Run(parent).config  # the parent's config under the command line's settings
    assert child.config.task.frac_train == 0.3 and child.config.train.epochs == 10
    assert child.config.model == par_cfg.model and child.config.train.lr == par_cfg.train.lr
    # the default name says where the run started
    proc = cli_here(capsys, "train", "--from", str(parent), "--epochs", "5", "--out-dir", out,
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    sha = Run(parent).checkpoint().sha256[:8]
    assert any(p.name.endswith(f"-from-e40-{sha}") for p in (tmp_path / "runs").iterdir())


@pytest.mark.parametrize("args,needles", [
    (["--from", "nope"], ["not found"]),
    (["--from", "{parent}@7"], ["no checkpoint at epoch 7"]),
    (["--from", "{parent}@x"], ["RUN@EPOCH"]),
    (["--from", "{parent}", "--p", "13", "--d-mlp", "64"], ["task.p 11 → 13", "model.d_mlp"]),
    (["--from", "{parent}", "--preset", "nanda"], ["drop --preset"]),
    (["--from", "{parent}", "--resume", "{parent}"], ["drop --resume"]),
    (["--from", "{parent}", "--name", "par", "--overwrite"], ["choose another --name"]),
], ids=["unknown-run", "no-checkpoint", "bad-epoch", "shapes", "preset", "resume", "itself"])
def test_from_refusals_are_one_line(args: list[str], needles: list[str], parent: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(parent=parent) for a in args]
    proc = cli_here(capsys, "train", *argv, "--out-dir", str(parent.parent), "--no-progress")
    assert_one_line_error(proc, *needles)
    assert Run(parent).status == "finished"  # the parent is untouched


def test_from_refusal_in_a_real_process(parent: Path) -> None:
    proc = run_cli("train", "--from", f"{parent}@7", "--no-progress")
    assert_one_line_error(proc, "no checkpoint at epoch 7")


def test_a_damaged_parent_record_is_one_line(parent: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    train(tiny_config(**{"train.epochs": 5}), tmp_path / "c", progress=False, from_run=parent)
    man = json.loads((tmp_path / "c" / MANIFEST_FILE).read_text())
    man["parent"]["sha256"] = "not a hash"
    (tmp_path / "c" / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(RunDirError, match="parent sha256"):
        Run(tmp_path / "c")
    assert_one_line_error(cli_here(capsys, "train", "--resume", str(tmp_path / "c")),
                          "parent sha256")

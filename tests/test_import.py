"""``mechgrok import`` and ``mechgrok export``: other tools' checkpoints in, TransformerLens out.

The TransformerLens 3.x fixture (``tests/fixtures/tl3/``) was written by TransformerLens 3.9's own
``HookedTransformer`` (its script is beside it); TransformerLens 4 (this project's) loads what
``mechgrok export`` writes through its own ``boot_native`` and ``convert_tl_checkpoint``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mechgrok.analysis import analyze, measures_table
from mechgrok.interop.transformer_lens import load_bridge
from mechgrok.store import IMPORT_FILE, Run
from mechgrok.training import train
from tests.conftest import (
    ROOT,
    assert_one_line_error,
    cli_here,
    run_cli,
    tiny_config,
    tiny_mlp_config,
)

TL3 = ROOT / "tests" / "fixtures" / "tl3"
MLP_MAPPING = ROOT / "examples" / "mlp_mapping.toml"
P = 11


def all_tokens(p: int) -> torch.Tensor:
    return torch.tensor([[x, y, p] for x in range(p) for y in range(p)])


def _nothing_written(out: Path) -> None:
    left = [f.name for f in out.iterdir()] if out.exists() else []
    assert left == [], left


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformer run with LayerNorm and GELU (every mapping path is exercised)."""
    path = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(**{"model.layernorm": True, "model.act": "gelu",
                         "model.unembed_bias": True, "train.epochs": 30}), path, progress=False)
    return path


# --------------------------------------------------------------------------------------------
# export → TransformerLens 4, and back
# --------------------------------------------------------------------------------------------
def test_export_loads_in_transformer_lens_with_equal_logits(trained: Path, tmp_path: Path) -> None:
    r = run_cli("export", str(trained), "--to", "transformer-lens", str(tmp_path / "tl"))
    assert r.returncode == 0, r.stderr
    from transformer_lens.model_bridge import TransformerBridge

    bridge = load_bridge(tmp_path / "tl")
    assert isinstance(bridge, TransformerBridge)
    model = Run(trained).load_model()
    tokens = all_tokens(P)
    with torch.no_grad():
        ours = model(tokens)[:, -1]
        theirs = bridge(tokens)[:, -1]
        _, cache = bridge.run_with_cache(tokens)
    assert theirs.shape == ours.shape == (P * P, P)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert "blocks.0.mlp.hook_post" in cache  # TransformerLens's own hooks on the exported model
    assert json.loads((tmp_path / "tl" / "config.json").read_text())["d_vocab_out"] == P


def test_export_refuses_what_transformer_lens_cannot_compute(trained: Path, tmp_path: Path
                                                             ) -> None:
    pizza = tmp_path / "pizza"
    train(tiny_config(**{"model.attn_alpha": 0.0, "train.epochs": 5}), pizza, progress=False)
    r = run_cli("export", str(pizza), "--to", "transformer-lens", str(tmp_path / "out"))
    assert_one_line_error(r, "α = 0", "TransformerLens")
    mlp = tmp_path / "mlp"
    train(tiny_mlp_config(**{"train.epochs": 5}), mlp, progress=False)
    r = run_cli("export", str(mlp), "--to", "transformer-lens", str(tmp_path / "out"))
    assert_one_line_error(r, "MLP", "TransformerLens")
    assert not (tmp_path / "out").exists()
    r = run_cli("export", str(trained), "--to", "transformer-lens", str(pizza))  # exists
    assert_one_line_error(r, "already exists")


def test_round_trip_analyses_to_the_same_measures(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "orig"
    shutil.copytree(trained, run)
    analyze(run, ["loss", "key_freqs", "restricted", "gini"], progress=False)
    assert run_cli("export", str(run), "--to", "transformer-lens", str(tmp_path / "tl")
                   ).returncode == 0
    r = run_cli("import", str(tmp_path / "tl"), "--as", "back", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "split.safetensors beside the weights" in r.stdout
    back = Run(tmp_path / "back")
    orig = Run(run)
    # the same weights, byte for byte, so the same checkpoint hash
    assert back.checkpoint().sha256 == orig.checkpoint().sha256
    assert back.config.task == orig.config.task and back.config.model == orig.config.model
    assert back.dataset().split_sha256() == orig.dataset().split_sha256()
    analyze(back, ["loss", "key_freqs", "restricted", "gini"], progress=False)
    last = orig.checkpoint().epoch
    a = [r for r in measures_table(run) if r["epoch"] == last]
    b = measures_table(back)
    assert len(a) == len(b) == 1
    keys = [k for k in a[0] if "." in k]
    assert keys and all(a[0][k] == b[0][k] or (a[0][k] != a[0][k] and b[0][k] != b[0][k])
                        for k in keys), [(k, a[0][k], b[0][k]) for k in keys if a[0][k] != b[0][k]]
    rec = json.loads((back.path / IMPORT_FILE).read_text())
    assert rec["format"] == "tl-state" and rec["source_files"][0]["sha256"]


# --------------------------------------------------------------------------------------------
# a plain PyTorch MLP's folder of state dicts, with the documented mapping file
# --------------------------------------------------------------------------------------------
class OneHotMLP(nn.Module):
    """The kind of network in Prieto et al.'s and the scienceetonnante code: one-hot operands,
    concatenated, one hidden ReLU layer."""

    def __init__(self, p: int, width: int = 32):
        super().__init__()
        self.p = p
        self.net = nn.Sequential(nn.Linear(2 * p, width), nn.ReLU(), nn.Linear(width, p))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        one_hot = torch.cat([nn.functional.one_hot(xy[:, 0], self.p),
                             nn.functional.one_hot(xy[:, 1], self.p)], 1).float()
        return self.net(one_hot)


def _mlp_folder(folder: Path, safetensors: bool = False) -> tuple[OneHotMLP, np.ndarray]:
    """Train the MLP a few epochs on add mod P, saving its state dict every 5 epochs the way a
    user's loop would, plus the split as JSON."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = OneHotMLP(P)
    tokens = all_tokens(P)
    labels = (tokens[:, 0] + tokens[:, 1]) % P
    perm = np.random.default_rng(0).permutation(P * P)
    tr, te = perm[: P * P // 2], perm[P * P // 2:]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1.0)
    folder.mkdir(parents=True)
    for epoch in range(21):
        if epoch % 5 == 0:
            state = {k: v.clone() for k, v in net.state_dict().items()}
            if safetensors:
                save_file(state, str(folder / f"step-{epoch:05d}.safetensors"))
            else:
                torch.save({"model_state_dict": state, "epoch": epoch}, folder / f"epoch_{epoch}.pt")
        if epoch == 20:
            break
        loss = nn.functional.cross_entropy(net(tokens[tr]), labels[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
    (folder / "split.json").write_text(json.dumps({"train": tr.tolist(), "test": te.tolist()}))
    return net, tokens


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_mlp_folder_with_mapping_reproduces_its_logits(tmp_path: Path, fmt: str) -> None:
    net, tokens = _mlp_folder(tmp_path / "src", safetensors=fmt == "safetensors")
    args = ["import", str(tmp_path / "src"), "--as", "mlp", "--out-dir", str(tmp_path / "runs"),
            "--mapping", str(MLP_MAPPING), "--split", str(tmp_path / "src" / "split.json"),
            "--task", "add", "--p", str(P)]
    if fmt == "torch":
        r = run_cli(*args)  # a pickle, without the flag: refused, naming the flag
        assert_one_line_error(r, "--allow-pickle", "pickle")
        _nothing_written(tmp_path / "runs")
        args.append("--allow-pickle")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    run = Run(tmp_path / "runs" / "mlp")
    assert [c.epoch for c in run.checkpoints()] == [0, 5, 10, 15, 20]
    with torch.no_grad():
        torch.testing.assert_close(run.load_model()(tokens), net(tokens[:, :2]), atol=1e-5,
                                   rtol=1e-5)
    split = json.loads((tmp_path / "src" / "split.json").read_text())
    labels = (tokens[:, 0] + tokens[:, 1]) % P
    with torch.no_grad():
        right = (net(tokens[:, :2]).argmax(-1) == labels).double()
    final = run.metrics()[-1]
    assert len(run.metrics()) == 5
    assert final["train_acc"] == pytest.approx(float(right[split["train"]].mean()))
    assert final["test_acc"] == pytest.approx(float(right[split["test"]].mean()))
    res = analyze(run.path, ["loss", "key_freqs"], progress=False)
    assert res.errors == [] if hasattr(res, "errors") else True
    assert any(r.get("key_freqs.n_neurons_rule") is not None for r in measures_table(run.path))


# --------------------------------------------------------------------------------------------
# pickles: only on request, only as data; a hostile one runs nothing
# --------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):  # what a malicious checkpoint does: run a command when unpickled
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "grokking_demo.pth"
    torch.save({"model": _Evil(marker), "checkpoints": [], "checkpoint_epochs": []}, evil)
    out = tmp_path / "runs"
    r = run_cli("import", str(evil), "--as", "x", "--out-dir", str(out))
    assert_one_line_error(r, "--allow-pickle")
    r = run_cli("import", str(evil), "--as", "x", "--out-dir", str(out), "--allow-pickle")
    assert_one_line_error(r, "refused", "weights_only", "system", "nothing in it was run")
    assert not marker.exists()
    _nothing_written(out)


def test_only_import_reads_pickles() -> None:
    """In mechgrok's code, one call unpickles: ``torch.load`` in the importer, with
    ``weights_only=True`` (``pickle``, ``Unpickler``, ``np.load`` and ``torch.load`` appear nowhere
    else: everything but ``mechgrok import --allow-pickle`` reads safetensors and JSON only)."""
    import ast

    calls = []
    for f in sorted((ROOT / "mechgrok").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler",
                            "np.load", "numpy.load") or name.endswith(("Unpickler",
                                                                       "pickle.load")):
                    kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    calls.append((f.relative_to(ROOT).as_posix(), name, kw.get("weights_only")))
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n in ("pickle", "dill", "cloudpickle") for n in names), f
    assert calls == [("mechgrok/interop/importer.py", "torch.load", "True")], calls


# --------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing half-written
# --------------------------------------------------------------------------------------------
def _mlp_state(p: int = P, width: int = 32) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in OneHotMLP(p, width).state_dict().items()}


def test_bad_sources_are_one_line_and_write_nothing(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    out = tmp_path / "runs"
    src = tmp_path / "src"
    src.mkdir()

    def imp(source: Path, *extra: str, real: bool = False) -> subprocess.CompletedProcess:
        """In this process; ``real``: in a real ``python -m mechgrok`` process."""
        args = ("import", str(source), "--as", "bad", "--out-dir", str(out), *extra)
        return run_cli(*args) if real else cli_here(capsys, *args)

    junk = src / "junk.bin"
    junk.write_bytes(os.urandom(256))
    assert_one_line_error(imp(junk, real=True), "cannot tell")
    assert_one_line_error(imp(tmp_path / "absent.pt"), "does not exist")

    mapping = ["--mapping", str(MLP_MAPPING), "--task", "add", "--p", str(P)]
    # missing tensor
    state = _mlp_state()
    del state["net.2.bias"]
    f = src / "missing.safetensors"
    save_file(state, str(f))
    assert_one_line_error(imp(f, *mapping), "net.2.bias")
    # extra tensor
    state = _mlp_state()
    state["net.9.weight"] = torch.zeros(3, 3)
    f = src / "extra.safetensors"
    save_file(state, str(f))
    assert_one_line_error(imp(f, *mapping), "net.9.weight", "neither maps nor ignores")
    # wrong shape (a network of another width than the mapping's model)
    f = src / "wide.safetensors"
    save_file(_mlp_state(width=48), str(f))
    assert_one_line_error(imp(f, *mapping), "layers.0.W", "expected")
    # a mapping naming a parameter that does not exist
    bad_map = tmp_path / "bad.toml"
    bad_map.write_text(MLP_MAPPING.read_text().replace('"net.0.bias"', '"net.0.b1as"'))
    f = src / "ok.safetensors"
    save_file(_mlp_state(), str(f))
    assert_one_line_error(imp(f, "--mapping", str(bad_map), "--task", "add", "--p", str(P)),
                          "net.0.b1as")
    # indices that do not match the task's size
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": list(range(50)), "test": list(range(50, 100))}))
    assert_one_line_error(imp(f, *mapping, "--split", str(split)), "121 pairs", "50 train + 50 test")
    # a model whose classes do not fit the task
    assert_one_line_error(imp(f, "--mapping", str(MLP_MAPPING), "--task", "add", "--p", "13"),
                          "expected")
    _nothing_written(out)
    # and an existing run is never replaced without --overwrite
    assert imp(f, *mapping).returncode == 0
    assert_one_line_error(imp(f, *mapping, real=True), "already exists", "--overwrite")
    assert imp(f, *mapping, "--overwrite").returncode == 0


# --------------------------------------------------------------------------------------------
# files TransformerLens 3.9 wrote itself (tests/fixtures/tl3/make_fixture.py)
# --------------------------------------------------------------------------------------------
P_TL = 23


def _tl_logits(name: str, key: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(TL3 / name))[key]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tl3")
    r = run_cli("import", str(TL3 / "demo.pth"), "--as", "demo", "--out-dir", str(out),
                "--allow-pickle")
    assert r.returncode == 0, r.stderr
    return out / "demo", r.stdout


def test_grokking_demo_file_reproduces_transformer_lens_logits(demo_run: tuple[Path, str]
                                                               ) -> None:
    path, stdout = demo_run
    assert "(tl-demo)" in stdout and "train_indices and test_indices" in stdout
    assert "assumed add" in stdout
    run = Run(path)
    tokens = _tl_logits("logits.safetensors", "tokens")
    # the demo's epochs 19, 39, …, 399 are the models after 20, 40, …, 400 steps
    assert [c.epoch for c in run.checkpoints()] == list(range(20, 401, 20))
    for key, epoch in (("ckpt_0", 20), ("ckpt_10", 220), ("final", 400)):
        with torch.no_grad():
            ours = run.load_model(epoch)(tokens)[:, -1]
        torch.testing.assert_close(ours, _tl_logits("logits.safetensors", key), atol=2e-5,
                                   rtol=1e-5)
    # the split is the file's own (the demo's randperm, data seed 598)
    from mechgrok.interop.importer import load_torch_file

    demo = load_torch_file(TL3 / "demo.pth", allow_pickle=True)
    train_idx, test_idx = run.split()
    assert train_idx.tolist() == sorted(demo["train_indices"].tolist())
    assert test_idx.tolist() == sorted(demo["test_indices"].tolist())
    assert run.config.task.name == "add" and run.config.task.p == P_TL
    # mechgrok's own evaluation of the last checkpoint: the model memorised (README's numbers)
    final = run.metrics()[-1]
    assert final["train_acc"] == 1.0 and final["test_acc"] == pytest.approx(0.0377, abs=1e-3)
    rec = json.loads((path / IMPORT_FILE).read_text())
    assert rec["source_losses"]["train_losses"] == demo["train_losses"]
    assert rec["source_config"]["d_model"] == 32 and rec["source_files"][0]["file"] == "demo.pth"


def test_imported_demo_analyses_and_reports(demo_run: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = demo_run
    run = tmp_path / "demo"
    shutil.copytree(path, run)
    r = run_cli("analyze", str(run), "--probe", "loss", "--probe", "key_freqs", "--probe",
                "restricted", "--probe", "gini")
    assert r.returncode == 0, r.stderr
    table = measures_table(run)
    assert len(table) == 20
    assert all(t["loss.train_acc"] == m["train_acc"] for t, m in zip(table, Run(run).metrics()))
    out = tmp_path / "demo.html"
    r = run_cli("report", str(run), "--out", str(out))
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "imported from" in html and "demo.pth (tl-demo" in html
    assert "training settings are not recorded" in html and "train_indices" in html
    assert "optimiser" not in html.split("imported from")[0].rsplit("<table", 1)[-1]
    # compare reads an imported run beside a trained one
    r = run_cli("compare", str(run), str(path), "--out", str(tmp_path / "cmp.html"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("weights", ["hooked_final.safetensors", "hooked_final.pt"])
def test_hooked_transformer_state_dict(tmp_path: Path, weights: str) -> None:
    """Format 2: a HookedTransformer state dict with its config JSON beside it (the .pt file has
    no JSON of its own name, so its config is given with --tl-config)."""
    args = ["import", str(TL3 / weights), "--as", "hooked", "--out-dir", str(tmp_path),
            "--task", "add"]
    if weights.endswith(".pt"):
        args += ["--allow-pickle", "--tl-config", str(TL3 / "hooked_final.json")]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "the source has no indices" in r.stdout  # said, since there is no split to read
    with torch.no_grad():
        ours = Run(tmp_path / "hooked").load_model()(_tl_logits("logits.safetensors", "tokens"))
    torch.testing.assert_close(ours[:, -1], _tl_logits("logits.safetensors", "final"),
                               atol=2e-5, rtol=1e-5)


def test_layernorm_gelu_model_with_unembed_bias(tmp_path: Path) -> None:
    r = run_cli("import", str(TL3 / "ln_gelu.safetensors"), "--as", "ln", "--out-dir",
                str(tmp_path), "--task", "add", "--p", str(P_TL))
    assert r.returncode == 0, r.stderr
    run = Run(tmp_path / "ln")
    m = run.config.model
    assert (m.layernorm, m.act, m.unembed_bias, m.n_layers) == (True, "gelu", True, 2)
    with torch.no_grad():
        ours = run.load_model()(_tl_logits("logits.safetensors", "tokens"))[:, -1]
    torch.testing.assert_close(ours, _tl_logits("ln_gelu_logits.safetensors", "logits"),
                               atol=2e-5, rtol=1e-5)


def test_what_mechgrok_cannot_compute_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(TL3 / "hooked_final.safetensors"))
    cfg = json.loads((TL3 / "hooked_final.json").read_text())
    src = tmp_path / "src"
    src.mkdir()

    def imp(st: dict, c: dict, *extra: str, real: bool = False) -> subprocess.CompletedProcess:
        """In this process; ``real``: in a real ``python -m mechgrok`` process."""
        save_file(st, str(src / "m.safetensors"))
        (src / "m.json").write_text(json.dumps(c))
        args = ("import", str(src / "m.safetensors"), "--as", "x", "--out-dir",
                str(tmp_path / "runs"), *extra)
        return run_cli(*args) if real else cli_here(capsys, *args)

    biased = dict(state)
    biased["blocks.0.attn.b_Q"] = torch.ones_like(state["blocks.0.attn.b_Q"])
    assert_one_line_error(imp(biased, cfg, real=True), "b_Q", "attention biases")
    assert_one_line_error(imp(state, {**cfg, "act_fn": "solu_ln"}), "solu_ln")
    assert_one_line_error(imp(state, {**cfg, "positional_embedding_type": "rotary"}), "rotary")
    assert_one_line_error(imp(state, cfg, "--task", "add", "--p", "29"), "23 classes")
    wrong = dict(state)
    wrong["blocks.0.mlp.W_in"] = torch.zeros(32, 65)
    assert_one_line_error(imp(wrong, cfg), "W_in")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

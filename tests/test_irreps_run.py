"""The irreps probe end to end on a trained S5 run: analyze fills it (and says n/a, with the
reason, for the Fourier probes), the summary carries its self-description and headline, the CLI
prints it, and the report draws its figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mechgrok.measures import irreps
from tests.conftest import cli_here, tiny_mlp_config


@pytest.fixture(scope="module")
def s5_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mechgrok.training import train

    path = tmp_path_factory.mktemp("s5") / "run"
    cfg = tiny_mlp_config(**{"task.name": "s5", "task.p": None, "train.epochs": 120,
                             "train.checkpoint_every": 40, "train.eval_every": 20})
    train(cfg, path, progress=False)
    return path


def test_analyze_reads_s5_in_its_irreps(s5_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli_here(capsys, "analyze", str(s5_run))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((s5_run / "analysis" / "summary.json").read_text())
    kf = summary["key_frequencies"]
    assert kf["epoch"] == 120 and isinstance(kf["irreps"], list)
    names = [r.name for r in irreps("S5")]
    assert set(kf["irreps"]) <= set(names[1:])  # never the trivial irrep: its similarity is 0
    s = summary["probes"]["irreps"]
    assert s["group"] == "S5" and s["rule"] == "xy" and list(s["irreps"]) == names
    assert s["final_key"] == [n for n in names if n in kf["irreps"]]
    assert s["irreps"]["(4,1)"]["alias"] == "standard" and s["irreps"]["(4,1)"]["dim"] == 4
    sims = np.array([s["irreps"][n]["similarity"] for n in names])
    assert np.square(sims).sum() == pytest.approx(s["logits_explained"], rel=1e-9)
    if kf["irreps"]:
        assert s["headline"].startswith("key irreps of S5 at epoch 120: ")
    else:  # no circuit formed: the losses are not defined, the rest is measured
        assert s["headline"] == "no key irreps in S5 at epoch 120"
        assert s["restricted_loss"] is None and s["excluded_loss"] is None
    out = proc.stdout
    assert "key irreps at epoch 120 (logit similarity > 0.005): [" in out
    assert f"irreps: {s['headline']}" in out
    assert "n/a: fourier_embed, key_freqs, restricted, gini, clock_pizza: Fourier analysis " \
           "over Z_p does not apply to s5" in out


def test_report_and_compare_show_the_irreps(s5_run: Path, tmp_path: Path) -> None:
    from mechgrok.report import write_comparison, write_report
    from mechgrok.report.figures import NoData, irrep_losses, irrep_similarity, irrep_variance

    for fn in (irrep_similarity, irrep_variance):
        fig = fn(s5_run)
        assert len(fig.data) >= 3, fn.__name__
    s = json.loads((s5_run / "analysis" / "summary.json").read_text())["probes"]["irreps"]
    if s["final_key"]:
        assert len(irrep_losses(s5_run).data) == 4  # train, test, restricted, excluded
    else:
        with pytest.raises(NoData, match="no key irreps"):
            irrep_losses(s5_run)
    html = write_report(s5_run, out=tmp_path / "r.html").read_text()
    for fid in ("irrep_similarity", "irrep_losses", "irrep_variance"):
        assert f'id="fig-{fid}"' in html or f'id="missing-{fid}"' in html, fid
    assert "key irreps of S5" in html or "no key irreps in S5" in html
    comp = write_comparison([s5_run], tmp_path / "c.html").read_text()
    assert "<th>irreps</th>" in comp and "key irreps" in comp

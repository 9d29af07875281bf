"""Import throughput: ``mechgrok import`` of a grokking-demo file with 250 checkpoints.

The source is a file in the layout of TransformerLens's Grokking_Demo notebook (``model``,
``config``, ``checkpoints``, ``checkpoint_epochs``, ``train_losses``, ``test_losses``,
``train_indices``, ``test_indices``), written by ``torch.save`` at the demo's own sizes: add mod
113, a one-layer transformer with d_model 128, 4 heads, d_mlp 512 (the demo's 25,000 epochs with a
checkpoint every 100 → 250 checkpoints). The weights are those of a randomly initialised model,
perturbed per checkpoint (the import's cost does not depend on what the weights learned); the
config is a plain dict of ``HookedTransformerConfig`` fields (a file from TransformerLens itself
holds the config object; ``tests/test_import.py`` imports such a file, written by TransformerLens
3.9).

Reported: the source file's size, the import's wall time (read with ``torch.load(weights_only=
True)``, convert and check 250 state dicts, evaluate each checkpoint on all 12,769 pairs, write and
hash 250 safetensors files), and the size of the run directory. Last line: one JSON object.

    python benchmarks/import_demo.py [--checkpoints 250] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from mechgrok.config import resolve_config
from mechgrok.interop.importer import import_run
from mechgrok.interop.transformer_lens import export_config, state_to_tl
from mechgrok.models import build_model


def make_demo_file(path: Path, n_checkpoints: int, p: int = 113) -> None:
    cfg = resolve_config("nanda", overrides={"task.p": p})
    model = build_model(cfg)
    base = state_to_tl(model.state_dict(), cfg.model)
    gen = torch.Generator().manual_seed(0)
    checkpoints = []
    for i in range(n_checkpoints):
        checkpoints.append({k: (v + 1e-3 * i * torch.randn(v.shape, generator=gen)
                                if k.endswith(("W_E", "W_in", "W_U")) else v.clone())
                            for k, v in base.items()})
    epochs = [100 * (i + 1) - 1 for i in range(n_checkpoints)]
    n_epochs = epochs[-1] + 1
    perm = torch.randperm(p * p, generator=gen)
    cut = int(p * p * 0.3)
    torch.save({
        "model": checkpoints[-1], "config": export_config(cfg), "checkpoints": checkpoints,
        "checkpoint_epochs": epochs, "train_losses": [1.0] * n_epochs,
        "test_losses": [1.0] * n_epochs, "train_indices": perm[:cut], "test_indices": perm[cut:],
    }, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mechgrok-import-bench-"))
    try:
        src = tmp / "grokking_demo.pth"
        t0 = time.perf_counter()
        make_demo_file(src, args.checkpoints)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = import_run(src, tmp / "runs", "demo", allow_pickle=True)
        seconds = time.perf_counter() - t0
        src_mb = src.stat().st_size / 1e6
        run_mb = res.run_bytes / 1e6
        print(f"source: {src_mb:.1f} MB, {args.checkpoints} checkpoints (written in {made:.1f} s)")
        print(f"import: {seconds:.1f} s ({seconds / args.checkpoints * 1000:.0f} ms per "
              f"checkpoint), threads {args.threads}")
        print(f"run directory: {run_mb:.1f} MB ({run_mb / src_mb:.2f}× the source)")
        print(json.dumps({"checkpoints": args.checkpoints, "import_s": round(seconds, 2),
                          "source_mb": round(src_mb, 2), "run_mb": round(run_mb, 2),
                          "ratio": round(run_mb / src_mb, 3), "threads": args.threads}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Seeds per process: ``train_seeds`` (K seeds as one vmapped model) vs K separate runs.

What it measures (default preset ``quick``: add mod 53, 40 % train = 1124 examples, full batch,
one-layer transformer d_model 64, 4 heads × d_head 16, d_mlp 256, AdamW, float64 loss; the
preset's epochs replaced by ``--epochs``, default 200):

(a) **end to end, CPU**: for each K in ``--ks`` (default 1, 4, 16), the wall time of
    :func:`mechgrok.training.vmap.train_seeds` on seeds 0 … K − 1, and the wall time of the
    baseline, K separate runs with :func:`mechgrok.training.loop.train` one after another, each
    into a temporary directory with ``progress=False``. Both include everything a real run does:
    evaluations (every ``eval_every`` epochs, train and test sets), checkpoints with their fsyncs,
    metrics. The figure is **per-seed epochs per second** = K · epochs / wall seconds, and the
    speed-up is separate wall / vmapped wall. The K = 1 row compares a one-seed batched model
    with a plain run: vmap's own overhead.
(b) **pure step loop on a GPU** (``--device``, default ``auto``: CUDA when available): the
    full-batch training step alone (vmapped forward + backward + one fused AdamW over the
    stacked parameters, no evaluations, no checkpoints) for each K, against K separate models,
    each with its own AdamW, stepped one after another; warmed up, then ``--step-epochs``
    epochs timed with device synchronisation. ``--device cpu`` runs it on the CPU instead;
    ``--device none`` skips it. Without a GPU (and with ``auto``) one line says it was skipped and
    the JSON has ``"gpu": null``.

Threads: ``--threads`` (default 1) is set with ``torch.set_num_threads`` and as the runs'
``train.threads``, so the baseline and the batched model use the same number of cores. On a
machine shared with other work the wall times are noisy; the load average is recorded at the
start and the end, and ``cpu_utilisation`` (process CPU time / (wall time × threads)) well below 1
means other processes took CPU.

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.config import RunConfig, resolve_config
from mechgrok.models import build_model
from mechgrok.tasks import make_dataset
from mechgrok.training import loop
from mechgrok.training.losses import loss_function
from mechgrok.training.optim import lr_at, make_optimizer, set_lr
from mechgrok.training.stacked import FastPath
from mechgrok.training.vmap import train_seeds


def _seed(cfg: RunConfig, s: int) -> RunConfig:
    return dataclasses.replace(cfg, train=cfg.train.replace(seed=s))


def _timed(fn: Any) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


# --------------------------------------------------------------------------------------------
# (a) end to end
# --------------------------------------------------------------------------------------------
def end_to_end(cfg: RunConfig, k: int, threads: int) -> dict[str, Any]:
    seeds = list(range(k))
    epochs = cfg.train.epochs
    with tempfile.TemporaryDirectory(prefix="mechgrok-seeds-") as tmp:
        root = Path(tmp)

        def vmapped() -> None:
            res = train_seeds(cfg, seeds, [root / f"vmap{s}" for s in seeds], progress=False)
            assert all(r.epochs == epochs for r in res), [r.status for r in res]

        def separate() -> None:
            for s in seeds:
                loop.train(_seed(cfg, s), root / f"sep{s}", progress=False)

        v_wall, v_cpu = _timed(vmapped)
        s_wall, s_cpu = _timed(separate)
    return {
        "k": k,
        "vmap_wall_s": v_wall,
        "separate_wall_s": s_wall,
        "vmap_epochs_per_s_per_seed": k * epochs / v_wall,
        "separate_epochs_per_s_per_seed": k * epochs / s_wall,
        "speedup": s_wall / v_wall,
        "vmap_cpu_utilisation": v_cpu / (v_wall * threads),
        "separate_cpu_utilisation": s_cpu / (s_wall * threads),
    }


# --------------------------------------------------------------------------------------------
# (b) pure step loop on a device
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_loop(cfg: RunConfig, k: int, device: torch.device, epochs: int,
              warmup: int) -> dict[str, Any]:
    """Full-batch steps per second: K seeds vmapped vs K separate models, on ``device``."""
    from torch.func import functional_call, stack_module_state, vmap

    tc = cfg.train
    data = make_dataset(cfg.task.name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
    t = loop.dataset_tensors(data)
    x, y = t["train_x"].to(device), t["train_y"].to(device)
    loss_fn = loss_function(tc)

    # batched
    models = [build_model(_seed(cfg, s)).to(device) for s in range(k)]
    stacked, _ = stack_module_state(models)  # type: ignore[arg-type]
    fast = FastPath(models[0])
    params = {f"m.{n}": p for n, p in stacked.items()}
    opt = make_optimizer(list(stacked.values()), tc)

    def seed_loss(p: dict[str, torch.Tensor], xx: torch.Tensor,
                  yy: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(fast, p, (xx,)), yy)

    batched_loss = vmap(seed_loss, in_dims=(0, None, None))

    def batched(n: int, step0: int) -> None:
        for i in range(n):
            set_lr(opt, lr_at(step0 + i, tc))
            opt.zero_grad(set_to_none=True)
            batched_loss(params, x, y).sum().backward()
            opt.step()

    # separate
    seps = [build_model(_seed(cfg, s)).to(device) for s in range(k)]
    opts = [make_optimizer(list(m.parameters()), tc) for m in seps]

    def separate(n: int, step0: int) -> None:
        for i in range(n):
            for m, o in zip(seps, opts):
                set_lr(o, lr_at(step0 + i, tc))
                o.zero_grad(set_to_none=True)
                loss_fn(m.forward_last(x), y).backward()
                o.step()

    out: dict[str, Any] = {"k": k}
    for name, fn in (("vmap", batched), ("separate", separate)):
        fn(warmup, 0)
        _sync(device)
        t0 = time.perf_counter()
        fn(epochs, warmup)
        _sync(device)
        wall = time.perf_counter() - t0
        out[f"{name}_epochs_per_s_per_seed"] = k * epochs / wall
    out["speedup"] = out["vmap_epochs_per_s_per_seed"] / out["separate_epochs_per_s_per_seed"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="quick", help="preset to train (default quick)")
    ap.add_argument("--epochs", type=int, default=200,
                    help="epochs per run, replacing the preset's (default 200)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="any config field on top of the preset, e.g. --set task.p=23 "
                         "--set model.d_model=32 (a value is read as TOML)")
    ap.add_argument("--ks", default="1,4,16",
                    help="comma-separated numbers of seeds per batch (default 1,4,16)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "none"),
                    help="where to time the pure step loop: auto (CUDA if available, else "
                         "skipped), cuda, cpu, none (default auto)")
    ap.add_argument("--step-epochs", type=int, default=200,
                    help="timed epochs of the pure step loop (default 200)")
    ap.add_argument("--step-warmup", type=int, default=10,
                    help="untimed warm-up epochs of the pure step loop (default 10)")
    args = ap.parse_args(argv)
    try:
        ks = [int(v) for v in args.ks.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--ks must be comma-separated integers, got {args.ks!r}")
    if not ks or min(ks) < 1 or args.epochs < 1 or args.threads < 1 or args.step_epochs < 1:
        ap.error("--ks, --epochs, --threads and --step-epochs must be ≥ 1")
    if args.step_warmup < 0:
        ap.error("--step-warmup must be ≥ 0")

    import tomllib

    sets: dict[str, Any] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            ap.error(f"--set {item!r} must look like section.field=value")
        try:
            sets[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            sets[key.strip()] = value.strip()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    cfg = resolve_config(args.preset, overrides={**sets, "train.epochs": args.epochs,
                                                 "train.threads": args.threads})
    tc = cfg.train
    data = make_dataset(cfg.task.name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
    n_train = len(data.train_idx)
    n_ck = len(tc.checkpoint_epochs())
    n_eval = len({e for e in range(tc.epochs + 1)
                  if e % tc.eval_every == 0 or tc.is_checkpoint_epoch(e)})
    print(f"preset {args.preset}: {cfg.task.name} mod {cfg.task.p}, {n_train} train examples, "
          f"{'full batch' if tc.batch_size is None else f'batch {tc.batch_size}'}, "
          f"{cfg.model.kind}, model {tc.model_dtype}, loss {tc.loss_dtype}; {tc.epochs} epochs "
          f"per run ({n_eval} evaluations, {n_ck} checkpoints); torch {torch.__version__}, "
          f"{args.threads} thread(s); load average {load_start[0]:.2f}", flush=True)

    # untimed warm-up: the first vmapped call pays one-time set-up costs (about a second)
    with tempfile.TemporaryDirectory(prefix="mechgrok-seeds-") as tmp:
        wcfg = resolve_config(args.preset, overrides={**sets, "train.epochs": 2,
                                                      "train.threads": args.threads})
        train_seeds(wcfg, [0, 1], [Path(tmp) / "w0", Path(tmp) / "w1"], progress=False)
        loop.train(wcfg, Path(tmp) / "w2", progress=False)

    rows = []
    for k in ks:
        row = end_to_end(cfg, k, args.threads)
        rows.append(row)
        print(f"  K = {k:3d}: vmapped {row['vmap_wall_s']:7.1f} s, separate "
              f"{row['separate_wall_s']:7.1f} s", flush=True)
    print()
    print("end to end (train_seeds vs K × loop.train, evaluations and checkpoints included), "
          "per-seed epochs per second:")
    print(f"  {'K':>3}  {'vmapped':>9}  {'separate':>9}  {'speed-up':>8}  "
          f"{'CPU use vmap/sep':>16}")
    for r in rows:
        print(f"  {r['k']:>3}  {r['vmap_epochs_per_s_per_seed']:9.1f}  "
              f"{r['separate_epochs_per_s_per_seed']:9.1f}  {r['speedup']:7.2f}×  "
              f"{r['vmap_cpu_utilisation']:7.2f}/{r['separate_cpu_utilisation']:.2f}")
    k1 = next((r for r in rows if r["k"] == 1), None)
    overhead = None
    if k1 is not None:
        overhead = k1["vmap_wall_s"] / k1["separate_wall_s"] - 1.0
        print(f"vmap overhead at K = 1 (one-seed batched model vs a plain run): "
              f"{100 * overhead:+.0f} % wall time")

    gpu: dict[str, Any] | None = None
    step_cpu: dict[str, Any] | None = None
    want = args.device
    if want == "auto":
        want = "cuda"
    if want == "cuda" and not torch.cuda.is_available():
        print("GPU step loop: skipped, no GPU is available (torch.cuda.is_available() is False)")
    elif want in ("cuda", "cpu"):
        device = torch.device(want)
        name = torch.cuda.get_device_name(device) if want == "cuda" else "cpu"
        steps = [step_loop(cfg, k, device, args.step_epochs, args.step_warmup) for k in ks]
        print()
        print(f"pure step loop on {name} (full batch, forward + backward + AdamW, "
              f"{args.step_epochs} epochs), per-seed epochs per second:")
        print(f"  {'K':>3}  {'vmapped':>9}  {'separate':>9}  {'speed-up':>8}")
        for r in steps:
            print(f"  {r['k']:>3}  {r['vmap_epochs_per_s_per_seed']:9.1f}  "
                  f"{r['separate_epochs_per_s_per_seed']:9.1f}  {r['speedup']:7.2f}×")
        block = {"device": name, "epochs": args.step_epochs, "rows": steps}
        if want == "cuda":
            gpu = block
        else:
            step_cpu = block
    else:
        print("GPU step loop: skipped (--device none)")

    load_end = os.getloadavg()
    result = {
        "benchmark": "seeds_throughput",
        "preset": args.preset,
        "set": sets,
        "torch": torch.__version__,
        "threads": args.threads,
        "epochs": tc.epochs,
        "n_train": n_train,
        "evaluations_per_run": n_eval,
        "checkpoints_per_run": n_ck,
        "load_average_start": load_start[0],
        "load_average_end": load_end[0],
        "end_to_end": rows,
        "vmap_overhead_k1": overhead,
        "step_loop_cpu": step_cpu,
        "gpu": gpu,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of the ``nanda`` preset: fast path vs hooked forward vs the matmul limit.

What it measures, in one process (default preset ``nanda``: add mod 113, 30 % train = 3830
examples, full batch, one-layer transformer d_model 128, 4 heads × d_head 32, d_mlp 512, AdamW,
float64 loss):

(a) **fast path**, epochs per second of the trainer's own step: ``set_lr(lr_at(step))``,
    ``zero_grad``, ``model.forward_last(train_x)`` → ``cross_entropy(..., loss_dtype)`` →
    ``backward`` → ``opt.step()``, built from the package's ``build_model``, ``make_optimizer``,
    ``cross_entropy``, ``lr_at``/``set_lr``, ``make_dataset``/``dataset_tensors``.
(b) **hooked forward**, the same step with ``logits = model(train_x)[:, -1]``.
    (a) and (b) each get their own model and optimiser and are warmed up; then, in each of
    ``--rounds`` rounds, each path runs ``--epochs`` epochs in interleaved blocks of ``--block``
    epochs (fast block, hooked block, hooked block, fast block, …), so both see the same
    background load. Noise on a shared machine only ever slows a block down, so the headline
    rate of each path is its best block and the headline fast/hooked ratio is best / best; the
    median block, the overall rate (all timed epochs / their total time) and the median over
    adjacent (fast, hooked) block pairs of their ratio are reported too. ``cpu_utilisation``
    (process CPU time / (wall time × threads)) well below 1 means other processes took CPU,
    and the figures are then less trustworthy.
(c) **matmul-bound limit**: the float32 matmul rate of this machine, measured with
    ``torch.matmul`` on the shapes that dominate the count, divided by the matmul FLOPs the fast
    path necessarily does per epoch.
(d) **end to end**: ``mechgrok.training.train`` on the preset with ``train.epochs`` overridden
    (default 300) into a temporary directory, ``progress=False``: includes the evaluations (every
    ``eval_every`` epochs, train + test sets) and checkpoint writing (with fsyncs). Reported:
    the whole run's rate, and (noise-robust) the best rate between two successive evaluations,
    read from the trainer's own ``elapsed_s`` clock through ``on_eval``; each such interval
    holds ``eval_every`` training epochs plus one evaluation and, before ``dense_until``, one
    checkpoint.

Also recorded: ``torch.get_num_threads()`` and the process's peak RSS (``ru_maxrss``, MiB).

FLOP count (c), per epoch, for a one-layer model with B training examples, P = 3 positions,
V = d_vocab = p + 1, d = d_model, H heads of width E (HE = H·E), m = d_mlp, n = p classes.
Forward matmul FLOPs (2 per multiply-add), at the last position only, as ``forward_last`` does:

* per-token tables (once per epoch, not per example): K and V tables ``2·P·V·d·HE`` each,
  the Q table (last position) ``2·V·d·HE``;
* per example: attention scores ``2·H·P·E`` and pattern·V ``2·H·P·E``; the output
  projection W_O ``2·HE·d``; the MLP W_in ``2·d·m`` and W_out ``2·m·d``; the unembedding
  W_U ``2·d·n``.

Forward + backward = 3 × forward (the backward of each matmul is two matmuls of the same size).
For ``nanda`` (B = 3830, P = 3, V = 114, d = 128, HE = 128, H = 4, E = 32, m = 512, n = 113):
tables 11 206 656 + 11 206 656 + 3 735 552 = 26 148 864; per example 768 + 768 + 32 768 +
131 072 + 131 072 + 28 928 = 325 376, × 3830 = 1 246 190 080; forward 1 272 338 944;
**per epoch 3 817 016 832 FLOPs (≈ 3.82 GFLOP)**. Element-wise work (ReLU, softmax, the float64
loss, AdamW) and the gathers are not counted: the limit is what a matmul-bound step could reach.

The matmul rate is measured on the forward (X·W), input-gradient (dY·Wᵀ) and weight-gradient
(Xᵀ·dY) matmuls of the four per-example linear maps (W_in, W_out, W_O, W_U; B rows), in float32
with preallocated outputs, best of many short windows each (taken round robin over the shapes);
the aggregate rate is their total FLOPs over their total best time.
``limit_epochs_per_s = matmul rate / FLOPs per epoch``. The rate of the single shape
(3830, 128) @ (128, 512) is reported as well.

Targets (printed next to the figures): fast ≥ 2.5 × hooked (best block / best block); fast
(best block) ≥ 60 % of the matmul limit (matmul rate: best window per shape over two passes,
one before and one after the step timings). The load average is recorded at start and end.

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mechgrok.config import RunConfig, TransformerConfig, resolve_config
from mechgrok.models import build_model
from mechgrok.models.transformer import N_CTX
from mechgrok.tasks import make_dataset
from mechgrok.training import loop
from mechgrok.training.losses import cross_entropy
from mechgrok.training.optim import lr_at, make_optimizer, set_lr

TARGET_FAST_OVER_HOOKED = 2.5
TARGET_FRACTION_OF_LIMIT = 0.60


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        kib /= 1024
    return kib / 1024


# --------------------------------------------------------------------------------------------
# FLOP count of the fast path
# --------------------------------------------------------------------------------------------
def fast_path_flops(cfg: RunConfig, n_train: int) -> dict[str, int]:
    """Matmul FLOPs per epoch of ``forward_last`` + backward (see the module docstring)."""
    mc = cfg.model
    if not isinstance(mc, TransformerConfig) or mc.n_layers != 1:
        raise SystemExit("the FLOP count covers the one-layer transformer only")
    p_, v_ = N_CTX, cfg.task.n + 1
    d, h, e, m, n = mc.d_model, mc.n_heads, mc.d_head, mc.d_mlp, cfg.task.n
    he = h * e
    b = n_train
    fwd = {
        "table_k": 2 * p_ * v_ * d * he,
        "table_v": 2 * p_ * v_ * d * he,
        "table_q": 2 * v_ * d * he,
        "attn_scores": b * 2 * h * p_ * e,
        "attn_mix": b * 2 * h * p_ * e,
        "W_O": b * 2 * he * d,
        "W_in": b * 2 * d * m,
        "W_out": b * 2 * m * d,
        "W_U": b * 2 * d * n,
    }
    out = {f"fwd_{k}": v for k, v in fwd.items()}
    out["forward"] = sum(fwd.values())
    out["per_epoch"] = 3 * out["forward"]
    return out


# --------------------------------------------------------------------------------------------
# Matmul rate
# --------------------------------------------------------------------------------------------
class MatmulBench:
    """float32 ``torch.matmul`` timings on the forward (X·W), input-gradient (dY·Wᵀ) and
    weight-gradient (Xᵀ·dY) shapes of the per-example linear maps W_in, W_out, W_O, W_U.

    ``measure`` times every shape in turn (round robin, so each shape's windows are spread over
    time) and keeps, per shape, the best seconds per matmul seen over all calls.
    """

    def __init__(self, cfg: RunConfig, n_train: int, reps: int):
        mc = cfg.model
        assert isinstance(mc, TransformerConfig)
        b, he = n_train, mc.n_heads * mc.d_head
        linears = {"W_in": (mc.d_model, mc.d_mlp), "W_out": (mc.d_mlp, mc.d_model),
                   "W_O": (he, mc.d_model), "W_U": (mc.d_model, cfg.task.n)}
        gen = torch.Generator().manual_seed(0)
        self.reps = reps
        self.cases: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}
        for name, (k, n) in linears.items():
            x = torch.randn(b, k, generator=gen)
            w = torch.randn(k, n, generator=gen)
            dy = torch.randn(b, n, generator=gen)
            for kind, (lhs, rhs) in {"fwd": (x, w), "dx": (dy, w.t()), "dw": (x.t(), dy)}.items():
                key = f"{name}.{kind} {tuple(lhs.shape)}@{tuple(rhs.shape)}"
                out = torch.empty(lhs.shape[0], rhs.shape[1])
                self.cases[key] = (lhs, rhs, out, 2 * b * k * n)
        self.single_key = f"W_in.fwd ({b}, {mc.d_model})@({mc.d_model}, {mc.d_mlp})"
        self.best = {key: float("inf") for key in self.cases}

    def measure(self, windows: int) -> float:
        """Time ``windows`` rounds over all shapes; return this call's aggregate GFLOP/s."""
        this = {key: float("inf") for key in self.cases}
        for lhs, rhs, out, _ in self.cases.values():
            for _ in range(2):
                torch.matmul(lhs, rhs, out=out)
        for _ in range(windows):
            for key, (lhs, rhs, out, _) in self.cases.items():
                t0 = time.perf_counter()
                for _ in range(self.reps):
                    torch.matmul(lhs, rhs, out=out)
                this[key] = min(this[key], (time.perf_counter() - t0) / self.reps)
        for key in self.cases:
            self.best[key] = min(self.best[key], this[key])
        return self._aggregate(this)

    def _aggregate(self, secs: dict[str, float]) -> float:
        return sum(c[3] for c in self.cases.values()) / sum(secs.values()) / 1e9

    def result(self) -> dict[str, Any]:
        per_shape = {key: c[3] / self.best[key] / 1e9 for key, c in self.cases.items()}
        return {"aggregate_gflops": self._aggregate(self.best),
                "single_shape_gflops": per_shape[self.single_key], "per_shape_gflops": per_shape}


# --------------------------------------------------------------------------------------------
# Step throughput
# --------------------------------------------------------------------------------------------
class Stepper:
    """A model, its optimiser and a step counter; ``run(k)`` does k full-batch epochs."""

    def __init__(self, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, hooked: bool):
        self.cfg, self.x, self.y, self.hooked = cfg, x, y, hooked
        self.model = build_model(cfg)
        self.model.train()
        self.opt = make_optimizer([p for p in self.model.parameters() if p.requires_grad],
                                  cfg.train)
        self.step = 0
        self.blocks: list[float] = []  # epochs/s of each timed block
        self.wall = 0.0
        self.cpu = 0.0
        self.epochs = 0

    def run(self, epochs: int, record: bool = True) -> float:
        """Do ``epochs`` epochs; return (and, if ``record``, keep) their rate in epochs/s."""
        tc, model, opt, x, y = self.cfg.train, self.model, self.opt, self.x, self.y
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(epochs):
            set_lr(opt, lr_at(self.step, tc))
            opt.zero_grad(set_to_none=True)
            logits = model(x)[:, -1] if self.hooked else model.forward_last(x)
            loss = cross_entropy(logits, y, tc.loss_dtype)
            loss.backward()
            opt.step()
            self.step += 1
        wall = time.perf_counter() - t0
        rate = epochs / wall
        if record:
            self.blocks.append(rate)
            self.wall += wall
            self.cpu += time.process_time() - c0
            self.epochs += epochs
        return rate

    def summary(self, threads: int) -> dict[str, Any]:
        return {"best": max(self.blocks), "median": statistics.median(self.blocks),
                "overall": self.epochs / self.wall, "blocks": self.blocks,
                "epochs": self.epochs, "cpu_utilisation": self.cpu / (self.wall * threads)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="nanda", help="preset to measure (default nanda)")
    ap.add_argument("--epochs", type=int, default=100,
                    help="epochs timed per path per round (default 100)")
    ap.add_argument("--block", type=int, default=5,
                    help="epochs per interleaved block (default 5)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of interleaved timing (default 2)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up epochs per path")
    ap.add_argument("--trainer-epochs", type=int, default=300,
                    help="epochs for the end-to-end train() run (0 skips it; default 300)")
    ap.add_argument("--matmul-reps", type=int, default=5,
                    help="matmuls per timing window of each shape (default 5)")
    ap.add_argument("--matmul-windows", type=int, default=20,
                    help="timing windows per shape, before and again after the steps (default 20)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads before measuring (default: leave as is)")
    args = ap.parse_args(argv)
    if min(args.epochs, args.block, args.rounds, args.matmul_reps, args.matmul_windows) < 1:
        ap.error("--epochs, --block, --rounds, --matmul-reps and --matmul-windows must be ≥ 1")
    if args.warmup < 0 or args.trainer_epochs < 0:
        ap.error("--warmup and --trainer-epochs must be ≥ 0")

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_start = os.getloadavg()
    cfg = resolve_config(args.preset)
    tc = cfg.train
    if tc.batch_size is not None:
        raise SystemExit(f"preset {args.preset!r} is not full batch; this benchmark times "
                         f"full-batch epochs")
    data = make_dataset(cfg.task.name, cfg.task.p, cfg.task.frac_train, cfg.task.data_seed)
    t = loop.dataset_tensors(data)
    x, y = t["train_x"], t["train_y"]
    n_train = len(x)
    print(f"preset {args.preset}: {cfg.task.name} mod {cfg.task.p}, {n_train} train examples, "
          f"full batch, loss {tc.loss_dtype}, model {tc.model_dtype}; torch {torch.__version__}, "
          f"{threads} threads; load average {load_start[0]:.2f}")

    flops = fast_path_flops(cfg, n_train)
    mm_bench = MatmulBench(cfg, n_train, args.matmul_reps)
    mm_before = mm_bench.measure(args.matmul_windows)

    # (a), (b) --------------------------------------------------------------------------------
    fast = Stepper(cfg, x, y, hooked=False)
    hooked = Stepper(cfg, x, y, hooked=True)
    fast.run(args.warmup, record=False)
    hooked.run(args.warmup, record=False)
    pair_ratios: list[float] = []
    n_blocks = max(1, args.epochs // args.block)
    for r in range(args.rounds):
        for i in range(n_blocks):
            if (r * n_blocks + i) % 2 == 0:
                f_rate = fast.run(args.block)
                h_rate = hooked.run(args.block)
            else:
                h_rate = hooked.run(args.block)
                f_rate = fast.run(args.block)
            pair_ratios.append(f_rate / h_rate)
        print(f"  round {r + 1}/{args.rounds}: fast best block "
              f"{max(fast.blocks[-n_blocks:]):.2f} ep/s, hooked best block "
              f"{max(hooked.blocks[-n_blocks:]):.2f} ep/s")
    fs, hs = fast.summary(threads), hooked.summary(threads)
    ratio = fs["best"] / hs["best"]
    ratio_pairs = statistics.median(pair_ratios)
    rss_after_steps = peak_rss_mib()
    for name, st in (("fast path     ", fs), ("hooked forward", hs)):
        print(f"{name}: {st['best']:.2f} epochs/s best block, {st['median']:.2f} median, "
              f"{st['overall']:.2f} overall ({st['epochs']} epochs in blocks of {args.block}; "
              f"CPU utilisation {st['cpu_utilisation']:.2f})")
    ok_ratio = ratio >= TARGET_FAST_OVER_HOOKED
    print(f"fast / hooked : {ratio:.2f}× best/best (median of {len(pair_ratios)} paired blocks "
          f"{ratio_pairs:.2f}×)   target ≥ {TARGET_FAST_OVER_HOOKED}×  "
          f"{'MET' if ok_ratio else 'NOT MET'}")

    # (c) -------------------------------------------------------------------------------------
    mm_after = mm_bench.measure(args.matmul_windows)
    mm = mm_bench.result()
    limit = mm["aggregate_gflops"] * 1e9 / flops["per_epoch"]
    frac = fs["best"] / limit
    ok_frac = frac >= TARGET_FRACTION_OF_LIMIT
    print(f"FLOPs / epoch : {flops['per_epoch']:,} (forward {flops['forward']:,} × 3)")
    for k, v in mm["per_shape_gflops"].items():
        print(f"  matmul {k:<40s} {v:8.1f} GFLOP/s")
    print(f"matmul rate   : {mm['aggregate_gflops']:.1f} GFLOP/s aggregate over those shapes "
          f"(best per shape; one pass before the steps {mm_before:.1f}, after "
          f"{mm_after:.1f}); "
          f"(3830,128)@(128,512): {mm['single_shape_gflops']:.1f} GFLOP/s")
    print(f"matmul limit  : {limit:.2f} epochs/s")
    print(f"fast / limit  : {100 * frac:.1f} %   target ≥ {100 * TARGET_FRACTION_OF_LIMIT:.0f} %  "
          f"{'MET' if ok_frac else 'NOT MET'}")

    # (d) -------------------------------------------------------------------------------------
    trainer: dict[str, Any] = {}
    if args.trainer_epochs:
        tcfg = resolve_config(args.preset, overrides={"train.epochs": args.trainer_epochs})
        n_ck = len(tcfg.train.checkpoint_epochs())
        n_eval = len({e for e in range(args.trainer_epochs + 1)
                      if e % tcfg.train.eval_every == 0 or tcfg.train.is_checkpoint_epoch(e)})
        with tempfile.TemporaryDirectory(prefix="mechgrok-bench-") as tmp:
            marks: list[tuple[int, float]] = []
            c0, t0 = time.process_time(), time.perf_counter()
            res = loop.train(tcfg, Path(tmp) / "run", progress=False,
                             on_eval=lambda m: marks.append((m["epoch"], m["elapsed_s"])))
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
        intervals = [(e1 - e0) / (s1 - s0) for (e0, s0), (e1, s1) in zip(marks, marks[1:])
                     if e1 > e0 and s1 > s0 and e0 > 0]
        best_iv = max(intervals) if intervals else float("nan")
        trainer = {"epochs": res.epochs, "status": res.status, "loop_seconds": res.seconds,
                   "wall_seconds": wall, "epochs_per_s": res.epochs / res.seconds,
                   "epochs_per_s_wall": res.epochs / wall, "evaluations": n_eval,
                   "checkpoints": n_ck, "cpu_utilisation": cpu / (wall * threads),
                   "epochs_per_s_best_interval": best_iv,
                   "overhead_vs_fast": 1.0 - best_iv / fs["best"]}
        print(f"train()       : {res.epochs} epochs in {res.seconds:.1f} s loop "
              f"({wall:.1f} s wall incl. set-up) = {trainer['epochs_per_s']:.2f} epochs/s "
              f"({n_eval} evaluations, {n_ck} checkpoints; CPU utilisation "
              f"{trainer['cpu_utilisation']:.2f})")
        print(f"train() best  : {best_iv:.2f} epochs/s between two evaluations "
              f"({100 * trainer['overhead_vs_fast']:.0f} % below the fast step's best block)")

    rss = peak_rss_mib()
    print(f"peak RSS      : {rss:.0f} MiB (after the step timings: {rss_after_steps:.0f} MiB)")
    load_end = os.getloadavg()
    result = {
        "benchmark": "train_throughput",
        "preset": args.preset,
        "torch": torch.__version__,
        "threads": threads,
        "load_average_start": load_start[0],
        "load_average_end": load_end[0],
        "n_train": n_train,
        "epochs_per_round": n_blocks * args.block,
        "block": args.block,
        "rounds": args.rounds,
        "fast_epochs_per_s": fs["best"],
        "fast_epochs_per_s_median": fs["median"],
        "fast_epochs_per_s_overall": fs["overall"],
        "fast_cpu_utilisation": fs["cpu_utilisation"],
        "fast_epochs_per_s_blocks": fs["blocks"],
        "hooked_epochs_per_s": hs["best"],
        "hooked_epochs_per_s_median": hs["median"],
        "hooked_epochs_per_s_overall": hs["overall"],
        "hooked_cpu_utilisation": hs["cpu_utilisation"],
        "hooked_epochs_per_s_blocks": hs["blocks"],
        "fast_over_hooked": ratio,
        "fast_over_hooked_paired_median": ratio_pairs,
        "fast_over_hooked_pairs": pair_ratios,
        "flops_per_epoch": flops["per_epoch"],
        "flops_breakdown_forward": {k[4:]: v for k, v in flops.items() if k.startswith("fwd_")},
        "matmul_gflops": mm["aggregate_gflops"],
        "matmul_gflops_before_steps": mm_before,
        "matmul_gflops_after_steps": mm_after,
        "matmul_gflops_3830x128x512": mm["single_shape_gflops"],
        "matmul_gflops_per_shape": mm["per_shape_gflops"],
        "limit_epochs_per_s": limit,
        "fast_fraction_of_limit": frac,
        "trainer": trainer,
        "peak_rss_mib": rss,
        "peak_rss_mib_after_steps": rss_after_steps,
        "targets": {"fast_over_hooked_min": TARGET_FAST_OVER_HOOKED,
                    "fast_fraction_of_limit_min": TARGET_FRACTION_OF_LIMIT},
        "met": {"fast_over_hooked": ok_ratio, "fast_fraction_of_limit": ok_frac},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

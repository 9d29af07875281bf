"""Training throughput of the ``nanda`` preset: fast path vs hooked forward vs the matmul limit.

What it measures, in one process (default preset ``nanda``: add mod 113, 30 % train = 3830
examples, full batch, one-layer transformer d_model 128, 4 heads × d_head 32, d_mlp 512, AdamW,
float64 loss):

(a) **fast path**, epochs per second of the trainer's own step: ``set_lr(lr_at(step))``,
    ``zero_grad``, ``model.forward_last(train_x)`` → ``cross_entropy(..., loss_dtype)`` →
    ``backward`` → ``opt.step()``, built from the package's ``build_model``, ``make_optimizer``,
    ``cross_entropy``, ``lr_at``/``set_lr``, ``make_dataset``/``dataset_tensors``.
(b) **hooked forward**, the same step with ``logits = model(train_x)[:, -1]``.
    (a) and (b) each get their own model and optimiser, are warmed up, then timed for
    ``--epochs`` epochs per round over ``--rounds`` rounds (the order alternates each round);
    the best round is the headline figure (noise on a shared machine only ever slows a round
    down), the median is reported too.
(c) **matmul-bound limit**: the FLOPs the fast path necessarily does per epoch, divided into the
    float32 matmul rate of this machine measured with ``torch.matmul`` on the shapes that
    dominate that count.
(d) **end to end**: ``mechgrok.training.train`` on the preset with ``train.epochs`` overridden
    (default 300) into a temporary directory, ``progress=False``: includes the evaluations (every
    ``eval_every`` epochs, train + test sets) and checkpoint writing (with fsyncs).

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
(Xᵀ·dY) matmuls of the four per-example linear maps (W_in, W_out, W_O, W_U; B rows), in float32,
best of several repeats each; the aggregate rate is their total FLOPs over their total time.
``limit_epochs_per_s = matmul rate / FLOPs per epoch``. The rate of the single shape
(3830, 128) @ (128, 512) is reported as well.

Targets (printed next to the figures): fast ≥ 2.5 × hooked; fast ≥ 60 % of the matmul limit.

The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
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
def _time_matmul(a: torch.Tensor, b: torch.Tensor, reps: int, repeats: int) -> float:
    """Best seconds per ``torch.matmul(a, b)`` (output preallocated) over ``repeats`` runs."""
    out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def matmul_rate(cfg: RunConfig, n_train: int, reps: int, repeats: int) -> dict[str, Any]:
    """float32 matmul FLOP/s on the forward and backward shapes of the per-example linear maps."""
    mc = cfg.model
    assert isinstance(mc, TransformerConfig)
    b = n_train
    he = mc.n_heads * mc.d_head
    linears = {"W_in": (mc.d_model, mc.d_mlp), "W_out": (mc.d_mlp, mc.d_model),
               "W_O": (he, mc.d_model), "W_U": (mc.d_model, cfg.task.n)}
    gen = torch.Generator().manual_seed(0)
    total_flops = 0
    total_time = 0.0
    per_shape: dict[str, float] = {}
    for name, (k, n) in linears.items():
        x = torch.randn(b, k, generator=gen)
        w = torch.randn(k, n, generator=gen)
        dy = torch.randn(b, n, generator=gen)
        flops = 2 * b * k * n
        for kind, (lhs, rhs) in {"fwd": (x, w), "dx": (dy, w.t()), "dw": (x.t(), dy)}.items():
            s = _time_matmul(lhs, rhs, reps, repeats)
            per_shape[f"{name}.{kind} {tuple(lhs.shape)}@{tuple(rhs.shape)}"] = flops / s / 1e9
            total_flops += flops
            total_time += s
    single = per_shape[f"W_in.fwd ({b}, {mc.d_model})@({mc.d_model}, {mc.d_mlp})"]
    return {"aggregate_gflops": total_flops / total_time / 1e9, "single_shape_gflops": single,
            "per_shape_gflops": per_shape}


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

    def run(self, epochs: int) -> float:
        """Do ``epochs`` epochs; return the seconds they took."""
        tc, model, opt, x, y = self.cfg.train, self.model, self.opt, self.x, self.y
        t0 = time.perf_counter()
        for _ in range(epochs):
            set_lr(opt, lr_at(self.step, tc))
            opt.zero_grad(set_to_none=True)
            logits = model(x)[:, -1] if self.hooked else model.forward_last(x)
            loss = cross_entropy(logits, y, tc.loss_dtype)
            loss.backward()
            opt.step()
            self.step += 1
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="nanda", help="preset to measure (default nanda)")
    ap.add_argument("--epochs", type=int, default=100,
                    help="epochs timed per path per round (default 100)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of (fast, hooked); best and median reported")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up epochs per path")
    ap.add_argument("--trainer-epochs", type=int, default=300,
                    help="epochs for the end-to-end train() run (0 skips it; default 300)")
    ap.add_argument("--matmul-reps", type=int, default=20,
                    help="matmuls per timing of each shape (default 20)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads before measuring (default: leave as is)")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.rounds < 1 or args.warmup < 0 or args.trainer_epochs < 0:
        ap.error("--epochs and --rounds must be ≥ 1, --warmup and --trainer-epochs ≥ 0")

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
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
          f"{threads} threads")

    # (a), (b) --------------------------------------------------------------------------------
    fast = Stepper(cfg, x, y, hooked=False)
    hooked = Stepper(cfg, x, y, hooked=True)
    fast.run(args.warmup)
    hooked.run(args.warmup)
    rates: dict[str, list[float]] = {"fast": [], "hooked": []}
    for r in range(args.rounds):
        order = [("fast", fast), ("hooked", hooked)]
        if r % 2:
            order.reverse()
        for name, stepper in order:
            rates[name].append(args.epochs / stepper.run(args.epochs))
        print(f"  round {r + 1}/{args.rounds}: fast {rates['fast'][-1]:.2f} ep/s, "
              f"hooked {rates['hooked'][-1]:.2f} ep/s")
    fast_best, hooked_best = max(rates["fast"]), max(rates["hooked"])
    fast_med, hooked_med = statistics.median(rates["fast"]), statistics.median(rates["hooked"])
    ratio = fast_best / hooked_best
    rss_after_steps = peak_rss_mib()
    print(f"fast path     : {fast_best:.2f} epochs/s best, {fast_med:.2f} median "
          f"({args.rounds} × {args.epochs} epochs)")
    print(f"hooked forward: {hooked_best:.2f} epochs/s best, {hooked_med:.2f} median")
    ok_ratio = ratio >= TARGET_FAST_OVER_HOOKED
    print(f"fast / hooked : {ratio:.2f}×  (median {fast_med / hooked_med:.2f}×)   "
          f"target ≥ {TARGET_FAST_OVER_HOOKED}×  {'MET' if ok_ratio else 'NOT MET'}")

    # (c) -------------------------------------------------------------------------------------
    flops = fast_path_flops(cfg, n_train)
    mm = matmul_rate(cfg, n_train, args.matmul_reps, repeats=5)
    limit = mm["aggregate_gflops"] * 1e9 / flops["per_epoch"]
    frac = fast_best / limit
    ok_frac = frac >= TARGET_FRACTION_OF_LIMIT
    print(f"FLOPs / epoch : {flops['per_epoch']:,} (forward {flops['forward']:,} × 3)")
    for k, v in mm["per_shape_gflops"].items():
        print(f"  matmul {k:<40s} {v:8.1f} GFLOP/s")
    print(f"matmul rate   : {mm['aggregate_gflops']:.1f} GFLOP/s aggregate over those shapes; "
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
            t0 = time.perf_counter()
            res = loop.train(tcfg, Path(tmp) / "run", progress=False)
            wall = time.perf_counter() - t0
        trainer = {"epochs": res.epochs, "status": res.status, "loop_seconds": res.seconds,
                   "wall_seconds": wall, "epochs_per_s": res.epochs / res.seconds,
                   "epochs_per_s_wall": res.epochs / wall, "evaluations": n_eval,
                   "checkpoints": n_ck,
                   "overhead_vs_fast": 1.0 - (res.epochs / res.seconds) / fast_best}
        print(f"train()       : {res.epochs} epochs in {res.seconds:.1f} s loop "
              f"({wall:.1f} s wall incl. set-up) = {trainer['epochs_per_s']:.2f} epochs/s "
              f"({n_eval} evaluations, {n_ck} checkpoints; "
              f"{100 * trainer['overhead_vs_fast']:.0f} % below the fast step alone)")

    rss = peak_rss_mib()
    print(f"peak RSS      : {rss:.0f} MiB (after the step timings: {rss_after_steps:.0f} MiB)")
    result = {
        "benchmark": "train_throughput",
        "preset": args.preset,
        "torch": torch.__version__,
        "threads": threads,
        "n_train": n_train,
        "epochs_per_round": args.epochs,
        "rounds": args.rounds,
        "fast_epochs_per_s": fast_best,
        "fast_epochs_per_s_median": fast_med,
        "fast_epochs_per_s_rounds": rates["fast"],
        "hooked_epochs_per_s": hooked_best,
        "hooked_epochs_per_s_median": hooked_med,
        "hooked_epochs_per_s_rounds": rates["hooked"],
        "fast_over_hooked": ratio,
        "fast_over_hooked_median": fast_med / hooked_med,
        "flops_per_epoch": flops["per_epoch"],
        "flops_breakdown_forward": {k[4:]: v for k, v in flops.items() if k.startswith("fwd_")},
        "matmul_gflops": mm["aggregate_gflops"],
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

"""Memory estimates: refuse, before anything is created, a run this machine cannot hold.

:func:`estimate_memory` counts, from the config alone (plain arithmetic, no torch), the bytes a
run needs; :func:`check_memory` compares the total with the memory available and raises
:class:`~mechgrok.errors.ConfigError` with the estimate and a way forward (minibatches, a smaller
``p``, a smaller model). ``mechgrok train``, ``run`` and ``sweep`` call it before creating a run
directory, as do :func:`mechgrok.training.train` and :func:`mechgrok.training.vmap.train_seeds`.

**Convention: an upper-bound-ish estimate.** Every tensor the step makes is counted as if it were
alive at the step's peak, and:

* *persistent*: the parameters, their gradients and the optimiser's state (AdamW/Adam: two
  tensors per parameter; SGD with momentum: one), the Grokfast filter's state (EMA: one copy of
  the gradients; MA: ``min(window, total steps)`` copies), all in ``train.model_dtype``;
* *data*: the task's pairs, labels and split (numpy, then torch): 160 bytes per pair, over
  ``n²`` pairs (an upper bound: ``div`` and ``cond`` leave out ``y = 0``);
* *training step*: the fast path's (``forward_last``) activations of one optimiser step, per
  example, times the batch (``train.batch_size``, or every train pair for full batch), counted
  twice (the activations saved for backward, and their gradients), plus the logits cast to
  ``train.loss_dtype`` and their log-softmax;
* *evaluation*: the same forward without gradients on a chunk of 32,768 rows
  (:func:`mechgrok.training.loop.evaluate`'s chunk);
* *checkpoint*: the serialised state (parameters, optimiser, filter), twice (the tensors' bytes
  and the file's);
* *analysis*: the probes' hooked forward over all ``n²`` pairs at once (every position, the
  neuron activations cached, logits at every position), plus the probes' float64 work on the
  all-pairs logits (restricted/excluded loss with its Fourier directions, collapse: four
  ``(n², n)`` float64 tensors) and on the neurons (Fourier fractions: three ``(n², neurons)``
  float64 tensors). For ``p ≈ 113`` and full-batch training this is often the largest part;
* *runtime*: the Python process with torch and TransformerLens loaded and the workspaces of its
  first steps (768 MiB; measured 444 MiB at start-up and up to 200 MiB more in the first steps).

``training`` is runtime + data + persistent + the largest of the training step, the evaluation
and the checkpoint; ``analysis`` is runtime + data + parameters + the analysis. Against the
maximum resident set size of real processes (one thread, one epoch and its evaluations), the
estimate was 1.3–2× the measurement: a full-batch ``quick`` transformer at p = 199 (35,640 train
pairs): 840 MiB measured, 1.2 GiB estimated; an MLP [1024, 1024] on one-hot inputs at p = 199:
1.15 GiB measured, 2.2 GiB estimated; the probes' analysis of a p = 257 run: about 1.3 GiB
measured, 2.2 GiB estimated (``tests/test_hostile_config.py`` checks the first).

The memory available is ``MemAvailable`` of ``/proc/meminfo`` (else ``os.sysconf``), lowered to a
cgroup's ``memory.max`` less its ``memory.current`` when the process runs in one. The environment
variable ``MECHGROK_MEMORY_LIMIT`` replaces it: a number of bytes or a size such as ``2GiB``,
``512M``, ``1.5GB`` (for a shared machine, or for tests); ``off`` disables the check.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechgrok.errors import ConfigError
from mechgrok.tasks import N_CTX

__all__ = [
    "ENV_VAR",
    "EVAL_CHUNK",
    "RUNTIME_BYTES",
    "available_cores",
    "available_memory",
    "check_memory",
    "estimate_memory",
    "format_bytes",
    "param_count",
    "parse_size",
]

ENV_VAR = "MECHGROK_MEMORY_LIMIT"
EVAL_CHUNK = 1 << 15  # rows per forward in mechgrok.training.loop.evaluate
#: python + torch + transformer_lens resident (measured: 444 MiB), and the workspaces, thread
#: pools and allocator caches of the first steps (measured: up to 200 MiB more on a small run)
RUNTIME_BYTES = 768 << 20
DATA_BYTES_PER_PAIR = 160
GiB = 1 << 30

_UNITS = {"": 1, "b": 1,
          "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
          "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
          "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
          "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


def _dtype_bytes(name: str) -> int:
    return 8 if name == "float64" else 4


def format_bytes(n: float) -> str:
    """``n`` bytes in GiB (MiB below 1 GiB), e.g. ``'612.4 GiB'``."""
    if n >= GiB:
        return f"{n / GiB:,.1f} GiB"
    return f"{n / (1 << 20):,.0f} MiB"


def parse_size(text: str) -> int | None:
    """``'2GiB'``, ``'512M'``, ``'1.5 GB'``, ``'1073741824'`` → bytes; ``'off'`` → None.
    Binary units for K/M/G/T, KiB/…; decimal for KB/MB/GB/TB."""
    t = text.strip().lower()
    if t in ("off", "none", "unlimited", "inf"):
        return None
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)", t)
    if not m or m.group(2) not in _UNITS:
        raise ConfigError(f"{ENV_VAR} must be a number of bytes or a size such as 2GiB, 512M or "
                          f"1.5GB (or off), got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"{ENV_VAR} must be at least one byte, got {text!r}")
    return int(value)


def _cgroup_room() -> int | None:
    """What the cgroup (v2) this process runs in still allows, if it sets a limit."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split("::", 1)[1]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError, IndexError):
        return None


def available_memory() -> tuple[int | None, str]:
    """(bytes available, where that number comes from); (None, why) when unknown or disabled."""
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        limit = parse_size(env)
        return limit, f"{ENV_VAR}={env.strip()}"
    avail: int | None = None
    source = "MemAvailable"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            source = "free physical memory"
        except (ValueError, OSError, AttributeError):
            return None, "unknown"
    room = _cgroup_room()
    if room is not None and room < avail:
        return room, "the cgroup's memory.max"
    return avail, source


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------
def _n_elements(cfg: Any) -> int:
    """p, or n! for S_n (120 for S5): the task config's count (no torch)."""
    return int(cfg.task.n)


def _transformer_counts(m: Any, n: int) -> dict[str, int]:
    """The transformer's counts (see :data:`_MODEL_COUNTS`)."""
    d, h, e, f, L = m.d_model, m.n_heads, m.d_head, m.d_mlp, m.n_layers
    T = N_CTX
    gelu = m.act == "gelu"
    ln = 2 * d if m.layernorm else 0
    block = 4 * h * d * e + 2 * d * f + f + d + 2 * ln
    params = (n + 1) * d + N_CTX * d + L * block + ln + d * n + (n if m.unembed_bias else 0)
    # fast path: the last block, at the last position: scores, softmax (and the α mix), the
    # gathered values, pattern·values, z, attention out and residual, MLP pre/post, out and
    # residual
    ln = 3 * d if m.layernorm else 0
    fast = 3 * T * h + 2 * T * h * e + h * e + 2 * d + f * (2 if gelu else 1) + 2 * d + 2 * ln
    if L > 1:
        # embeddings on every position; each earlier block on every position: q, k, v,
        # scores (masked, softmax, α), z and its copy, attention out, residuals, MLP
        block = (T * d + 3 * T * h * e + 4 * T * T * h + 2 * T * h * e + 3 * T * d
                 + T * f * (2 if gelu else 1) + 2 * T * d + 2 * T * ln)
        fast += 2 * T * d + (L - 1) * block + 3 * T * h * e  # the last block's q, k, v
    fast += ln + n
    # hooked forward: every position
    ln = 3 * T * d if m.layernorm else 0
    block = (T * d + 3 * T * h * e + 4 * T * T * h + 2 * T * h * e + 3 * T * d
             + 2 * T * f + 2 * T * d + 2 * ln)
    hooked = 3 * T * d + L * block + ln + T * n
    return {"params": params, "fast": fast, "hooked": hooked, "neurons": f}


def _mlp_counts(m: Any, n: int) -> dict[str, int]:
    """The MLP's counts (see :data:`_MODEL_COUNTS`)."""
    d_op = n if m.embed == "onehot" else m.d_embed
    d_in = 2 * d_op if m.combine == "concat" else d_op
    widths = [d_in, *m.hidden]
    params = n * m.d_embed if m.embed == "learned" else 0
    for a, b in zip(widths[:-1], widths[1:]):
        params += a * b + (b if m.bias else 0)
    params += widths[-1] * n + (n if m.bias else 0)
    # fast path: the first layer's gathered rows, their sum (+ bias) and activation; then each
    # layer's output and activation
    fast = 3 * m.hidden[0] + sum(2 * w for w in m.hidden[1:]) + n
    onehot = 2 * n * 2 if m.embed == "onehot" else 0  # int64 one_hot, then cast
    hooked = 2 * d_op + d_in + onehot + sum(2 * w for w in m.hidden) + n
    return {"params": params, "fast": fast, "hooked": hooked, "neurons": m.hidden[-1]}


#: ``model.kind`` → its counts: ``params`` (the number of parameters, as mechgrok.models builds
#: the model), ``fast`` (elements, in the model's dtype, that the fast path ``forward_last`` makes
#: per example, logits included: what backward keeps, or what a no-grad chunk holds at its
#: peak), ``hooked`` (elements of the hooked forward per example, every position, the neuron hook
#: cached, as the probes' all-pairs forward runs it) and ``neurons``. One entry per model kind
#: (mechgrok.config.MODEL_KINDS, which this layer may not import).
_MODEL_COUNTS: dict[str, Callable[[Any, int], dict[str, int]]] = {
    "transformer": _transformer_counts,
    "mlp": _mlp_counts,
}


def _counts(cfg: Any) -> dict[str, int]:
    return _MODEL_COUNTS[cfg.model.kind](cfg.model, _n_elements(cfg))


def param_count(cfg: Any) -> int:
    """Number of parameters of the model ``cfg`` builds (as mechgrok.models builds it)."""
    return _counts(cfg)["params"]


def _n_train(cfg: Any) -> int:
    pairs = _n_elements(cfg) ** 2
    return max(1, math.floor(cfg.task.frac_train * pairs))


def estimate_memory(cfg: Any, *, n_models: int = 1, batch_size: int | None = None
                    ) -> dict[str, int]:
    """Bytes a run of ``cfg`` needs, by part, and the totals ``training``, ``analysis`` and
    ``peak`` (the larger); see the module docstring for what is counted. ``n_models``: seeds
    trained at once as one batched model (``--vmap-seeds``). ``batch_size`` replaces the
    config's (to price a way forward). Plain arithmetic on the config: no torch, no allocation.
    """
    mb = _dtype_bytes(cfg.train.model_dtype)
    lb = _dtype_bytes(cfg.train.loss_dtype)
    n = _n_elements(cfg)
    pairs = n * n
    n_train = _n_train(cfg)
    batch = min(batch_size or cfg.train.batch_size or n_train, n_train)
    steps = cfg.train.epochs * math.ceil(n_train / batch)
    K = max(1, int(n_models))

    counts = _counts(cfg)
    P = counts["params"]
    params = P * mb * K
    grads = params
    opt = cfg.train.optimizer
    optimizer = (2 * params if opt in ("adam", "adamw")
                 else params if cfg.train.momentum > 0 else 0)
    if cfg.train.orthograd:
        optimizer += params  # ⊥Grad's per-tensor temporaries (bounded by one copy)
    gf = cfg.train.grokfast
    grokfast = (params if gf == "ema"
                else params * (min(cfg.train.grokfast_window, steps) + 1) if gf == "ma" else 0)
    data = DATA_BYTES_PER_PAIR * pairs

    fwd = counts["fast"]
    loss_extra = 2 * n * lb + (n * lb if lb != mb else 0)  # cast, log-softmax (and its grad)
    train_step = K * batch * (2 * fwd * mb + loss_extra + 32)  # + the batch's index copies
    chunk = min(EVAL_CHUNK, pairs)
    evaluation = K * chunk * (fwd * mb + loss_extra)
    checkpoint = 2 * (params + optimizer + grokfast)
    hooked = counts["hooked"]
    analysis = pairs * (hooked * mb + 8 * (4 * n + 3 * counts["neurons"]))

    persistent = params + grads + optimizer + grokfast
    training = RUNTIME_BYTES + data + persistent + max(train_step, evaluation, checkpoint)
    analysis_total = RUNTIME_BYTES + data + P * mb + analysis
    return {
        "params": params, "gradients": grads, "optimizer": optimizer, "grokfast": grokfast,
        "data": data, "train_step": train_step, "evaluation": evaluation,
        "checkpoint": checkpoint, "analysis": analysis, "runtime": RUNTIME_BYTES,
        "n_params": P * K, "batch": batch, "n_train": n_train, "pairs": pairs,
        "training": training, "analysis_total": analysis_total,
        "peak": max(training, analysis_total),
    }


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------
def check_memory(cfg: Any, available: int | None = None, *, analysis: bool = False,
                 n_models: int = 1, copies: int = 1, where: str = "this run") -> dict[str, int]:
    """Refuse ``cfg`` when it needs more memory than is available; returns the estimate.

    ``analysis``: also the probes' all-pairs analysis (``mechgrok run``, sweeps). ``copies``:
    runs at the same time (a sweep's workers). ``available`` (bytes) replaces
    :func:`available_memory`. Raises :class:`ConfigError`: one line with the estimate, what
    dominates it and a way forward.
    """
    est = estimate_memory(cfg, n_models=n_models)
    source = "given"
    if available is None:
        available, source = available_memory()
        if available is None:
            return est
    need = est["peak"] if analysis else est["training"]
    if need * copies <= available:
        return est
    have = f"{format_bytes(available)} is available ({source})"
    if copies > 1 and need <= available:
        fit = max(1, available // need)
        raise ConfigError(f"{where} needs about {format_bytes(need)} of memory and {copies} "
                          f"at once need {format_bytes(need * copies)}, but {have}; run at most "
                          f"{fit} at once (--workers {fit})")
    parts = _parts(est, analysis and est["analysis_total"] > est["training"])
    shown = "; ".join(f"{label} {format_bytes(b)}" for b, label in parts[:3])
    at_once = f", × {copies} at once" if copies > 1 else ""
    way = _way_forward(cfg, est, available // copies, analysis, n_models, parts[0][1])
    raise ConfigError(f"{where} needs about {format_bytes(need * copies)} of memory ({shown}"
                      f"{at_once}) but {have}: {way}")


_RUNTIME = "python and torch"
_PERSISTENT = "parameters, gradients and optimiser state"


def _parts(est: dict[str, int], analysis: bool) -> list[tuple[int, str]]:
    """The parts of the total that matters, largest first, with their labels."""
    parts = [(est["runtime"], _RUNTIME), (est["data"], "the dataset")]
    if analysis:
        parts += [(est["params"], "parameters"),
                  (est["analysis"], f"the probes' all-pairs analysis over {est['pairs']:,} pairs")]
    else:
        parts.append((est["params"] + est["gradients"] + est["optimizer"] + est["grokfast"],
                      _PERSISTENT))
        full = est["batch"] >= est["n_train"]
        step = (f"the full-batch training step over {est['n_train']:,} train pairs" if full
                else f"a training step on a batch of {est['batch']:,}")
        transient = max((est["train_step"], step), (est["evaluation"], "an evaluation chunk"),
                        (est["checkpoint"], "writing a checkpoint"))
        parts.append(transient)
    return sorted(parts, reverse=True)


def _way_forward(cfg: Any, est: dict[str, int], room: int, analysis: bool, n_models: int,
                 largest: str) -> str:
    tips: list[str] = []
    if est["training"] > room and est["train_step"] >= max(est["evaluation"], est["checkpoint"]) \
            and est["batch"] > 1:
        # the largest power-of-two batch (below the present one) whose training fits
        b = 1 << (est["batch"] - 1).bit_length() - 1
        while b >= 1:
            e = estimate_memory(cfg, n_models=n_models, batch_size=b)
            if e["training"] <= room:
                tips.append(f"set train.batch_size={b} (minibatches: about "
                            f"{format_bytes(e['training'])} for training)")
                break
            b //= 2
    if analysis and est["analysis_total"] > room >= est["training"]:
        tips.append("train without the analysis (`mechgrok train`, or `mechgrok sweep "
                    "--no-analyze`): the probes run over all pairs at once")
    if largest != _RUNTIME:
        big_model = largest == _PERSISTENT or est["params"] * 8 > room
        size = "task.p" if cfg.task.p is not None else "task.degree"  # S_n: the degree n
        tips.append(f"use a smaller {'model or ' + size if big_model else size}")
        if cfg.train.grokfast == "ma" and est["grokfast"] > room / 4:
            tips.append("a shorter train.grokfast_window")
        if n_models > 1:
            tips.append("fewer seeds at once (--vmap-seeds)")
    else:
        tips.append("free some memory")
    tips.append(f"set {ENV_VAR} (bytes, e.g. 64GiB) if more memory is free than the system "
                f"reports")
    return ", or ".join(tips)


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset``
    set), else the machine's count: the default number of worker processes."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)

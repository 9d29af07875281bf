"""``mechgrok tasks`` and ``mechgrok presets``: what there is to choose from."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mechgrok.tasks import Task

__all__ = ["cmd_presets", "cmd_tasks"]


def cmd_tasks(args: argparse.Namespace) -> int:
    """Two tables, each line under 100 columns: what each task computes (rule, domain), then how
    mechgrok reads it (its algebra: the group, the rule in it, the basis), then notes on 0 in Z_p*
    and on tasks with no group."""
    from mechgrok.tasks import TASKS

    tasks = list(TASKS.values())
    w = max(len(t.name) for t in tasks)
    rw = max(len(t.rule) for t in tasks)
    print(f"{'task':<{w}}  {'rule':<{rw}}  domain")
    for t in tasks:
        print(f"{t.name:<{w}}  {t.rule:<{rw}}  {t.domain}")
    gw = max(len(t.algebra.group_name) for t in tasks)
    print(f"\n{'task':<{w}}  {'algebra':<{gw}}  {'rule':<6}  read in")
    for t in tasks:
        a = t.algebra
        print(f"{t.name:<{w}}  {a.group_name:<{gw}}  {a.rule or '–':<6}  {a.basis}")
    zero = [t for t in tasks if t.algebra.zero]
    if zero:
        print("\n0 is outside Z_p*:")
        for t in zero:
            print(f"  {t.name}: {t.algebra.zero}")
    if any(not t.algebra.is_group for t in tasks):
        print("\nnone: no group structure; the 2-D basis describes the answer table, no circuit.")
    _print_degrees(tasks)
    return 0


def _print_degrees(tasks: list[Task]) -> None:
    """The symmetric tasks' parameter: the degree n of S_n, its range and what each n gives."""
    from mechgrok.tasks import DEFAULT_DEGREE, SYMMETRIC_DEGREES

    sym = [t.name for t in tasks if t.algebra.kind == "symmetric"]
    if not sym:
        return
    sizes = ", ".join(f"S{n} {math.factorial(n)}" for n in SYMMETRIC_DEGREES)
    sizes += f" ({math.factorial(max(SYMMETRIC_DEGREES)) ** 2:,} pairs)"
    print(f"\nS_n: {', '.join(sym)} take the degree n as a parameter (task.degree, --degree N; "
          f"default {DEFAULT_DEGREE})."
          f"\n  n! elements and n!² pairs: {sizes}")


def cmd_presets(args: argparse.Namespace) -> int:
    from mechgrok.config import PRESETS, preset

    for name in PRESETS:
        c = preset(name)
        m = c.model
        if m.kind == "transformer":
            model = (f"transformer L{m.n_layers} d{m.d_model} h{m.n_heads} mlp{m.d_mlp} "
                     f"α={m.attn_alpha:g}")
        else:
            model = f"mlp {m.embed}/{m.combine} {list(m.hidden)} bias={m.bias}"
        t = c.train
        bs = t.batch_size or "full"
        print(f"{name:<12} {c.task.name} p={c.task.p} frac={c.task.frac_train:g}  {model}  "
              f"{t.optimizer} lr={t.lr:g} wd={t.weight_decay:g} batch={bs} epochs={t.epochs} "
              f"checkpoints={len(t.checkpoint_epochs())}")
    return 0

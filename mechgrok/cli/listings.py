"""``mechgrok tasks`` and ``mechgrok presets``: what there is to choose from."""

from __future__ import annotations

import argparse

__all__ = ["cmd_presets", "cmd_tasks"]


def cmd_tasks(args: argparse.Namespace) -> int:
    from mechgrok.tasks import TASKS

    w = max(len(n) for n in TASKS)
    rw = max(len(t.rule) for t in TASKS.values())
    print(f"{'task':<{w}}  {'rule':<{rw}}  domain")
    for t in TASKS.values():
        print(f"{t.name:<{w}}  {t.rule:<{rw}}  {t.domain}")
    return 0


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

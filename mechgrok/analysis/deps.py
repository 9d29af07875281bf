"""What a stored record depended on, and whether it still holds.

Each record says what it was computed from (``deps``), and is used only while all of it still
holds (otherwise it is *stale*: :func:`~mechgrok.analysis.analyze` computes it again;
:func:`~mechgrok.analysis.measures_table` and the summary leave it out):

* ``deps.checkpoint``: the SHA-256 the manifest gives for the checkpoint it was computed on;
* ``deps.split`` and ``deps.config``: the manifest's split hash and a hash of ``config.json``;
* ``deps.final`` (``{"epoch", "sha256"}``): the run's final checkpoint when the record was
  computed, kept for probes that need ``key_freqs`` and for any probe that asked for
  ``ctx.run.final_key_frequencies()``; a run trained further makes them stale;
* ``probe_id``: which code computed it (:mod:`mechgrok.analysis.identity`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mechgrok.probes import Probe
from mechgrok.store import CheckpointInfo, Run

__all__ = ["RunDeps", "reusable", "uses_final"]


def _config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()
                          ).hexdigest()


@dataclass(frozen=True)
class RunDeps:
    """What the run (its manifest and config, as read now) says a fresh record must match."""

    split: str | None
    config: str
    final: dict[str, Any] | None  # {"epoch", "sha256"} of the final checkpoint
    checkpoints: dict[int, str]  # epoch -> sha256

    @classmethod
    def of(cls, run: Run, checkpoints: Sequence[CheckpointInfo] | None = None) -> RunDeps:
        cks = list(run.checkpoints() if checkpoints is None else checkpoints)
        final = {"epoch": cks[-1].epoch, "sha256": cks[-1].sha256} if cks else None
        split = run.manifest.get("split_sha256")
        return cls(split if isinstance(split, str) else None, _config_hash(run.config), final,
                   {c.epoch: c.sha256 for c in cks})

    def for_record(self, epoch: int, uses_final: bool) -> dict[str, Any]:
        deps: dict[str, Any] = {"checkpoint": self.checkpoints.get(epoch), "split": self.split,
                                "config": self.config}
        if uses_final:
            deps["final"] = self.final
        return deps

    def holds(self, r: dict[str, Any]) -> bool:
        """Whether everything ``r`` says it depended on still holds for this run."""
        deps = r.get("deps")
        if not isinstance(deps, dict):
            return False
        sha = self.checkpoints.get(r["epoch"])
        if sha is None or deps.get("checkpoint") != sha:
            return False
        if deps.get("split") != self.split or deps.get("config") != self.config:
            return False
        return "final" not in deps or deps["final"] == self.final


def uses_final(p: Probe) -> bool:
    """Whether every record of ``p`` depends on the final checkpoint (it needs ``key_freqs``)."""
    return "key_freqs" in tuple(p.needs)


def reusable(r: dict[str, Any] | None, rd: RunDeps, pid: str, uses_final: bool) -> bool | None:
    """True: ``r`` can be reused; False: it is stale; None: there is nothing to reuse (no record,
    or an error, which is always retried)."""
    if r is None or r["status"] not in ("ok", "n/a"):
        return None
    if r.get("probe_id") != pid or not rd.holds(r):
        return False
    return not (uses_final and "final" not in r["deps"])

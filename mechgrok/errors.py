"""User-facing errors.

Every problem a user can cause or fix (a wrong task name, an impossible modulus, a corrupt
checkpoint, a full disk, a run directory in use) is raised as a :class:`MechgrokError`. The CLI
prints its message as one line and exits non-zero without a traceback; library users catch it
like any exception. Its subclasses say which kind of thing went wrong.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DiskFullError", "MechgrokError", "RunDirError",
           "SourceError"]


class MechgrokError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(MechgrokError, ValueError):
    """An invalid task, model or training setting."""


class RunDirError(MechgrokError):
    """A path that is not a usable run directory (missing, foreign, locked, finished)."""


class CheckpointError(MechgrokError):
    """A checkpoint or resume file that is missing, truncated, altered or unreadable."""


class DiskFullError(MechgrokError):
    """Writing to the run directory failed for lack of space; earlier files are intact."""

    exit_code = 3


class SourceError(MechgrokError):
    """A file or folder given to ``mechgrok import`` that mechgrok cannot read, or refuses to (a
    pickle without ``--allow-pickle``, one that holds more than tensors and plain data)."""

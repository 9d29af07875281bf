"""``mechgrok``: thin commands over the library. Heavy imports (torch, TransformerLens, plotly)
happen inside the commands, so ``mechgrok --help`` and ``mechgrok tasks`` start instantly.

Every user error is one line on stderr (``mechgrok: error: …``) and a non-zero exit, never a
traceback.

What lives where: :mod:`~mechgrok.cli.parser` (the grammar), :mod:`~mechgrok.cli.flags` (the
config's settings as flags, derived from the config's fields), and the commands:
:mod:`~mechgrok.cli.train` (``train``, ``run``), :mod:`~mechgrok.cli.analysis` (``probes``,
``analyze``, ``report``, ``compare``), :mod:`~mechgrok.cli.sweep`, :mod:`~mechgrok.cli.interop`
(``import``, ``export``), :mod:`~mechgrok.cli.listings` (``tasks``, ``presets``) and
:mod:`~mechgrok.cli.reproduce` (``reproduce``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mechgrok.cli.analysis import print_analysis
from mechgrok.cli.parser import DEFAULT_CHECKPOINTS, build_parser
from mechgrok.cli.train import grokking_epochs
from mechgrok.errors import MechgrokError

__all__ = ["DEFAULT_CHECKPOINTS", "build_parser", "grokking_epochs", "main", "print_analysis"]


def _printable(text: str) -> str:
    """One line, with control characters (a hostile file name's newlines or terminal escapes)
    shown escaped instead of acting on the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MechgrokError as e:
        print(f"mechgrok: error: {_printable(str(e))}", file=sys.stderr)  # noqa: T201
        return e.exit_code
    except KeyboardInterrupt:
        print("mechgrok: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except OSError as e:  # permissions, read-only disks, …: say which file and why
        where = f"{e.filename}: " if e.filename else ""
        print(f"mechgrok: error: {_printable(where + str(e.strerror or e))}",  # noqa: T201
              file=sys.stderr)
        return 1

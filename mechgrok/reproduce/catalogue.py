"""The catalogue: every implemented entry, by name (:data:`CATALOGUE`, :func:`get_entry`).

An entry is listed here only once it is implemented end to end (runs, claims, rules); the papers
issue 14 names that are not here yet are listed in docs/reproductions.md as to do.
"""

from __future__ import annotations

from mechgrok.errors import ConfigError
from mechgrok.reproduce.chughtai import CHUGHTAI
from mechgrok.reproduce.entry import Entry
from mechgrok.reproduce.nanda import NANDA
from mechgrok.reproduce.zhong import ZHONG

__all__ = ["CATALOGUE", "get_entry"]

#: name → entry, in the order ``mechgrok reproduce`` lists them
CATALOGUE: dict[str, Entry] = {e.name: e for e in (NANDA, ZHONG, CHUGHTAI)}


def get_entry(name: object) -> Entry:
    """The entry called ``name``; a :class:`ConfigError` (one line naming the catalogue) for
    any other name."""
    if isinstance(name, str) and name in CATALOGUE:
        return CATALOGUE[name]
    shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:59] + "…"
    raise ConfigError(f"no reproduction called {shown}; the catalogue has: "
                      f"{', '.join(CATALOGUE)} (`mechgrok reproduce` lists them)")

"""The HTML page every report is: its shell, its style, escaping, and writing it to disk.

One file, no network: plotly.js is inlined once in ``<head>`` (:func:`render_page`) and every
figure is a ``<div>`` with its own ``Plotly.newPlot`` call (:func:`figure_html`).

Everything that comes from a file or a user (run ids, paths, probe and value names, summary
values, a sweep's axes and run ids) is escaped for where it goes: :func:`escape` for HTML text
and attributes, :func:`safe_id` for element ids (which plotly also writes into JavaScript),
:func:`script_json` for JSON inside ``<script>``, and :func:`mechgrok.report.figures.text` for
plotly's titles, legends and labels (plotly renders a subset of HTML there).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from mechgrok.errors import MechgrokError
from mechgrok.store import atomic_write_bytes

__all__ = [
    "CSS",
    "PLOTLY_CONFIG",
    "card",
    "escape",
    "figure_html",
    "format_number",
    "missing_html",
    "render_page",
    "safe_id",
    "script_json",
    "write_page",
]

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  margin:0;color:#222;background:#fafafa}
header{background:#1b2a41;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d3e0;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:16px 24px 60px}
nav{font-size:13px;margin:8px 0 16px} nav a{margin-right:14px;color:#1b5fa8}
section{margin-top:26px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:16px 20px;
  display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:4px 28px}
.card table{border-collapse:collapse;font-size:13.5px;width:100%}
.card td{padding:3px 6px;vertical-align:top;border-bottom:1px solid #f0f0f0}
.card td:first-child{color:#666;white-space:nowrap;width:42%}
.fig{background:#fff;border:1px solid #e2e2e2;border-radius:8px;margin:14px 0;padding:8px 10px}
.caption{font-size:13px;color:#555;margin:2px 6px 4px}
.missing{font-size:13px;color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;
  border-radius:6px;padding:8px 12px;margin:8px 0}
.banner{font-size:14px;background:#eef5fd;border:1px solid #bcd6f2;border-radius:8px;
  padding:10px 14px;margin:12px 0}
code{background:#f2f2f2;padding:1px 4px;border-radius:3px}
table.runs{border-collapse:collapse;font-size:13px;background:#fff;width:100%}
table.runs th,table.runs td{border:1px solid #e2e2e2;padding:4px 8px;text-align:left}
table.runs th{background:#f3f5f8}
"""


def escape(x: Any) -> str:
    """HTML-escaped text (safe in element content and in quoted attributes); a lone surrogate
    (a file name that is not UTF-8, say) becomes '?'."""
    return html.escape(str(x)).encode("utf-8", "replace").decode("utf-8")


def format_number(v: Any, fmt: str = ".3f") -> str:
    """A number as text ("—" for none); anything else as its text. Not escaped: wrap in
    :func:`escape`."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(v) if isinstance(v, int) else format(v, fmt)


_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}")


def safe_id(name: str) -> str:
    """An element id for ``name``: itself when it is letters, digits, '_' and '-' (starting with
    a letter), else a slug of it plus a hash, so that no name can leave the ``id="…"``
    attribute or the JavaScript string plotly writes it into (and two names stay distinct)."""
    if _SAFE_ID.fullmatch(name):
        return name
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:60].strip("_-") or "x"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{'' if slug[0].isalpha() else 'x-'}{slug}-{digest}"


_JS_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
              "\u2029": "\\u2029"}


def script_json(text: str) -> str:
    """JSON text made safe to embed in ``<script>``: no ``</script>``, ``<!--``, ``&`` or line
    separators survive (each becomes its \\u escape, which JSON and JavaScript read the same)."""
    return re.sub("[<>&\u2028\u2029]", lambda m: _JS_UNSAFE[m.group()], text)


def render_page(title: str, subtitle: str, body: str) -> str:
    """The whole page: ``<head>`` (style, plotly.js inlined), a header with ``title`` and
    ``subtitle`` (plain text, escaped here) and ``body`` (HTML, already escaped)."""
    from plotly.offline import get_plotlyjs

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{CSS}</style>"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
            f"<main>{body}</main></body></html>\n")


def figure_html(fig: Any, div_id: str, caption: str) -> str:
    """One figure: its ``<div>`` (id :func:`safe_id` of ``div_id``) and the ``Plotly.newPlot``
    call that draws it, with the figure's JSON escaped for ``<script>`` (:func:`script_json`),
    whatever plotly's version does."""
    from plotly.io.json import to_json_plotly

    did = safe_id(div_id)
    d = fig.to_dict()
    layout = d.get("layout", {})
    args = ", ".join(script_json(x) for x in (
        json.dumps(did), to_json_plotly(d.get("data", [])), to_json_plotly(layout),
        json.dumps(PLOTLY_CONFIG)))
    frames = ""
    if d.get("frames"):
        frames = (f".then(function(){{Plotly.addFrames({json.dumps(did)}, "
                  f"{script_json(to_json_plotly(d['frames']))});}})")
    h = layout.get("height")
    height = f"{int(h)}px" if isinstance(h, (int, float)) and not isinstance(h, bool) else "100%"
    return (f'<div class="fig" id="wrap-{did}"><div style="height:{height}; width:100%;">'
            f'<div id="{did}" class="plotly-graph-div" style="height:100%; width:100%;"></div>'
            f'<script>window.PLOTLYENV=window.PLOTLYENV || {{}};'
            f'if (document.getElementById({json.dumps(did)})) {{Plotly.newPlot({args}){frames};}}'
            f'</script></div><p class="caption">{escape(caption)}</p></div>')


def missing_html(message: Any, element_id: str | None = None) -> str:
    """The one line that stands in for a figure with nothing to draw (``message`` escaped)."""
    attr = "" if element_id is None else f' id="{element_id}"'
    return f'<div class="missing"{attr}>{escape(message)}</div>'


def card(rows: list[tuple[str, str]]) -> str:
    """A two-column table of (label, value) rows: labels escaped here, values already HTML."""
    return "<table>" + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows) + \
        "</table>"


def write_page(path: Path, text: str) -> None:
    """Write a report atomically, readable by others like any document (not a private file)."""
    if path.exists() and path.is_dir():
        raise MechgrokError(f"{path} is a directory; give a file name ending in .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8", "replace"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # a report is a document to share, not a private temp file

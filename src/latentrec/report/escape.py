"""Escaping of free text (display names, row labels, titles from the config) in what the report writes.

Markdown cells: `|` would add a column and raw HTML would pass into the rendered page. LaTeX: a special
character would be markup (`\\input{...}` would run). CSV: a cell starting with = + - @ is a formula to a
spreadsheet. The `snakemake --report` HTML embeds rule params inside a <script>. Kept light (no pandas at
import): common.smk imports it.
"""

from __future__ import annotations

import json
import re

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_text(text) -> str:
    """Free text in Markdown outside a table (a heading, a note): raw HTML neutralised, one line."""
    s = str(text)
    for ch, rep in _HTML.items():  # & first, so the entities written here stay as written
        s = s.replace(ch, rep)
    return " ".join(s.splitlines()) if "\n" in s or "\r" in s else s


def md_cell(text) -> str:
    """Free text in a Markdown table cell: as md_text, and `|` escaped so that it adds no column."""
    return md_text(text).replace("\\", "\\\\").replace("|", "\\|")


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX))


def tex(text) -> str:
    """Free text in LaTeX: every special character printed as itself, none read as markup."""
    return _TEX_RE.sub(lambda m: _TEX[m.group()], " ".join(str(text).splitlines()))


_FORMULA_START = ("=", "+", "-", "@")


def csv_cell(value):
    """A report CSV cell: text starting like a formula gets a leading `'`; numbers (`-0.12`, also as text)
    stay numbers."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def json_for_html(obj) -> str:
    """JSON with < > & as \\u escapes: any JSON parser reads it back identically, and embedded in HTML (the
    Snakemake report's <script>) no string can close the script or open an element."""
    s = json.dumps(obj, sort_keys=True)
    return s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")

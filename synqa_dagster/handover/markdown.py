"""Markdown and front-matter helpers shared by the dataset card (:mod:`.card`) and the funnel report
(:mod:`.funnel_chart`): every string taken from rows or configs goes through :func:`md_escape`, so hostile text
stays text. A leaf module (no synqa imports), so both can import it at the top without an import cycle.
"""

from __future__ import annotations

import html
import re
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import yaml

__all__ = ["md_escape", "md_code", "md_link_target", "md_table", "front_matter"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|~])")
_SAFE_CODE = re.compile(r"[A-Za-z0-9._:/=+@,\-]+")


def md_escape(value: Any, max_chars: int | None = None) -> str:
    """``value`` as inert inline markdown text: one line, markdown syntax backslash-escaped, HTML as entities.

    Control characters and newlines become spaces (a value can never start a new block, a table row, a heading
    or a ``---`` front-matter fence), ``\\ ` * _ { } [ ] ( ) # + - ! | ~`` are backslash-escaped (so ``|``
    cannot split a table cell) and ``& < >`` become HTML entities (so ``<script>`` is shown, never run).
    ``max_chars`` truncates (before escaping) with an ellipsis. ``None`` gives an empty string.
    """
    text = "" if value is None else str(value)
    text = " ".join(_CONTROL.sub(" ", text).split())
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(1, max_chars - 1)] + "…"
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return html.escape(text, quote=False)


def md_code(value: Any) -> str:
    """``value`` as an inline code span when it is a plain token (hashes, ids, paths: letters, digits and
    ``. _ : / = + @ , -``), else as :func:`md_escape` text (a code span shows backslashes and entities literally,
    so it cannot hold escaped hostile text)."""
    text = "" if value is None else str(value)
    return f"`{text}`" if _SAFE_CODE.fullmatch(text) else md_escape(text)


def md_link_target(path: str) -> str:
    """A relative link target: percent-encoded so spaces, brackets or quotes in a file name cannot break out."""
    return quote(str(path), safe="/._-")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None, escape: bool = True) -> str:
    """A GitHub-flavoured markdown table; cells are escaped with :func:`md_escape` unless ``escape`` is False
    (then the caller has escaped them); ``header`` is our own text, written as is. ``align`` is one letter per
    column: ``l`` or ``r``."""
    cells = [[md_escape(c) if escape else ("" if c is None else str(c)) for c in row] for row in rows]
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _single_line(value: Any) -> Any:
    """Front-matter values: strings on one line (no fence can appear), containers recursively."""
    if isinstance(value, dict):
        return {str(k): _single_line(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_single_line(v) for v in value]
    if isinstance(value, str):
        return " ".join(_CONTROL.sub(" ", value).split())
    return value


def front_matter(data: dict[str, Any]) -> str:
    """``---``-fenced YAML (``yaml.safe_dump``, single-line strings, key order kept)."""
    dumped = yaml.safe_dump(_single_line(data), sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=False)
    return f"---\n{dumped}---\n"

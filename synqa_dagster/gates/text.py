"""Text normalisation and tokenisation shared by every gate.

All gates that *match* text (dedup, contamination, quality rules on words and lines) go through
:func:`normalize_text` so that two texts that differ only in case, Unicode presentation form, punctuation or
spacing are treated as the same text. The rules are, in order:

1. Unicode NFKC (compatibility forms folded: full-width letters, ligatures, non-breaking spaces...);
2. case folding (``str.casefold``: like ``lower`` but also ``ß`` -> ``ss``);
3. apostrophes (``'`` ``’`` ``‘`` ``ʼ`` `````) and format characters (Unicode ``Cf``: zero-width spaces and
   joiners, soft hyphens, BOM) are removed, so ``don't`` -> ``dont``;
4. every other punctuation (``P*``), symbol (``S*``), separator (``Z*``), control (``Cc``) or whitespace
   character becomes a space;
5. space runs collapse to one space; leading and trailing spaces are stripped.

Letters, digits and combining marks (``M*``: needed by Devanagari, Arabic, Thai...) are kept. The normalised
text therefore contains words separated by single spaces and never a newline: gates that need lines split the
raw text first and normalise each line. :func:`words` is ``normalize_text(s).split()``.

:func:`normalize_many` gives exactly ``[normalize_text(t) for t in texts]`` several times faster (numpy over a
chunk of texts); use it for whole tables.

References:
    - datatrove's ``simplify_text`` (``datatrove.utils.text``), which applies the same kind of normalisation
      before hashing documents for deduplication.

The second half of the module holds vectorised helpers over *many* normalised texts at once, shared by the
gates that hash words or shingles (dedup, quality): :func:`join_utf8` (one UTF-8 byte array), :func:`word_spans`
(byte spans of every word) and :func:`span_hash64` (a 64-bit hash of every span, equal to :func:`bytes_hash64`
of the span's bytes).
"""

from __future__ import annotations

import math
import sys
import unicodedata
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "APOSTROPHES",
    "is_missing",
    "jaccard",
    "bytes_hash64",
    "join_utf8",
    "mix64",
    "mix64_int",
    "normalize_lines",
    "normalize_many",
    "normalize_text",
    "span_hash64",
    "word_ngrams",
    "word_spans",
    "words",
]

#: Characters deleted outright (not turned into a space), so contractions stay one word.
APOSTROPHES = "'\u2019\u2018\u02bc`"

_KEEP, _SPACE, _DELETE = 0, 1, 2


def _is_space_class(char: str, category: str) -> bool:
    return category[0] in "PSZ" or category == "Cc" or char.isspace()


def _ascii_table() -> bytes:
    """256-byte ``bytes.translate`` table for ASCII: rule 2 (A-Z -> a-z) and rule 4 (-> space)."""
    table = bytearray(range(256))
    for code in range(128):
        char = chr(code)
        if _is_space_class(char, unicodedata.category(char)):
            table[code] = ord(" ")
        elif char.isupper():
            table[code] = ord(char.lower())
    return bytes(table)


_ASCII_TABLE = _ascii_table()
_ASCII_TABLE_LINES = _ASCII_TABLE[:10] + b"\n" + _ASCII_TABLE[11:]  # same, but newlines survive
_ASCII_DELETE = "".join(c for c in APOSTROPHES if ord(c) < 128).encode("ascii")


@lru_cache(maxsize=1)
def _codepoint_classes() -> np.ndarray:
    """Rule 3/4 class (keep / space / delete) of every code point as a uint8 lookup table (built once, ~0.3 s)."""
    classes = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Cf":
            classes[code] = _DELETE
        elif _is_space_class(char, category):
            classes[code] = _SPACE
    classes[[ord(c) for c in APOSTROPHES]] = _DELETE
    return classes


def _fold(s: str) -> str:
    """Rules 1 and 2."""
    return unicodedata.normalize("NFKC", s).casefold()


def _translate_codepoints(folded: str, separators: np.ndarray | None = None) -> np.ndarray:
    """Code points of ``folded`` after rules 3 and 4 (spaces not collapsed yet). Positions in ``separators``
    (document boundaries of a joined chunk) are kept as newlines (10)."""
    cps = np.frombuffer(folded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).copy()
    cls = _codepoint_classes()[cps]
    cps[cls == _SPACE] = 32
    if separators is not None and len(separators):
        cps[separators] = 10
        cls[separators] = _KEEP
    return cps[cls != _DELETE]


def _collapse(a: np.ndarray) -> np.ndarray:
    """Rule 5 on an array of characters (uint8 bytes or uint32 code points) holding newline-separated texts:
    collapse space runs, strip spaces at either end of each text."""
    if len(a) == 0:
        return a
    space = a == 32
    boundary = space | (a == 10)
    keep = ~space
    keep[1:] |= ~boundary[:-1]  # the first space after a word character survives
    b = a[keep]
    drop = b == 32
    drop[:-1] &= b[1:] == 10  # ... unless the text ends right after it
    return b[~drop]


def normalize_text(s: str) -> str:
    """Normalise ``s`` for matching (rules 1-5 of the module docstring).

    Args:
        s: any string (``None``/NaN give ``""``; other non-strings are converted with ``str``).

    Returns:
        The normalised text: single-space separated words, no leading/trailing space, no newline.

    Examples:
        >>> normalize_text("  Don't   STOP—believing!\\n(ok?)")
        'dont stop believing ok'
        >>> normalize_text("Ｆｕｌｌ‐width ﬁne Straße")
        'full width fine strasse'
    """
    if is_missing(s):
        return ""
    if not isinstance(s, str):
        s = str(s)
    if s.isascii():
        return " ".join(s.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).decode("ascii").split())
    return " ".join(_translate_codepoints(_fold(s)).tobytes().decode("utf-32-le", "surrogatepass").split())


def normalize_many(texts: Iterable[Any], chunk_docs: int = 8192) -> list[str]:
    """:func:`normalize_text` over many texts (e.g. a pandas Series); missing values become ``""``.

    Gives exactly ``[normalize_text(t) for t in texts]``, several times faster: texts are translated a chunk at
    a time (ASCII ones with a byte table, others through a code point lookup table), joined by newlines, and
    their spaces collapsed with numpy.
    """
    items = list(texts)
    out = [""] * len(items)
    ascii_idx: list[int] = []
    other_idx: list[int] = []
    for i, t in enumerate(items):
        if is_missing(t):
            continue
        if not isinstance(t, str):
            t = items[i] = str(t)
        (ascii_idx if t.isascii() else other_idx).append(i)
    for lo in range(0, len(ascii_idx), chunk_docs):
        chunk = ascii_idx[lo : lo + chunk_docs]
        joined = b"\n".join([items[i].encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE) for i in chunk])
        collapsed = _collapse(np.frombuffer(joined, dtype=np.uint8)).tobytes()
        for i, part in zip(chunk, collapsed.split(b"\n")):
            out[i] = part.decode("ascii")
    for lo in range(0, len(other_idx), chunk_docs):
        chunk = other_idx[lo : lo + chunk_docs]
        folded = [_fold(items[i]) for i in chunk]
        separators = np.cumsum([len(f) + 1 for f in folded[:-1]], dtype=np.int64) - 1
        cps = _collapse(_translate_codepoints("\n".join(folded), separators))
        for i, part in zip(chunk, cps.tobytes().decode("utf-32-le", "surrogatepass").split("\n")):
            out[i] = part
    return out


def normalize_lines(s: str) -> list[str]:
    """:func:`normalize_text` of every line of ``s`` (split on ``\\n``), in one pass for ASCII text.

    Examples:
        >>> normalize_lines("Hello,  World!\\n\\n  - item ONE")
        ['hello world', '', 'item one']
    """
    if is_missing(s):
        return [""]
    if not isinstance(s, str):
        s = str(s)
    if not s.isascii():
        return [normalize_text(line) for line in s.split("\n")]
    folded = s.encode("ascii").translate(_ASCII_TABLE_LINES, _ASCII_DELETE).decode("ascii")
    return [" ".join(line.split()) for line in folded.split("\n")]


def words(s: str) -> list[str]:
    """Word tokens of ``s`` after :func:`normalize_text` (split on spaces).

    Examples:
        >>> words("Hello, World! It's 9:30.")
        ['hello', 'world', 'its', '9', '30']
    """
    return normalize_text(s).split()


def word_ngrams(tokens: Sequence[str], n: int) -> list[str]:
    """Word n-grams of ``tokens`` joined by single spaces; a sequence shorter than ``n`` gives one n-gram of all
    its tokens (none if it is empty), so short texts still have a non-empty n-gram set.

    Examples:
        >>> word_ngrams(["a", "b", "c", "d"], 3)
        ['a b c', 'b c d']
        >>> word_ngrams(["a", "b"], 3)
        ['a b']
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not tokens:
        return []
    if len(tokens) < n:
        return [" ".join(tokens)]
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def jaccard(a: set[Any] | frozenset[Any], b: set[Any] | frozenset[Any]) -> float:
    """Exact Jaccard similarity ``|a ∩ b| / |a ∪ b|`` of two sets (0.0 when both are empty)."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def is_missing(value: Any) -> bool:
    """True for ``None``, float NaN and pandas ``NA``-like scalars."""
    if value is None:
        return True
    if isinstance(value, str):
        return False
    if isinstance(value, float) and math.isnan(value):
        return True
    try:  # pandas.NA, numpy NaN scalars
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------- vectorised

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
#: Base of the polynomial span hash (odd, so it is invertible modulo 2**64).
_POLY = 0x100000001B3
_POLY_INV = pow(_POLY, -1, 1 << 64)
_LEN_MUL = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrapping arithmetic); returns ``x``."""
    x ^= x >> _U64(30)
    x *= _U64(_MIX1)
    x ^= x >> _U64(27)
    x *= _U64(_MIX2)
    x ^= x >> _U64(31)
    return x


def mix64_int(x: int) -> int:
    """splitmix64 finaliser of one Python int (scalar twin of :func:`mix64`)."""
    x ^= x >> 30
    x = (x * _MIX1) & _MASK64
    x ^= x >> 27
    x = (x * _MIX2) & _MASK64
    return x ^ (x >> 31)


def bytes_hash64(data: bytes) -> int:
    """64-bit hash of a byte string: ``sum((byte_j + 1) * POLY**j) mod 2**64``, xor its length times a constant,
    splitmix64-finalised. The scalar reference of :func:`span_hash64`."""
    h, power = 0, 1
    for byte in data:
        h = (h + (byte + 1) * power) & _MASK64
        power = (power * _POLY) & _MASK64
    return mix64_int(h ^ ((len(data) * _LEN_MUL) & _MASK64))


@lru_cache(maxsize=8)
def _powers(base: int, size: int) -> np.ndarray:
    """``base**j mod 2**64`` for ``j < size`` (read-only, cached)."""
    out = np.full(size, base, dtype=np.uint64)
    out[0] = 1
    np.cumprod(out, out=out)
    out.flags.writeable = False
    return out


def _power_table(base: int, size: int) -> np.ndarray:
    """Powers of ``base`` for at least ``size`` exponents (sizes rounded up to powers of two for the cache)."""
    return _powers(base, 1 << max(10, int(size - 1).bit_length()))


def span_hash64(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`bytes_hash64` of every byte span ``data[starts[k]:ends[k]]`` at once (uint8 in, uint64 out).

    One prefix sum of ``(byte + 1) * POLY**position`` gives every span's polynomial, shifted back to
    ``POLY**0`` with the inverse powers (wrapping uint64 arithmetic throughout).
    """
    n = len(data)
    pw = _power_table(_POLY, n + 1)
    ipw = _power_table(_POLY_INV, n + 1)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    terms = data.astype(np.uint64)
    terms += _U64(1)
    terms *= pw[:n]
    np.cumsum(terms, out=prefix[1:])
    h = prefix[ends] - prefix[starts]
    h *= ipw[starts]
    h ^= (ends - starts).astype(np.uint64) * _U64(_LEN_MUL)
    return mix64(h)


def join_utf8(normalized: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised texts joined by newlines as one UTF-8 byte array, and each text's starting byte offset.

    Normalised texts contain no newline, so newlines are exactly the separators.
    """
    data = np.frombuffer("\n".join(normalized).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(data == 10) + 1)) if len(normalized) else np.empty(0, np.int64)
    return data, starts


def word_spans(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte spans ``(starts, ends)`` of the words (maximal runs without space or newline) of a :func:`join_utf8`
    array, in order."""
    if len(data) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    gap = (data == 32) | (data == 10)
    edge = np.empty(len(data) + 1, dtype=bool)
    edge[0] = edge[-1] = True
    edge[1:-1] = gap[1:] != gap[:-1]
    bounds = np.flatnonzero(edge)  # alternating starts and ends of word / gap runs
    first_is_word = not gap[0]
    starts = bounds[0 if first_is_word else 1 :: 2]
    ends = bounds[1 if first_is_word else 2 :: 2]
    return starts[: len(ends)], ends

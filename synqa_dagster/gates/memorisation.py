"""Memorisation gate: drop synthetic rows that repeat a real customer message (a long verbatim span, or an
embedding near-copy of the whole message).

A teacher model copies from its prompt: the seed messages a batch is grounded on (and the reference sample) are
real customer data, and a synthetic row that repeats a long verbatim span of one of them leaks it into the
training set. The gate is built once with the real rows (``source_id``, ``text``; see
:func:`synqa_dagster.corpus.real.real_rows`) and then judges tables of candidates. Pure and Dagster-free.

Two checks, in this order (a row dropped by the first is not judged by the second):

``memorised_span``
    The row shares with a real row a contiguous span of at least ``min_span_words`` words **or** at least
    ``min_span_chars`` characters, compared after normalisation. The score is the longest shared span in words;
    the reason names the real row, the span's length in words and characters and quotes (at most 60 characters
    of) the shared span.
``memorised_near_copy``
    The row's embedding (per column of ``embedding_columns``: the whole ``text`` with the shared candidate
    vectors, the customer turn ``instruction`` encoded once by the gate) has cosine at or above the calibrated
    threshold with a real row of at least ``embedding_min_words`` words: the real message with a few words
    changed, dropped, swapped or reordered, which breaks every long verbatim span. The score is the cosine.
    The threshold depends on the vectors: 0.95 on the static model2vec vectors of the default ``static_cascade``
    route (used as they are: a copy is a lexical matter, and the static mean-of-tokens vectors separate copies
    from same-intent paraphrases better than MiniLM, so MiniLM never re-scores here), 0.96 on MiniLM's (route
    ``minilm``). Calibrated on the demo's real rows: the closest two *different* customers' messages reach 0.930
    (static) / 0.953 (MiniLM), SemEval STS paraphrases that are not copies at most 0.944 / 0.980.

**Normalisation** (both sides alike): PII placeholders (``[EMAIL]``, ``[ORDER_ID]``, ``<PHONE>``...) and
PII-looking values (e-mail addresses, URLs, numbers of 6+ digits, ids such as ``LK-52288``) become one mask word,
consecutive masks one; then :func:`synqa_dagster.gates.text.normalize_text` (Unicode NFKC, case folding,
apostrophes removed, every other punctuation / symbol / whitespace run -> one space). A mask word matches a mask
word (so a copy whose e-mail address the PII gate redacted still lines up with the real message that carries
the address) but counts for neither words nor characters. A redacted value the patterns do not recognise in the
real row (a name, a street address) breaks the span there: what remains on either side must reach the
thresholds by itself.

**Span lengths.** A span's length in words counts its unmasked words; its length in characters is that of its
normalised text (unmasked words joined by single spaces): ``"I've  checked, twice!"`` is ``ive checked twice``,
3 words, 17 characters.

**Index** (``O(total real words)``). For every word position ``i`` of a real row, the *leak window* is the
shortest word span starting at ``i`` that meets either threshold (``min_span_words`` words, or
``min_span_chars`` characters — whichever end comes first); a row shares a qualifying span with a real row if
and only if it contains one of that real row's leak windows verbatim (a qualifying shared span contains the
leak window starting at its own first word, and a leak window is itself qualifying). So one 64-bit hash per real
word position is indexed (the UTF-8 bytes of the window's normalised text,
:func:`synqa_dagster.gates.text.span_hash64`), in a sorted array with postings (real row, word position;
at most :data:`MAX_POSTINGS` per window, the membership test stays exact) behind a bitmap prefilter.

**Lookup** (``O(row words)``). A row computes its own leak window from every word position the same way (the
same words give the same window), hashes them in one vectorised pass per chunk of rows and looks them up. A hit
gives a (row position, real position) pair; the shared span is extended word by word along that diagonal to its
full length, and the row's longest span (ties: more characters, then the earlier real row) is reported.

**Calibration and speed**: ``docs/measurements/memorisation.md``, reproduced by
``scripts/measure_memorisation.py`` (real rows: the demo's seeds and reference messages; negatives: the demo's
generated candidates, same-intent messages of other real customers, SemEval STS paraphrases that are not
copies; positives: light edits of real messages).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from synqa_dagster.gates.base import TEXT_COLUMN, Gate, GateResult
from synqa_dagster.gates.text import bytes_hash64, is_missing, join_utf8, normalize_many, span_hash64, word_spans

if TYPE_CHECKING:  # pragma: no cover
    from synqa_dagster.embedding import Embedder

__all__ = [
    "CATEGORY_NEAR_COPY",
    "CATEGORY_SPAN",
    "MAX_POSTINGS",
    "MemorisationGate",
    "MemorisationGateConfig",
    "SpanMatches",
    "mask_pii",
    "normalize_for_memorisation",
    "plant_memorisation",
]

CATEGORY_SPAN = "memorised_span"
CATEGORY_NEAR_COPY = "memorised_near_copy"

#: Postings kept per indexed window (real rows sharing that exact window); beyond it a window still matches, and
#: the reason names one of the first ones (real corpora rarely repeat a 10-word window; this bounds the cost).
MAX_POSTINGS = 32
#: Longest excerpt quoted in a reason, in characters (the ellipsis included).
EXCERPT_CHARS = 60

# -------------------------------------------------------------------------------------------- normalisation

#: The word every PII placeholder / PII-looking value becomes (lower case letters only: it survives
#: normalisation as one word; no real text holds it).
MASK_WORD = "xqpiimaskx"
_MASK_HASH = np.uint64(bytes_hash64(MASK_WORD.encode("ascii")))
#: How a mask word reads in a quoted excerpt.
MASK_EXCERPT = "[PII]"

#: PII placeholders: ``[EMAIL]``, ``[ORDER_ID]``, ``[CARD NUMBER]`` (the PII gate's), ``<PERSON>``, ``{{EMAIL}}``.
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9]*(?:[_ -][A-Z0-9]+)*\]|<[A-Z][A-Z0-9_]*>|\{\{ ?[A-Z][A-Z0-9_]* ?\}\}")
#: E-mail addresses (the look-behind starts each attempt at the start of a local part: linear time).
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']{1,2000}")
#: Ids with a letter prefix (``LK-52288``, ``ORD#12345``) and digit groups with 6+ digits (phones, cards, long
#: order numbers; the count is checked in :func:`_mask_digits`).
_ID = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{1,6}[-#]?\d{4,}(?![A-Za-z0-9])")
_DIGITS = re.compile(r"\d[\d ().-]{4,}\d")
_HAS_DIGIT = re.compile(r"\d")
_MASK_RUN = re.compile(rf"{MASK_WORD}(?:[\W_]+{MASK_WORD})+")
_MASKED = f" {MASK_WORD} "


def _mask_digits(m: re.Match) -> str:
    s = m.group(0)
    return _MASKED if sum(c.isdigit() for c in s) >= 6 else s


def mask_pii(text: Any) -> str:
    """``text`` with PII placeholders and PII-looking values replaced by :data:`MASK_WORD` (runs of them by one).

    Each pattern runs only when the text holds its trigger character, and every pattern is linear in the text.

    Examples:
        >>> mask_pii("Mail me at [EMAIL] or jo@example.com, order LK-52288 (5-7 days).").split()
        ['Mail', 'me', 'at', 'xqpiimaskx', 'or', 'xqpiimaskx', ',', 'order', 'xqpiimaskx', '(5-7', 'days).']
    """
    if is_missing(text):
        return ""
    if not isinstance(text, str):
        text = str(text)
    out = text
    if "[" in out or "<" in out or "{" in out:
        out = _PLACEHOLDER.sub(_MASKED, out)
    if "@" in out:
        out = _EMAIL.sub(_MASKED, out)
    if "://" in out or "www." in out:
        out = _URL.sub(_MASKED, out)
    if _HAS_DIGIT.search(out):
        out = _ID.sub(_MASKED, out)
        out = _DIGITS.sub(_mask_digits, out)
    if out.count(MASK_WORD) > 1:
        out = _MASK_RUN.sub(MASK_WORD, out)
    return out


def normalize_for_memorisation(text: Any) -> str:
    """The normalisation both real rows and candidates go through (:func:`mask_pii`, then
    :func:`synqa_dagster.gates.text.normalize_text`).

    Examples:
        >>> normalize_for_memorisation("I've  CHECKED my spam folder — twice!\\nEmail: [EMAIL]")
        'ive checked my spam folder twice email xqpiimaskx'
    """
    return normalize_many([mask_pii(text)])[0]


@dataclass
class _Words:
    """The words of many normalised texts (concatenated): word ``j`` is ``data[starts[j]:ends[j]]`` of text
    ``doc[j]``; ``offsets[t]:offsets[t+1]`` are text ``t``'s words. ``counted`` is False for mask words; ``W`` /
    ``L`` are prefix sums of counted words and of (characters + 1) over counted words (length ``n_words + 1``)."""

    data: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    doc: np.ndarray
    offsets: np.ndarray
    hashes: np.ndarray
    counted: np.ndarray
    W: np.ndarray
    L: np.ndarray

    @classmethod
    def build(cls, texts: Sequence[Any]) -> "_Words":
        norm = normalize_many([mask_pii(t) for t in texts])
        data, doc_starts = join_utf8(norm)
        starts, ends = word_spans(data)
        n = len(norm)
        doc = (np.searchsorted(doc_starts, starts, side="right") - 1).astype(np.int64) if n else np.zeros(0, np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        if n:
            np.cumsum(np.bincount(doc, minlength=n), out=offsets[1:])
        hashes = span_hash64(data, starts, ends) if len(starts) else np.zeros(0, dtype=np.uint64)
        counted = hashes != _MASK_HASH
        if len(data) and int(data.max(initial=0)) >= 128:  # characters, not UTF-8 bytes
            cp = np.zeros(len(data) + 1, dtype=np.int64)
            np.cumsum((data & 0xC0) != 0x80, out=cp[1:])
            chars = cp[ends] - cp[starts]
        else:
            chars = ends - starts
        W = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(counted, out=W[1:])
        L = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(np.where(counted, chars + 1, 0), out=L[1:])
        return cls(data, starts.astype(np.int64), ends.astype(np.int64), doc, offsets, hashes, counted, W, L)

    def __len__(self) -> int:
        return len(self.starts)

    def leak_windows(self, min_words: int, min_chars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(first word, last word, hash)`` of the leak window starting at every unmasked word (the shortest
        span from it with ``min_words`` unmasked words or ``min_chars`` characters, inside its text)."""
        nw = len(self.starts)
        i = np.flatnonzero(self.counted)
        if not len(i):
            z = np.zeros(0, dtype=np.int64)
            return z, z, np.zeros(0, dtype=np.uint64)
        end_w = np.searchsorted(self.W, self.W[i] + min_words, side="left") - 1
        end_c = np.searchsorted(self.L, self.L[i] + min_chars + 1, side="left") - 1
        end = np.minimum(end_w, end_c)
        ok = end < nw
        i, end = i[ok], end[ok]
        ok = self.doc[end] == self.doc[i]
        i, end = i[ok], end[ok]
        return i, end, span_hash64(self.data, self.starts[i], self.ends[end])

    def span_words(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.W[b + 1] - self.W[a]

    def span_chars(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.L[b + 1] - self.L[a] - 1

    def text_of(self, a: int, b: int) -> str:
        return self.data[self.starts[a] : self.ends[b]].tobytes().decode("utf-8", "replace")


def _excerpt(span_text: str, limit: int = EXCERPT_CHARS) -> str:
    """A quotable excerpt of a normalised span: mask words shown as ``[PII]``, anything that is not a letter,
    digit, combining mark or space replaced by ``?`` (normalised text holds no punctuation, quotes, markup or
    control characters; this also covers private-use and unassigned code points), cut at a word boundary to
    ``limit`` characters with an ellipsis."""
    import unicodedata

    words = [MASK_EXCERPT if w == MASK_WORD else w for w in span_text.split(" ")]
    text = " ".join(words)
    clean = "".join(
        c if c in " []" or c.isalnum() or unicodedata.category(c)[0] == "M" else "?" for c in text
    )
    if len(clean) <= limit:
        return clean
    cut = clean[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


_SAFE_ID = re.compile(r"[^\w:./@+#-]")


def _safe_id(source_id: Any) -> str:
    """A source id as cited in a reason: word characters and ``: . / @ + # -`` only (others -> ``_``), at most
    80 characters."""
    s = _SAFE_ID.sub("_", str(source_id))
    return s if len(s) <= 80 else s[:79] + "…"


# ------------------------------------------------------------------------------------------------------ config


class MemorisationGateConfig(BaseModel):
    """Configuration of :class:`MemorisationGate`.

    Attributes:
        min_span_words: a row that shares a contiguous span of at least this many (normalised, unmasked) words
            with a real row is a ``memorised_span`` leak.
        min_span_chars: ... or a span of at least this many characters of normalised text (unmasked words joined
            by single spaces): catches shorter spans of long words. Both thresholds are applied through the
            same per-position leak windows (see the module docstring), so neither costs a second index.
        columns: row columns the span check reads (default ``text``: every turn, joined; a column the rows lack
            is skipped and named in the metrics).
        use_embeddings: run the embedding near-copy check (needs an embedder, or precomputed vectors of both
            the real rows and the candidates).
        embedding_columns: columns compared by embedding: ``text`` uses the shared candidate vectors passed to
            :meth:`MemorisationGate.evaluate` (encoded when none are passed); any other column (default
            ``instruction``, the customer turn, where a copied message sits) is encoded by the gate's embedder.
            A whole-row vector alone misses a copied message inside a longer row (measured median cosine 0.69 static,
            0.61 MiniLM).
        embedding_threshold: cosine at or above which a row is a ``memorised_near_copy`` when the vectors are
            MiniLM's (embedding route ``minilm``).
        static_embedding_threshold: the same for the static model2vec vectors (route ``static_cascade``, the
            default; ``encode`` of a :class:`~synqa_dagster.embedding.CascadeEmbedder`). Both calibrated in
            ``docs/measurements/memorisation.md``: same-intent messages of other customers and paraphrases stay
            below, messages with a few words changed / swapped / reordered reach it.
        embedding_min_words: real rows with fewer normalised words are not compared by embedding (a short generic
            message — "refund", "cant log in" — is said in the same words by many customers: a synthetic row
            repeating it identifies nobody; measured: real customers' own short messages reach cosine 1.0 with
            each other).
        embedding_chunk_size: candidate rows per similarity matrix product (bounds memory).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_span_words: int = Field(10, ge=2, le=10_000, description="Shared contiguous words that make a leak.")
    min_span_chars: int = Field(50, ge=1, description="Shared contiguous characters (normalised) that make a leak.")
    columns: tuple[str, ...] = Field((TEXT_COLUMN,), min_length=1, description="Columns the span check reads.")
    use_embeddings: bool = Field(True, description="Run the embedding near-copy check.")
    embedding_columns: tuple[str, ...] = Field(
        (TEXT_COLUMN, "instruction"), description="Columns compared by embedding (text: the shared vectors)."
    )
    embedding_threshold: float = Field(
        0.96, gt=0.0, le=1.0, description="Near-copy cosine on MiniLM vectors (route minilm); calibrated."
    )
    static_embedding_threshold: float = Field(
        0.95, gt=0.0, le=1.0,
        description="Near-copy cosine on static model2vec vectors (route static_cascade); calibrated.",
    )
    embedding_min_words: int = Field(8, ge=1, description="Real rows shorter than this are not compared by embedding.")
    embedding_chunk_size: int = Field(4096, ge=1, description="Candidate rows per similarity matmul.")

    @field_validator("columns", "embedding_columns")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"columns must be unique, got {list(v)}")
        return v


# -------------------------------------------------------------------------------------------------- the index


@dataclass
class SpanMatches:
    """Longest shared span per text (:meth:`MemorisationGate.span_matches`).

    Attributes:
        source: position of the real row in :attr:`MemorisationGate.real_rows` (``-1``: no qualifying span).
        words: the span's unmasked words (0 for none).
        chars: its normalised characters (0 for none).
        excerpt: the quoted excerpt (``None`` for none).
    """

    source: np.ndarray
    words: np.ndarray
    chars: np.ndarray
    excerpt: list[str | None]

    @classmethod
    def empty(cls, n: int) -> "SpanMatches":
        return cls(np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), [None] * n)


class _SpanIndex:
    """Leak windows of the real rows: sorted distinct hashes, CSR postings (global real word positions)."""

    def __init__(self, words: _Words, min_words: int, min_chars: int):
        self.words = words
        self.min_words = min_words
        self.min_chars = min_chars
        first, _, h = words.leak_windows(min_words, min_chars)
        order = np.lexsort((first, h))
        h, first = h[order], first[order]
        keys, starts, counts = np.unique(h, return_index=True, return_counts=True)
        kept = np.minimum(counts, MAX_POSTINGS)
        self.keys = keys
        self.offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(kept, out=self.offsets[1:])
        take = np.repeat(starts, kept) + (np.arange(int(kept.sum())) - np.repeat(self.offsets[:-1], kept))
        self.postings = first[take]
        self.windows = int(len(h))
        bits = int(min(26, max(16, np.ceil(np.log2(max(1, len(keys)) * 64)))))
        self._mask = np.uint64((1 << bits) - 1)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[(keys & self._mask).astype(np.intp)] = True

    def __len__(self) -> int:
        return len(self.keys)

    def match(self, texts: Sequence[Any], real_ids: np.ndarray) -> SpanMatches:
        """Longest qualifying shared span of every text (one chunk; see :meth:`MemorisationGate.span_matches`)."""
        n = len(texts)
        out = SpanMatches.empty(n)
        if not len(self.keys) or not n:
            return out
        cw = _Words.build(texts)
        i, _, h = cw.leak_windows(self.min_words, self.min_chars)
        maybe = self._bitmap[(h & self._mask).astype(np.intp)]
        i, h = i[maybe], h[maybe]
        pos = np.minimum(np.searchsorted(self.keys, h), len(self.keys) - 1)
        found = self.keys[pos] == h
        i, kpos = i[found], pos[found]
        if not len(i):
            return out
        counts = self.offsets[kpos + 1] - self.offsets[kpos]
        ci = np.repeat(i, counts)  # candidate word (global in cw)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        rq = self.postings[np.repeat(self.offsets[kpos], counts) + within]  # real word (global)
        rw = self.words
        diag = rq - ci
        row = cw.doc[ci]
        src = rw.doc[rq]
        order = np.lexsort((ci, diag, src, row))
        ci, rq, diag, row, src = ci[order], rq[order], diag[order], row[order], src[order]
        # a run on one diagonal: consecutive candidate positions; its first pair starts a maximal shared span
        new = np.ones(len(ci), dtype=bool)
        new[1:] = (row[1:] != row[:-1]) | (src[1:] != src[:-1]) | (diag[1:] != diag[:-1]) | (ci[1:] != ci[:-1] + 1)
        a, q, r, s = ci[new], rq[new], row[new], src[new]
        # extend every span word by word (vectorised over spans) to its full length
        c_end = cw.offsets[r + 1]  # one past the candidate text's last word
        r_end = rw.offsets[s + 1]
        length = np.zeros(len(a), dtype=np.int64)
        active = np.ones(len(a), dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            x, y = a[idx] + length[idx], q[idx] + length[idx]
            ok = (x < c_end[idx]) & (y < r_end[idx])
            ok[ok] = cw.hashes[x[ok]] == rw.hashes[y[ok]]
            length[idx[ok]] += 1
            active[idx[~ok]] = False
        b = a + length - 1
        words = cw.span_words(a, b)
        chars = cw.span_chars(a, b)
        qualifies = (words >= self.min_words) | (chars >= self.min_chars)
        a, b, r, s = a[qualifies], b[qualifies], r[qualifies], s[qualifies]
        words, chars = words[qualifies], chars[qualifies]
        if not len(a):
            return out
        best = np.lexsort((s, -chars, -words, r))
        first = best[np.concatenate(([True], r[best][1:] != r[best][:-1]))]
        for j in first:
            t = int(r[j])
            out.source[t] = int(real_ids[s[j]])
            out.words[t] = int(words[j])
            out.chars[t] = int(chars[j])
            out.excerpt[t] = _excerpt(cw.text_of(int(a[j]), int(b[j])))
        return out


# -------------------------------------------------------------------------------------------------------- gate


def _route(embedder: Any) -> str:
    """The embedding route whose vectors ``embedder.encode`` returns: ``static_cascade`` or ``minilm``."""
    route = getattr(embedder, "route", None)
    if route:
        return str(route)
    from synqa_dagster.embedding import StaticEmbedder

    return "static_cascade" if isinstance(embedder, StaticEmbedder) else "minilm"


def _strings(values: Any) -> list[str]:
    """Texts to encode: missing values as ``""``, anything else as ``str``."""
    return ["" if is_missing(t) else str(t) for t in values]


def _source_kind(source_id: str) -> str:
    return source_id.split(":", 1)[0] if ":" in source_id else "real"


class MemorisationGate(Gate):
    """Drops candidate rows that repeat a real row: a long verbatim span, or an embedding near-copy.

    Input columns: ``text`` (and the other columns of ``config.columns`` / ``config.embedding_columns`` where
    present; ``instruction`` by default).

    Output (per row, see :class:`GateResult`):
        - category ``memorised_span``: score = the longest shared span in words; reason e.g.
          ``'verbatim span of 13 words (71 chars) shared with seed:seed-0056: "student discount seems to have…"'``;
        - category ``memorised_near_copy``: score = cosine; reason e.g.
          ``"embedding near-copy of reference:ref-0042 (instruction): cosine 0.97 ≥ 0.95 (static_cascade, …)"``;
        - kept rows: score = the highest near-copy cosine over the embedding columns when the check ran, else
          NaN.

    Attributes:
        config: the :class:`MemorisationGateConfig`.
        real_rows: the real rows (``source_id``, ``text``, ``source`` kind), as given.
        real_embeddings: their unit vectors (from an ``embedding`` column of ``real_rows`` or encoded once), or
            None when the embedding check cannot run.
        index_build_seconds: time to build the span index.
    """

    name: ClassVar[str] = "memorisation"

    def __init__(
        self,
        config: MemorisationGateConfig | None = None,
        real_rows: pd.DataFrame | None = None,
        embedder: "Embedder | None" = None,
        *,
        route: str | None = None,
    ):
        """Index the real rows once (and embed them once when the embedding check can run).

        Args:
            config: gate configuration (defaults: 10 words / 50 characters, embeddings on).
            real_rows: ``source_id`` (e.g. ``seed:seed-0001``, ``reference:ref-0004``) and ``text``; optional
                ``source`` (the kind counted in the metrics; default: the id's prefix before ``:``) and
                ``embedding`` (precomputed unit vectors of ``text``, from the same model as ``embedder``).
            embedder: the embedder whose ``encode`` made the candidates' shared vectors
                (:func:`synqa_dagster.embedding.embedder_for`); encodes the real rows (unless they carry vectors)
                and the candidates' non-``text`` embedding columns.
            route: the embedding route of the vectors (``static_cascade`` or ``minilm``), which picks the
                threshold; default: the embedder's (``minilm`` when there is no embedder, i.e. vectors given both
                in ``real_rows["embedding"]`` and to :meth:`evaluate`).
        """
        self.config = config or MemorisationGateConfig()
        if real_rows is None:
            real_rows = pd.DataFrame({"source_id": pd.Series([], dtype=object), "text": pd.Series([], dtype=object)})
        missing = {"source_id", "text"} - set(real_rows.columns)
        if missing:
            raise ValueError(f"real_rows lack columns {sorted(missing)} (need source_id, text)")
        rows = real_rows.reset_index(drop=True)
        ids = rows["source_id"].astype(str)
        kinds = rows["source"].astype(str) if "source" in rows.columns else ids.map(_source_kind)
        self.real_rows = pd.DataFrame({"source_id": ids.to_numpy(dtype=object), "source": kinds.to_numpy(dtype=object),
                                       "text": rows["text"].to_numpy(dtype=object)})
        self._ids = np.array([_safe_id(s) for s in self.real_rows["source_id"]], dtype=object)
        self._kinds = self.real_rows["source"].to_numpy(dtype=object)
        self._embedder = embedder
        t0 = time.perf_counter()
        cfg = self.config
        words = _Words.build(self.real_rows["text"].tolist())
        self._index = _SpanIndex(words, cfg.min_span_words, cfg.min_span_chars)
        self.real_word_counts = np.diff(words.W[words.offsets]) if len(words.offsets) > 1 else np.zeros(0, np.int64)
        self.index_build_seconds = time.perf_counter() - t0
        self.real_embeddings: np.ndarray | None = None
        self.route: str | None = None
        if cfg.use_embeddings:
            vectors = rows["embedding"] if "embedding" in rows.columns else None
            if vectors is not None and len(rows) and vectors.notna().all():
                self.real_embeddings = np.asarray(np.stack([np.asarray(v, dtype=np.float32) for v in vectors]))
            elif embedder is not None and len(rows):  # encode only the rows without vectors (the seeds, in a batch)
                from synqa_dagster.corpus.real import with_embeddings

                filled = with_embeddings(rows.assign(text=_strings(self.real_rows["text"])), embedder)
                self.real_embeddings = np.asarray(np.stack(filled["embedding"].tolist()))
        if route is not None:
            if route not in ("static_cascade", "minilm"):
                raise ValueError(f"route must be 'static_cascade' or 'minilm', got {route!r}")
            self.route = route
        elif embedder is not None:
            self.route = _route(embedder)
        #: real rows the near-copy check compares against (``embedding_min_words`` or more words)
        self.embedding_eligible = self.real_word_counts >= cfg.embedding_min_words

    # ------------------------------------------------------------------------------------------------ spans

    @property
    def index_windows(self) -> int:
        """Distinct leak windows indexed (at most one per real word)."""
        return len(self._index)

    def span_matches(self, texts: Sequence[Any], chunk_size: int = 20_000) -> SpanMatches:
        """The longest qualifying shared span of every text (``source`` ``-1`` where none)."""
        texts = list(texts)
        out = SpanMatches.empty(len(texts))
        positions = np.arange(len(self.real_rows), dtype=np.int64)
        for s in range(0, len(texts), chunk_size):
            m = self._index.match(texts[s : s + chunk_size], positions)
            sl = slice(s, s + len(m.source))
            out.source[sl], out.words[sl], out.chars[sl] = m.source, m.words, m.chars
            out.excerpt[sl] = m.excerpt
        return out

    # ------------------------------------------------------------------------------------------- embeddings

    @property
    def threshold(self) -> float:
        """The near-copy cosine threshold for this gate's embedding route."""
        cfg = self.config
        return cfg.static_embedding_threshold if self.route == "static_cascade" else cfg.embedding_threshold

    def near_copy_cosine(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Highest cosine of each vector with an eligible real row, and that row's position (``-1``: none)."""
        v = np.asarray(vectors, dtype=np.float32)
        n = v.shape[0]
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        if self.real_embeddings is None or not self.embedding_eligible.any() or n == 0:
            return best, arg
        elig = np.flatnonzero(self.embedding_eligible)
        R = self.real_embeddings[elig]
        if v.ndim != 2 or v.shape[1] != R.shape[1]:
            raise ValueError(f"candidate vectors have shape {v.shape}, real row vectors dim {R.shape[1]}")
        step = self.config.embedding_chunk_size
        for s in range(0, n, step):
            sims = v[s : s + step] @ R.T
            a = sims.argmax(axis=1)
            best[s : s + step] = sims[np.arange(len(a)), a]
            arg[s : s + step] = elig[a]
        return best, arg

    # --------------------------------------------------------------------------------------------- evaluate

    def evaluate(self, rows: pd.DataFrame, embeddings: np.ndarray | None = None) -> GateResult:
        """Drop rows sharing a qualifying verbatim span with a real row, then embedding near-copies.

        Args:
            rows: candidates with a ``text`` column (and ``instruction`` etc. where configured).
            embeddings: the shared candidate vectors of ``text``, aligned with ``rows`` (the same model as the
                embedder's ``encode``); encoded here when None and the check runs.
        """
        cfg = self.config
        n = len(rows)
        result = GateResult.all_kept(self.name, n)
        metrics: dict[str, Any] = {
            "min_span_words": cfg.min_span_words,
            "min_span_chars": cfg.min_span_chars,
            "real_rows": len(self.real_rows),
            "real_rows_by_source": {
                str(k): int(v) for k, v in pd.Series(self._kinds, dtype=object).value_counts().sort_index().items()},
            "index_windows": self.index_windows,
            "index_build_seconds": round(self.index_build_seconds, 4),
        }
        t0 = time.perf_counter()
        span_cols = [c for c in cfg.columns if c in rows.columns]
        metrics["span_columns"] = span_cols
        skipped = [c for c in cfg.columns if c not in rows.columns]
        if skipped:
            metrics["span_columns_missing"] = skipped
        best = SpanMatches.empty(n)
        best_col: list[str | None] = [None] * n
        for col in span_cols:
            m = self.span_matches(rows[col].tolist())
            better = (m.source >= 0) & ((m.words > best.words) | ((m.words == best.words) & (m.chars > best.chars)))
            for i in np.flatnonzero(better):
                best.source[i], best.words[i], best.chars[i] = m.source[i], m.words[i], m.chars[i]
                best.excerpt[i] = m.excerpt[i]
                best_col[i] = col
        t_span = time.perf_counter() - t0
        span_mask = best.source >= 0
        reasons: list[str | None] = [None] * n
        for i in np.flatnonzero(span_mask):
            where = "" if best_col[i] == TEXT_COLUMN else f" in {best_col[i]}"
            reasons[i] = (f"verbatim span of {best.words[i]} words ({best.chars[i]} chars){where} shared with "
                          f"{self._ids[best.source[i]]}: \"{best.excerpt[i]}\"")
        result.drop_where(span_mask, CATEGORY_SPAN, reasons, best.words.astype(float))
        metrics["span_seconds"] = round(t_span, 4)
        metrics["span_rows_per_s"] = round(n / t_span, 1) if n and t_span > 0 else None
        metrics["dropped_memorised_span"] = int(span_mask.sum())
        source_of = np.where(span_mask, best.source, -1)

        n_near = 0
        if not cfg.use_embeddings:
            metrics["embedding_check"] = "disabled"
        elif not len(self.real_rows):
            metrics["embedding_check"] = "skipped: no real rows"
        elif self.real_embeddings is None:
            metrics["embedding_check"] = "skipped: no embedder and no real row vectors"
        else:
            t1 = time.perf_counter()
            thr = self.threshold
            cos = np.full(n, -np.inf, dtype=np.float32)
            arg = np.full(n, -1, dtype=np.int64)
            col_of = np.full(n, "", dtype=object)
            ran: list[str] = []
            for col in cfg.embedding_columns:
                if col not in rows.columns:
                    continue
                if col == TEXT_COLUMN and embeddings is not None:
                    vec = np.asarray(embeddings, dtype=np.float32)
                    if vec.ndim != 2 or vec.shape[0] != n:
                        raise ValueError(f"embeddings have shape {vec.shape}, expected ({n}, dim) aligned with rows")
                elif self._embedder is not None:
                    vec = self._embedder.encode(_strings(rows[col])) if n else None
                else:
                    continue
                if vec is None:
                    ran.append(col)
                    continue
                c, a = self.near_copy_cosine(vec)
                better = c > cos
                cos[better], arg[better], col_of[better] = c[better], a[better], col
                ran.append(col)
            if not ran:
                metrics["embedding_check"] = "skipped: no embedder and no candidate vectors"
            else:
                emask = (arg >= 0) & (cos >= thr)
                how = f"{self.route or 'precomputed'}, {getattr(self._embedder, 'model_id', None) or 'vectors given'}"
                ereasons: list[str | None] = [None] * n
                for i in np.flatnonzero(emask & result.keep):
                    ereasons[i] = (f"embedding near-copy of {self._ids[arg[i]]} ({col_of[i]}): cosine {cos[i]:.3f} ≥ "
                                   f"{thr:.3f} ({how})")
                newly = emask & result.keep
                n_near = result.drop_where(emask, CATEGORY_NEAR_COPY, ereasons, cos.astype(float))
                source_of = np.where(newly, arg, source_of)
                kept = result.keep & np.isfinite(cos)
                result.score[kept] = cos[kept].astype(float)
                metrics["embedding_check"] = "ran"
                metrics["embedding_columns"] = ran
                metrics["embedding_route"] = self.route or "precomputed"
                metrics["embedding_model"] = getattr(self._embedder, "model_id", None)
                metrics["embedding_threshold"] = float(thr)
                metrics["embedding_min_words"] = cfg.embedding_min_words
                metrics["embedding_real_rows"] = int(self.embedding_eligible.sum())
                metrics["embedding_seconds"] = round(time.perf_counter() - t1, 4)
                finite = cos[np.isfinite(cos)]
                metrics["max_cosine_p99"] = float(np.quantile(finite, 0.99)) if len(finite) else None
        metrics["dropped_memorised_near_copy"] = int(n_near)
        dropped = source_of[(source_of >= 0) & ~result.keep]
        per_kind = pd.Series(self._kinds[dropped], dtype=object).value_counts()
        metrics["dropped_by_source"] = {str(k): int(v) for k, v in sorted(per_kind.items())}
        metrics["distinct_real_rows_leaked"] = int(len(np.unique(dropped)))
        result.metrics = metrics
        return result


# ------------------------------------------------------------------------------------------------- canaries

#: Lead-ins / closings a copied message is embedded between (written for synqa).
_LEADS = (
    "Thanks for getting in touch. You wrote:",
    "Here is the customer's message, for context:",
    "Sure. The customer said",
    "Restating the request first:",
)
_TAILS = (
    "I have passed this to the team and we will reply within a day.",
    "Let me check your account and get back to you shortly.",
    "Sorry for the trouble; a replacement or refund is on its way.",
)

#: Support exchanges written for synqa on the demo's topics (passwords, firmware, deliveries, billing, marketing
#: e-mails, two-factor codes), in their own words: a memorisation gate must keep them.
SAME_TOPIC = (
    ("I asked for a password reset link twice and nothing has come through, not even in junk mail.",
     "Sorry about that. I've sent a fresh link to the address on your account; it works for one hour."),
    ("My hub has been updating its firmware since this morning and the light is still blinking blue.",
     "An update can take up to twenty minutes; if it is still blinking, unplug the hub for ten seconds and retry."),
    ("The parcel with my thermostat was meant to arrive on Friday and the tracking has not changed since.",
     "I'm sorry for the delay. I've asked the courier for an update and will email you as soon as I hear back."),
    ("I was billed two times this month for the same plan. Can one of the payments be returned?",
     "You're right, the second charge is a duplicate. I've refunded it; it reaches your card in 3-5 working days."),
    ("How can I stop getting promotional newsletters while still receiving my order updates?",
     "Open Settings, then Notifications, and switch off Marketing; order updates stay on."),
    ("Is it possible to move my two-factor codes to a new phone before I trade in the old one?",
     "Yes: in Security, choose Move authenticator, scan the code with the new phone, then confirm on the old one."),
)

#: The placeholder a redacted canary uses per kind of PII value (the PII gate's style).
_PLACEHOLDERS = ((_EMAIL, "[EMAIL]"), (_URL, "[URL]"), (_ID, "[ACCOUNT_ID]"), (_DIGITS, "[NUMBER]"))


def _redact(text: str) -> str:
    """``text`` with its PII-looking values replaced by typed placeholders (as the PII gate would)."""
    out = text
    for pattern, placeholder in _PLACEHOLDERS:
        if pattern is _DIGITS:
            out = pattern.sub(lambda m: placeholder if _mask_digits(m) == _MASKED else m.group(0), out)
        else:
            out = pattern.sub(placeholder, out)
    return out


def _shared_span(a: str, b: str) -> tuple[int, int]:
    """(unmasked words, characters) of the longest common normalised word run of ``a`` and ``b`` — an
    independent check (:mod:`difflib`) that a planted row holds the span it is meant to hold."""
    from difflib import SequenceMatcher

    wa, wb = normalize_for_memorisation(a).split(), normalize_for_memorisation(b).split()
    m = SequenceMatcher(None, wa, wb, autojunk=False).find_longest_match(0, len(wa), 0, len(wb))
    span = [w for w in wa[m.a : m.a + m.size] if w != MASK_WORD]
    return len(span), len(" ".join(span))


def _light_edit(words: list[str], rng: np.random.Generator) -> tuple[list[str], str]:
    """One light edit of a word list, chosen at random: case/punctuation stripped, one word swapped with its
    neighbour, one word dropped, or "just" inserted (the rest of the message stays verbatim)."""
    w = list(words)
    kind = ("case_punctuation", "swap", "drop", "insert")[int(rng.integers(4))]
    if kind == "case_punctuation":
        w = [re.sub(r"[^\w']", "", x).lower() or x for x in w]
    elif kind == "swap" and len(w) > 2:
        j = int(rng.integers(len(w) - 1))
        w[j], w[j + 1] = w[j + 1], w[j]
    elif kind == "drop" and len(w) > 2:
        del w[int(rng.integers(len(w)))]
    else:
        kind = "insert"
        w.insert(int(rng.integers(len(w) + 1)), "just")
    return w, kind


def plant_memorisation(
    real_rows: pd.DataFrame,
    rng: np.random.Generator,
    n: int,
    *,
    config: MemorisationGateConfig | None = None,
) -> list[dict[str, Any]]:
    """Canary records for the memorisation gate: up to ``n`` of each kind, drawn with ``rng`` from ``real_rows``.

    Positives (``expected="drop"``). Each is checked independently (:mod:`difflib`, not the gate's index) to
    share with its real row a span meeting ``config``'s thresholds (defaults when None), so the span check alone
    must catch it — no embedder needed, recall should be 1.0:

    - ``verbatim_in_answer``: a whole real message quoted inside a longer answer;
    - ``light_edit``: a real message with one light edit (case/punctuation, two words swapped, a word dropped,
      a word inserted) as the customer turn;
    - ``redacted_copy``: a real message that carries an e-mail address / card or phone number / id, copied with
      the value replaced by the PII gate's placeholder (``[EMAIL]``...): the span must line up across it. Where no
      real message carries one, a placeholder is spliced into a long message instead.

    Negatives (``expected="keep"``):

    - ``same_topic``: support exchanges written for synqa on the demo's topics, in their own words
      (:data:`SAME_TOPIC`);
    - ``short_overlap``: ``min_span_words - 1`` consecutive words of a long real message (under
      ``min_span_chars`` characters), inside an unrelated exchange.

    Returns dicts with keys ``kind``, ``expected``, ``instruction``, ``response``, ``detail`` (the real row's
    ``source_id`` and what was done). Kinds without suitable real rows are left out.
    """
    cfg = config or MemorisationGateConfig()
    records: list[dict[str, Any]] = []
    if n <= 0:
        return records
    texts = real_rows["text"].astype(str).tolist() if len(real_rows) else []
    ids = real_rows["source_id"].astype(str).tolist() if len(real_rows) else []
    norm = [normalize_for_memorisation(t).split() for t in texts]
    counted = [[w for w in ws if w != MASK_WORD] for ws in norm]
    k_words, k_chars = cfg.min_span_words, cfg.min_span_chars

    def qualifies(words: int, chars: int) -> bool:
        return words >= k_words or chars >= k_chars

    def pick(pool: list[Any], m: int) -> list[Any]:
        if not pool:
            return []
        order = rng.permutation(len(pool))
        return [pool[int(order[i])] for i in range(min(m, len(pool)))]

    def tail() -> str:
        return _TAILS[int(rng.integers(len(_TAILS)))]

    whole = [k for k in range(len(texts)) if qualifies(len(counted[k]), len(" ".join(counted[k])))]
    plain = [k for k in whole if len(counted[k]) == len(norm[k])]
    for k in pick(whole, n):
        lead = _LEADS[int(rng.integers(len(_LEADS)))]
        records.append({"kind": "verbatim_in_answer", "expected": "drop", "instruction": "Can you summarise my ticket?",
                        "response": f"{lead} \"{texts[k]}\" {tail()}", "detail": f"{ids[k]} (whole message)"})
    long_msgs = [k for k in plain if len(counted[k]) >= 2 * k_words + 2]
    for k in pick(long_msgs, n):
        for _ in range(8):
            edited, how = _light_edit(texts[k].split(), rng)
            if qualifies(*_shared_span(" ".join(edited), texts[k])):
                records.append({"kind": "light_edit", "expected": "drop", "instruction": " ".join(edited),
                                "response": tail(), "detail": f"{ids[k]} ({how})"})
                break
    with_pii = [k for k in whole if len(counted[k]) < len(norm[k])]
    if with_pii:
        for k in pick(with_pii, n):
            redacted = _redact(texts[k])
            if redacted != texts[k] and qualifies(len(counted[k]), len(" ".join(counted[k]))):
                records.append({"kind": "redacted_copy", "expected": "drop", "instruction": redacted,
                                "response": tail(), "detail": f"{ids[k]} (PII value -> placeholder)"})
    else:
        for k in pick(long_msgs, n):
            w = texts[k].split()
            j = int(rng.integers(1, len(w)))
            spliced = " ".join(w[:j] + ["[EMAIL]"] + w[j:])
            if qualifies(*_shared_span(spliced, texts[k])):
                records.append({"kind": "redacted_copy", "expected": "drop", "instruction": spliced,
                                "response": tail(), "detail": f"{ids[k]} ([EMAIL] spliced in)"})
    # negatives
    for q, a in pick(list(SAME_TOPIC), n):
        records.append({"kind": "same_topic", "expected": "keep", "instruction": q, "response": a,
                        "detail": "written for synqa"})
    short = k_words - 1
    pieces = []
    for k in long_msgs:
        w = norm[k]
        for s in range(1, len(w) - short):
            piece = w[s : s + short]
            context_free = w[s - 1] != "ticket" and w[s + short] != "anyway"  # the planted row's own context words
            if MASK_WORD not in piece and len(" ".join(piece)) < k_chars and context_free:
                pieces.append((k, " ".join(piece)))
                break
    for k, piece in pick(pieces, n):
        records.append({"kind": "short_overlap", "expected": "keep",
                        "instruction": "Quick question about my smart home hub.",
                        "response": f"As a reminder from an older ticket: {piece}. Anyway, the hub is fine now.",
                        "detail": f"{short} words of {ids[k]}"})
    return records


class RealRowsMemorisationGate(Gate):
    """The memorisation gate as a funnel stage: the real rows arrive with each batch (the ``real`` input of
    :mod:`synqa_dagster.stages`) rather than at construction, and the index is built once per distinct set of real
    rows (a batch, its census and its canaries share it).

    Input columns: as :class:`MemorisationGate`. ``evaluate(rows, embeddings=None, real=None)``: ``real`` =
    :func:`synqa_dagster.corpus.real.real_rows` (``source_id``, ``text``, optional ``embedding``); None or empty
    keeps every row and says so in the metrics (an audit without ``--reference``).

    Attributes:
        config: the :class:`MemorisationGateConfig`; embedder: encodes the real rows and extra embedding columns.
    """

    name: ClassVar[str] = "memorisation"

    def __init__(self, config: MemorisationGateConfig | None = None, embedder: "Embedder | None" = None):
        self.config = config or MemorisationGateConfig()
        self.embedder = embedder
        self._gates: dict[str, MemorisationGate] = {}

    def gate_for(self, real: pd.DataFrame | None) -> MemorisationGate:
        """The :class:`MemorisationGate` indexing ``real`` (built on first use, the two latest kept)."""
        import hashlib

        frame = real if real is not None else pd.DataFrame({"source_id": [], "text": []})
        digest = hashlib.sha256()
        for sid, text in zip(frame["source_id"].astype(str), frame["text"].astype(str)):
            digest.update(sid.encode("utf-8") + b"\x00" + text.encode("utf-8") + b"\x01")
        key = digest.hexdigest()
        gate = self._gates.get(key)
        if gate is None:
            if len(self._gates) >= 2:
                self._gates.pop(next(iter(self._gates)))
            gate = self._gates[key] = MemorisationGate(self.config, frame, self.embedder)
        return gate

    def evaluate(self, rows: pd.DataFrame, embeddings: np.ndarray | None = None, real: pd.DataFrame | None = None) -> GateResult:
        """Decide every row against ``real`` (see the class docstring)."""
        result = self.gate_for(real).evaluate(rows, embeddings=embeddings)
        if real is None or not len(real):
            result.metrics["note"] = "no real rows given: nothing to compare with, every row kept"
        return result

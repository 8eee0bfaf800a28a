"""Heuristic quality gate: empty, length, repetition, leaked meta-prompt text, wrong language, echoed responses.

Every rule is cheap, deterministic and explains itself: a dropped row carries the rule's category and an exact,
actionable reason (``too short: 3 words < min 5``, ``repetition: 60% duplicate lines > 50% (3 of 5 lines)``,
``leaked meta-prompt text "Rewritten Prompt:"``, ``wrong language: detected de (0.97) ≠ en``). Rules run in a
fixed order and a row is reported under the first rule it fails; later (costlier) rules skip rows that are
already dropped.

Leak rules only fire in prompt-leak contexts: scaffolding markers (``Rewritten Prompt:``, chat-template tokens),
prompt headers at the start of a line (``### Instruction:``) and unfilled placeholders of known template fields
(``{seed_text}``, ``{intent}``, ``{{ instruction }}``) outside code and templating answers; braces alone are
not a leak (JSON, ``${{ matrix.os }}``, Jinja in a code block are legitimate answers). Emoji and other non-ASCII
symbols are content: an emoji-only answer is judged by the length rules, not called empty.

Measured on the shared real data with the defaults: 0.07% of the 10,003 BANKING77 train queries (six 2-word
queries under ``min_words`` and one repetition), 0.09% of the 7,473 GSM8K train question+answer rows and 0 of
the 427 self-instruct tasks are dropped, while >90% of sentence and phrase loops planted into real text are
caught (``tests/gates/test_quality.py``).

References:
    - J. Rae et al., "Scaling Language Models: Methods, Analysis & Insights from Training Gopher", 2021,
      Table A1 (repetition thresholds), and datatrove's ``GopherRepetitionFilter`` / ``GopherQualityFilter``.
    - M. Lui and T. Baldwin, "langid.py: An Off-the-shelf Language Identification Tool", ACL 2012
      (``py3langid`` is its maintained fork, with the same shipped model).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import operator
import os
import re
import threading
import time
import unicodedata
from collections import Counter
from functools import lru_cache
from itertools import islice
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from synqa_dagster.gates.base import TEXT_COLUMN, Gate, GateResult
from synqa_dagster.gates.text import (
    is_missing,
    join_utf8,
    normalize_lines,
    normalize_many,
    normalize_text,
    span_hash64,
    word_spans,
)

__all__ = [
    "BatchLanguageIdentifier",
    "CATEGORIES",
    "DEFAULT_LINE_START_MARKERS",
    "DEFAULT_META_PROMPT_MARKERS",
    "DEFAULT_PLACEHOLDER_PATTERN",
    "PLACEHOLDER_FIELDS",
    "GOPHER_DUPLICATE_NGRAM",
    "GOPHER_TOP_NGRAM",
    "QualityGate",
    "QualityGateConfig",
    "detect_language",
]

#: Text that only appears in a row when the generator copied its own prompt scaffolding into the output.
DEFAULT_META_PROMPT_MARKERS: tuple[str, ...] = (
    "Rewritten Prompt:",
    "#Rewritten Prompt#",
    "#Given Prompt#",
    "#Created Prompt#",
    "Created Prompt:",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "[INST]",
    "[/INST]",
    "<</SYS>>",
    "#The Given Prompt#",
    "As an AI language model",
)

#: Prompt-format headers that leak only when they open a line (``### Instruction:`` of Alpaca-style prompts); in
#: the middle of a line, or without the colon (a Markdown heading "### Input"), they are ordinary text.
DEFAULT_LINE_START_MARKERS: tuple[str, ...] = ("### Instruction:", "### Input:", "### Response:")

#: Field names of the prompt templates a placeholder may leak from: the recipe's own fields
#: (``synqa_dagster.config.TEMPLATE_FIELDS``, kept in sync by a test), the fields of distilabel's task templates,
#: and typical prompt-template field names.
PLACEHOLDER_FIELDS: tuple[str, ...] = (
    "locale", "intent", "intent_description", "seed_text",
    "instruction", "input", "output", "prompt", "given_prompt", "rewritten_prompt", "created_prompt", "question",
    "answer", "response", "context", "query", "system_prompt", "seed", "topic", "task", "example", "examples",
    "application_description", "criteria_for_query_generation", "num_instructions",
)

#: Unfilled template placeholders: ``{field}`` (Python ``str.format``, the recipe's templates) or ``{{field}}`` /
#: ``{{ field }}`` (Jinja, distilabel's templates) with a bare field name of :data:`PLACEHOLDER_FIELDS`, so that
#: code such as ``print(f"{name}")``, JSON and ``${{ matrix.os }}`` are not flagged. Matches in code or templating
#: contexts are ignored too (see ``QualityGateConfig.placeholder_skip_code``).
DEFAULT_PLACEHOLDER_PATTERN = (
    r"\{\{\s*(?:" + "|".join(PLACEHOLDER_FIELDS) + r")\s*\}\}|\{(?:" + "|".join(PLACEHOLDER_FIELDS) + r")\}"
)

#: Gopher's Table A1 limits, tuned for web pages of 50+ words. On short instruction rows they flag clean text
#: (measured: 22% of GSM8K question+answer rows, 15% of self-instruct seed/user tasks), hence the looser
#: defaults of :class:`QualityGateConfig`; pass these to reproduce Gopher exactly.
GOPHER_TOP_NGRAM: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
GOPHER_DUPLICATE_NGRAM: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

CATEGORIES = ("empty", "too_short", "too_long", "repetition", "meta_prompt_leak", "wrong_language", "echo")


class QualityGateConfig(BaseModel):
    """Configuration of :class:`QualityGate` (every threshold can be switched off with ``None``).

    Attributes:
        min_chars, max_chars: bounds on the characters of the stripped text.
        min_words, max_words: bounds on the words of the normalised text
            (:func:`synqa_dagster.gates.text.words`).
        max_duplicate_line_fraction: Gopher "duplicate line fraction": lines (non-empty after normalisation)
            equal to an earlier line, over all such lines.
        max_duplicate_line_char_fraction: Gopher "duplicate line character fraction": characters of those
            duplicate lines over the characters of all lines.

            Repetition limits are Gopher's statistics (Rae et al. 2021, Table A1) with limits recalibrated for
            instruction rows, where the response legitimately repeats lines and phrases of the instruction
            (rewrite/fix-this-code tasks, maths word problems). Gopher's own limits (0.30/0.20 for lines,
            :data:`GOPHER_TOP_NGRAM`, :data:`GOPHER_DUPLICATE_NGRAM`) flag 22% of GSM8K question+answer rows and
            15% of self-instruct tasks; these defaults flag 0.09% and 0% of them (measured on the shared data)
            and still catch > 90% of sentence and phrase loops planted into real text (see the tests).
        top_ngram_max_char_fraction: ``{n: limit}``, Gopher "top n-gram character fraction": characters
            covered by the most frequent word n-gram (counted only when it occurs at least twice) over all word
            characters.
        duplicate_ngram_max_char_fraction: ``{n: limit}``, Gopher "duplicate n-gram character fraction":
            characters of words inside a repeated occurrence of a word n-gram over all word characters.
        ngram_rules_min_words: the n-gram rules only apply to texts with at least this many words (Gopher
            applied them to documents of 50+ words; on a 10-word query one repeated bigram is already 20%).
        max_token_run: longest allowed run of the same word repeated back to back ("no no no no" is 4).
        token_run_skip_numbers: ignore runs of a number (``0 0 0 0 0`` in grids, matrices and test data).
        meta_prompt_markers: case-insensitive substrings that reveal leaked prompt scaffolding or chat-template
            tokens (anywhere in the text). Braces are not markers: ``{{``/``}}`` occur in JSON, GitHub Actions
            (``${{ matrix.os }}``) and Jinja answers; leaked template fields are the placeholder rule's job.
        line_start_markers: case-insensitive prompt-format headers that only count at the start of a line
            (after optional spaces), e.g. ``### Instruction:``.
        placeholder_pattern: regex (case-insensitive) for unfilled template placeholders; ``None`` disables.
        placeholder_skip_code: ignore placeholder matches in code or templating contexts: preceded by ``$``
            (``${{ x }}``, ``${input}``), inside a fenced code block or an inline code span, on a line with a
            Python f-string or ``.format(``, or anywhere in a templating answer (Jinja ``{% %}`` / ``{# #}`` tags,
            or one that names Jinja, Mustache, Handlebars or Nunjucks).
        expected_language: ISO 639-1 code the text must be in (``None`` disables the rule).
        language_min_chars: texts shorter than this (stripped characters) are never judged on language;
            short texts are where language identification is least reliable.
        language_min_confidence: the detected language must be at least this probable (langid.py's
            normalised probability) to call the text wrong.
        language_max_chars: only this many leading characters are given to the identifier (speed).
        num_workers: processes (forked, so the table and the language model are shared copy-on-write) that run
            the per-row repetition and language rules on tables of at least ``parallel_min_rows`` rows;
            ``None`` = one per CPU, at most 4. Forking only happens where it is safe: a POSIX ``fork`` start
            method and no other Python thread running; otherwise the rules run in-process. Results never depend
            on it.
        parallel_min_rows: below this many rows the rules run in-process.
        instruction_column, response_column: when both columns exist, rows whose response is empty or
            identical (after normalisation) to the instruction are dropped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_chars: int | None = Field(10, ge=0, description="Minimum characters of the stripped text.")
    max_chars: int | None = Field(20_000, ge=1, description="Maximum characters of the stripped text.")
    min_words: int | None = Field(3, ge=0, description="Minimum words of the normalised text.")
    max_words: int | None = Field(4_000, ge=1, description="Maximum words of the normalised text.")
    max_duplicate_line_fraction: float | None = Field(0.50, ge=0, le=1, description="Duplicate line fraction.")
    max_duplicate_line_char_fraction: float | None = Field(
        0.50, ge=0, le=1, description="Duplicate-line character fraction."
    )
    top_ngram_max_char_fraction: dict[int, float] = Field(
        default_factory=lambda: {2: 0.40, 3: 0.40, 4: 0.40},
        description="Top n-gram character fraction limits, n -> limit (Gopher's: GOPHER_TOP_NGRAM).",
    )
    duplicate_ngram_max_char_fraction: dict[int, float] = Field(
        default_factory=lambda: {5: 0.50, 10: 0.45},
        description="Duplicate n-gram character fraction limits, n -> limit (Gopher's: GOPHER_DUPLICATE_NGRAM).",
    )
    ngram_rules_min_words: int = Field(20, ge=1, description="Apply n-gram repetition rules from this many words.")
    max_token_run: int | None = Field(4, ge=1, description="Longest allowed run of one repeated word.")
    token_run_skip_numbers: bool = Field(True, description="Ignore runs of a number (grids, matrices, test data).")
    meta_prompt_markers: tuple[str, ...] = Field(
        DEFAULT_META_PROMPT_MARKERS, description="Case-insensitive substrings revealing leaked prompt scaffolding."
    )
    line_start_markers: tuple[str, ...] = Field(
        DEFAULT_LINE_START_MARKERS, description="Case-insensitive prompt headers that leak at the start of a line."
    )
    placeholder_pattern: str | None = Field(
        DEFAULT_PLACEHOLDER_PATTERN, description="Regex of unfilled template placeholders (case-insensitive)."
    )
    placeholder_skip_code: bool = Field(True, description="Ignore placeholders in code / templating contexts.")
    expected_language: str | None = Field("en", description="ISO 639-1 code the text must be in; None disables.")
    language_min_chars: int = Field(40, ge=1, description="Texts shorter than this are not language-checked.")
    language_min_confidence: float = Field(0.95, ge=0, le=1, description="Min probability to call it wrong.")
    language_max_chars: int = Field(256, ge=16, description="Leading characters given to langid.")
    num_workers: int | None = Field(
        None, ge=1, description="Processes for the repetition/language rules; None = one per CPU (max 4)."
    )
    parallel_min_rows: int = Field(20_000, ge=1, description="Fewer rows than this are scanned in-process.")
    instruction_column: str = Field("instruction", description="Instruction column for the echo rule.")
    response_column: str = Field("response", description="Response column for the echo/empty-response rule.")

    @field_validator("top_ngram_max_char_fraction", "duplicate_ngram_max_char_fraction")
    @classmethod
    def _ngram_limits(cls, value: dict[int, float]) -> dict[int, float]:
        for n, limit in value.items():
            if n < 1 or not 0 <= limit <= 1:
                raise ValueError(f"bad n-gram limit {n}: {limit}")
        return dict(sorted(value.items()))

    @field_validator("placeholder_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"invalid placeholder_pattern: {err}") from err
        return value


# --------------------------------------------------------------------------------------------------- helpers


def _pct(value: float, limit: float) -> tuple[str, str]:
    """Format a fraction and its limit as percentages, with just enough decimals on the value to tell them apart
    (``0.42, 0.3`` -> ``("42%", "30%")``; ``0.3004, 0.3`` -> ``("30.04%", "30%")``)."""
    shown_limit = f"{limit * 100:g}"
    for digits in (0, 1, 2, 3):
        shown = f"{value * 100:.{digits}f}"
        if float(shown) != float(shown_limit):
            break
    return shown + "%", shown_limit + "%"


def duplicate_line_stats(text: str) -> tuple[int, int, int, int]:
    """``(lines, duplicate lines, chars of all lines, chars of duplicate lines)`` over the non-empty normalised
    lines of ``text`` (a line is a duplicate when an earlier line normalises to the same text)."""
    seen: set[str] = set()
    n_lines = n_dup = chars = dup_chars = 0
    for norm in normalize_lines(text):
        if not norm:
            continue
        n_lines += 1
        chars += len(norm)
        if norm in seen:
            n_dup += 1
            dup_chars += len(norm)
        else:
            seen.add(norm)
    return n_lines, n_dup, chars, dup_chars


def _min_lines_to_fail(*limits: float | None) -> float:
    """Fewest lines with which a duplicate-line rule can fire: with ``n`` lines at most ``(n - 1) / n`` of the lines
    (and of their characters) are duplicates, so a limit ``L`` needs ``n > 1 / (1 - L)``."""
    active = [lim for lim in limits if lim is not None]
    if not active or min(active) >= 1.0:
        return float("inf")
    return math.floor(1.0 / (1.0 - min(active))) + 1


def top_ngram(tokens: list[str], n: int) -> tuple[tuple[str, ...], int] | None:
    """Most frequent word n-gram and its count, or ``None`` if no n-gram occurs twice (ties: first seen)."""
    if len(tokens) <= n:
        return None
    grams = list(zip(*(tokens[i:] for i in range(n))))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return None
    gram, count = counts.most_common(1)[0]
    return gram, count


def duplicate_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of the words covered by a repeated occurrence (not the first) of a word n-gram.

    Overlapping repeats count each word once, so the result never exceeds the word characters of the text.
    """
    grams = list(zip(*(tokens[i:] for i in range(n))))
    first = dict(zip(reversed(grams), range(len(grams) - 1, -1, -1)))  # n-gram -> first position
    if len(first) == len(grams):
        return 0
    chars, covered_until = 0, 0
    for i in [i for i, f in enumerate(map(first.__getitem__, grams)) if f != i]:
        start = max(i, covered_until)
        if start < i + n:
            chars += sum(map(len, tokens[start : i + n]))
        covered_until = i + n
    return chars


def longest_token_run(tokens: list[str], limit: int, skip_numbers: bool = False) -> tuple[str, int] | None:
    """First word repeated back to back more than ``limit`` times, with the length of its run, or ``None``.

    With ``skip_numbers``, runs of a number (``0 0 0 0 0``: grids, matrices, test data) are ignored.
    """
    if len(tokens) <= limit:
        return None
    same = bytes(map(str.__eq__, tokens, islice(tokens, 1, None)))  # 1 where a token equals the next one
    start = same.find(b"\x01" * limit)
    while start >= 0:
        end = start
        while end < len(same) and same[end]:
            end += 1
        if not (skip_numbers and tokens[start].isdigit()):
            return tokens[start], end - start + 1
        start = same.find(b"\x01" * limit, end)
    return None


_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_TEMPLATING = re.compile(r"\{%.*?%\}|\{#.*?#\}|\b(?:jinja2?|mustache|handlebars|nunjucks)\b", re.IGNORECASE | re.DOTALL)
_FORMAT_CODE = re.compile(r"(?<![A-Za-z0-9_])[rR]?[fF][rR]?[\"']|\.format\(|\.format_map\(")


def in_code_context(text: str, start: int) -> bool:
    """Whether position ``start`` of ``text`` is in code or a templating answer, where braces are syntax rather
    than a leaked placeholder: right after ``$`` (``${{ matrix.os }}``, ``${input}``), inside a fenced code block
    (an odd number of fences before it) or an inline code span (an odd number of backticks before it on its
    line), on a line with a Python f-string or ``.format(``, or in a text with Jinja tags or naming a template
    engine (:data:`_TEMPLATING`)."""
    if start > 0 and text[start - 1] == "$":
        return True
    if len(_FENCE.findall(text, 0, start)) % 2 == 1:
        return True
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    if text.count("`", line_start, start) % 2 == 1 or _FORMAT_CODE.search(line):
        return True
    return _TEMPLATING.search(text) is not None


def has_symbol_content(text: str) -> bool:
    """Whether ``text`` holds a non-ASCII symbol (Unicode ``S*``: emoji, ✓, →, ∞, €...), i.e. content that
    normalisation drops although it is an answer (``"👍"``). ASCII symbols and punctuation (``$+<=>^|~``,
    ``?!...``) are not content."""
    return not text.isascii() and any(ord(ch) > 127 and unicodedata.category(ch)[0] == "S" for ch in text)


@lru_cache(maxsize=1)
def _language_identifier() -> Any:
    """py3langid's shipped model with normalised probabilities (loaded once per process, ~1.3 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str, max_chars: int = 256) -> tuple[str, float]:
    """``(ISO 639-1 code, probability)`` of the most likely language of ``text[:max_chars]`` (py3langid)."""
    lang, prob = _language_identifier().classify(text[:max_chars])
    return str(lang), float(prob)


class BatchLanguageIdentifier:
    """py3langid's ``classify`` for many texts at once, vectorised with numpy/scipy.

    py3langid walks a byte-level DFA in a Python loop (~0.5 µs per byte). This class runs the same DFA over a
    chunk of texts in lock-step (one numpy step per byte position), counts the features with a sparse matrix
    and applies the same naive-Bayes scores, length temperature, softmax and alias folding, so it returns the
    same labels and probabilities (up to float32 summation order) 5-10x faster.

    Args:
        chunk_docs: texts per vectorised chunk (bounds memory).

    References:
        M. Lui and T. Baldwin, "langid.py: An Off-the-shelf Language Identification Tool", ACL 2012;
        ``py3langid.langid.LanguageIdentifier`` (``_encode``, ``visit_counts``, ``_decide``).
    """

    def __init__(self, chunk_docs: int = 2048) -> None:
        li = _language_identifier()
        self._li = li
        self.chunk_docs = chunk_docs
        nextmove = np.asarray(li.tk_nextmove, dtype=np.int64)
        rowbase = np.asarray(li._rowbase, dtype=np.int64)
        output = np.asarray(li.tk_output, dtype=np.int64)
        # per transition: the next state's row offset and emitted feature, so a step is two int32 gathers
        self._next_rowbase = rowbase[nextmove].astype(np.int32)
        self._next_output = output[nextmove].astype(np.int32)
        self._start_rowbase = int(rowbase[0])
        self._ptc = np.asarray(li.nb_ptc, dtype=np.float32)
        self._pc = np.asarray(li.nb_pc, dtype=np.float32)
        self._classes = list(li.nb_classes)
        self._aliases = list(li._alias_pairs)

    def classify_many(self, texts: list[str]) -> list[tuple[str, float]]:
        """``[(language, probability)]`` for every text (as ``py3langid`` ``classify`` with ``norm_probs``)."""
        out: list[tuple[str, float]] = []
        for lo in range(0, len(texts), self.chunk_docs):
            out.extend(self._chunk([self._li._encode(t) for t in texts[lo : lo + self.chunk_docs]]))
        return out

    def _chunk(self, encoded: list[bytes]) -> list[tuple[str, float]]:
        from scipy import sparse

        n = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: active texts are a prefix at every step
        sorted_len = lengths[order]
        matrix = self._byte_matrix([encoded[i] for i in order], sorted_len)
        row = np.full(n, self._start_rowbase, dtype=np.int32)  # row offset of each text's current DFA state
        docs, feats = [], []
        for pos in range(matrix.shape[0]):
            k = int(np.searchsorted(-sorted_len, -pos, side="left"))  # texts longer than pos
            step = row[:k] + matrix[pos, :k]
            f = self._next_output[step]
            row[:k] = self._next_rowbase[step]
            hit = np.flatnonzero(f >= 0)
            docs.append(hit)
            feats.append(f[hit])
        d = np.concatenate(docs) if docs else np.empty(0, dtype=np.int64)
        f = np.concatenate(feats) if feats else np.empty(0, dtype=np.int64)
        counts = sparse.csr_matrix((np.ones(len(d), dtype=np.float32), (d, f)), shape=(n, len(self._ptc)))
        counts.sum_duplicates()
        counts.data = np.log1p(counts.data)
        has_features = np.diff(counts.indptr) > 0
        scores = np.asarray(counts @ self._ptc, dtype=np.float32) + self._pc
        scores[~has_features] = 0.0  # py3langid: no features -> uniform (abstain)
        scores *= (1.0 / np.sqrt(np.maximum(sorted_len, 1))).astype(np.float32)[:, None]
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self._aliases:
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        conf = scores[np.arange(n), best]
        result: list[tuple[str, float]] = [("", 0.0)] * n
        for rank, doc in enumerate(order):
            result[doc] = (self._classes[best[rank]], float(conf[rank]))
        return result

    @staticmethod
    def _byte_matrix(encoded: list[bytes], lengths: np.ndarray) -> np.ndarray:
        """``(max length, n)`` uint8 matrix: column ``i`` holds the bytes of text ``i`` (zero padded)."""
        n = len(encoded)
        width = int(lengths.max()) if n else 0
        matrix = np.zeros((width, n), dtype=np.uint8)
        if width:
            flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            col = np.repeat(np.arange(n), lengths)
            row = np.arange(len(flat)) - np.repeat(starts, lengths)
            matrix[row, col] = flat
        return matrix


@lru_cache(maxsize=1)
def _batch_identifier() -> BatchLanguageIdentifier:
    return BatchLanguageIdentifier()


def token_screen(
    normalized: list[str],
    max_token_run: int | None,
    min_words: int,
    top_limits: dict[int, float],
    dup_limits: dict[int, float],
    chunk_docs: int = 4096,
) -> np.ndarray:
    """Which normalised texts *may* fail a word-level repetition rule (token run, top or duplicate n-gram).

    Vectorised over many texts with 64-bit word hashes (:func:`synqa_dagster.gates.text.span_hash64`): per
    text, the longest run of equal adjacent words, and from the word counts the bounds used by
    :meth:`QualityGate._ngram_repetition` (``n * M1`` for top n-grams, ``R`` for duplicate n-grams). A hash
    collision can only merge two words, which makes every bound larger, so a text screened out (False) can never
    fail those rules; texts flagged True get the exact per-text check.
    """
    out = np.zeros(len(normalized), dtype=bool)
    for lo in range(0, len(normalized), chunk_docs):
        out[lo : lo + chunk_docs] = _screen_chunk(
            normalized[lo : lo + chunk_docs], max_token_run, min_words, top_limits, dup_limits
        )
    return out


def _screen_chunk(
    docs: list[str],
    max_token_run: int | None,
    min_words: int,
    top_limits: dict[int, float],
    dup_limits: dict[int, float],
) -> np.ndarray:
    m = len(docs)
    data, doc_start = join_utf8(docs)
    starts, ends = word_spans(data)
    if len(starts) == 0:
        return np.zeros(m, dtype=bool)
    doc = np.searchsorted(doc_start, starts, side="right") - 1
    h = span_hash64(data, starts, ends)
    if (data < 128).all():
        chars = ends - starts
    else:  # code points per word: UTF-8 bytes that do not continue a character
        lead = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum((data & 0xC0) != 0x80, out=lead[1:])
        chars = lead[ends] - lead[starts]
    n_words = np.bincount(doc, minlength=m)
    total = np.bincount(doc, weights=chars, minlength=m)

    flagged = np.zeros(m, dtype=bool)
    if max_token_run is not None and len(h) > 1:
        same = (h[1:] == h[:-1]) & (doc[1:] == doc[:-1])  # word k equals word k+1
        edges = np.diff(np.concatenate(([0], same.astype(np.int8), [0])))
        run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        long_runs = run_starts[(run_ends - run_starts) >= max_token_run]
        flagged[doc[long_runs]] = True

    key = (doc.astype(np.uint64) << np.uint64(40)) | (h >> np.uint64(24))  # (text, word) groups
    order = np.argsort(key)
    sorted_key = key[order]
    first = np.flatnonzero(np.concatenate(([True], sorted_key[1:] != sorted_key[:-1])))
    count = np.diff(np.append(first, len(sorted_key)))
    g_doc = doc[order[first]]
    g_chars = chars[order[first]]
    n_distinct = np.bincount(g_doc, minlength=m)
    distinct_chars = np.bincount(g_doc, weights=g_chars, minlength=m)
    m1 = np.zeros(m, dtype=np.float64)
    doc_first = np.flatnonzero(np.concatenate(([True], g_doc[1:] != g_doc[:-1])))  # groups are sorted by text
    m1[g_doc[doc_first]] = np.maximum.reduceat(count * g_chars, doc_first)

    repeats = n_distinct < n_words
    long_enough = n_words >= min_words
    safe_total = np.maximum(total, 1.0)
    ngram = np.zeros(m, dtype=bool)
    for n, limit in top_limits.items():
        ngram |= n * m1 > limit * safe_total
    if dup_limits:
        ngram |= (1.0 - distinct_chars / safe_total) > min(dup_limits.values())
    return repeats & (flagged | (long_enough & ngram))


# --------------------------------------------------------------------------------------------------- gate


class QualityGate(Gate):
    """Drops rows that are empty, too short or long, repetitive, leak prompt scaffolding, are in the wrong
    language, or echo the instruction as the response.

    Args:
        config: a :class:`QualityGateConfig` (defaults when omitted); keyword overrides are merged into it.

    Input columns:
        ``row_id``, ``text`` (all turns joined by newlines); optional ``instruction`` and ``response`` (names
        configurable) for the empty-response and echo rules.

    Output:
        :class:`GateResult` with categories, in the order the rules run (a row is reported under the first
        rule it fails): ``empty`` (blank text, or no words and no emoji/symbol content, or such a response
        column), ``meta_prompt_leak``,
        ``too_short`` / ``too_long``, ``echo``, ``repetition`` (duplicate lines, a run of one word, top and
        duplicate n-grams), ``wrong_language``. The score is the measured value of the failing rule (count,
        fraction or language probability); NaN for kept rows. ``metrics`` holds the configuration, counters,
        per-rule timings and the number of worker processes used.

    Attributes:
        config: the configuration.

    References:
        - Rae et al. 2021 (Gopher), Table A1; datatrove ``GopherRepetitionFilter`` (same statistics).
        - py3langid (langid.py, Lui & Baldwin 2012) for language identification.

    Examples:
        >>> gate = QualityGate(min_words=5)
        >>> rows = pd.DataFrame({"row_id": ["a", "b"], "text": ["Hi there", "How do I top up my card with cash?"]})
        >>> gate.evaluate(rows).reason
        ['too short: 2 words < min 5', None]
    """

    name: ClassVar[str] = "quality"

    def __init__(self, config: QualityGateConfig | None = None, **overrides: Any) -> None:
        base = config or QualityGateConfig()
        self.config = QualityGateConfig(**{**base.model_dump(), **overrides}) if overrides else base
        self._markers = [(m, m.casefold()) for m in self.config.meta_prompt_markers]
        self._line_markers = (
            re.compile(
                r"^[ \t]*(" + "|".join(map(re.escape, self.config.line_start_markers)) + ")",
                re.IGNORECASE | re.MULTILINE,
            )
            if self.config.line_start_markers
            else None
        )
        self._placeholder = (
            re.compile(self.config.placeholder_pattern, re.IGNORECASE) if self.config.placeholder_pattern else None
        )
        if self.config.expected_language is not None:
            _batch_identifier()  # load the language model once, before any worker is forked
        self._min_lines = _min_lines_to_fail(
            self.config.max_duplicate_line_fraction, self.config.max_duplicate_line_char_fraction
        )

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        """Apply every rule to every row (see the class docstring); returns one decision per row."""
        t0 = time.perf_counter()
        rows = rows.reset_index(drop=True)
        result = GateResult.all_kept(self.name, len(rows))
        texts = ["" if is_missing(t) else str(t) for t in rows[TEXT_COLUMN].tolist()]
        normalized = normalize_many(texts)
        timings: dict[str, float] = {}

        def timed(label: str, fn: Any, *args: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args)
            timings[label] = round(time.perf_counter() - start, 4)
            return out

        timed("empty", self._rule_empty, result, texts, normalized)
        findings, workers = timed("scan", self._scan, result, texts, normalized)
        apply = lambda categories: self._apply(result, findings, categories)  # noqa: E731
        timed("meta_prompt_leak", apply, ("meta_prompt_leak",))
        timed("length", self._rule_length, result, texts, normalized)
        timed("echo", self._rule_echo, result, rows)
        timed("repetition+wrong_language", apply, ("repetition", "wrong_language"))
        total = time.perf_counter() - t0
        result.metrics = {
            "config": self.config.model_dump(mode="json"),
            **result.counters(),
            "timings_s": {**timings, "total": round(total, 4)},
            "workers": workers,
            "rows_per_s": round(len(rows) / max(total, 1e-9), 1),
        }
        return result

    # ----------------------------------------------------------------------------------------- rules

    def _rule_empty(self, result: GateResult, texts: list[str], normalized: list[str]) -> None:
        """Blank text, or no words and no symbol content: emoji / symbol answers (``"👍"``) are content, judged
        by the length rules instead (:func:`has_symbol_content`)."""
        for i, (raw, norm) in enumerate(zip(texts, normalized)):
            if not raw.strip():
                result.drop(i, "empty", "empty: text is blank", 0.0)
            elif not norm and not has_symbol_content(raw):
                result.drop(i, "empty", f"empty: no words, only punctuation/symbols ({len(raw.strip())} chars)", 0.0)

    def _meta_prompt(self, raw: str) -> str | None:
        """Reason for a leaked marker, a leaked prompt header at the start of a line or an unfilled placeholder
        (outside code and templating contexts) in ``raw``, or ``None``."""
        folded = raw.casefold()
        marker = next((m for m, low in self._markers if low in folded), None)
        if marker is not None:
            return f'leaked meta-prompt text "{marker}"'
        if self._line_markers is not None and (m := self._line_markers.search(raw)):
            return f'leaked meta-prompt text "{m.group(1)}" at the start of a line'
        if self._placeholder is not None:
            for m in self._placeholder.finditer(raw):
                if not (self.config.placeholder_skip_code and in_code_context(raw, m.start())):
                    return f'leaked meta-prompt text: unfilled template placeholder "{m.group(0)}"'
        return None

    def _rule_length(self, result: GateResult, texts: list[str], normalized: list[str]) -> None:
        c = self.config
        n_chars = np.fromiter((len(t.strip()) for t in texts), dtype=np.int64, count=len(texts))
        n_words = np.fromiter((t.count(" ") + 1 if t else 0 for t in normalized), dtype=np.int64, count=len(texts))
        checks = [
            (c.min_words, n_words, "too_short", "words", np.less, "<", "min"),
            (c.min_chars, n_chars, "too_short", "chars", np.less, "<", "min"),
            (c.max_words, n_words, "too_long", "words", np.greater, ">", "max"),
            (c.max_chars, n_chars, "too_long", "chars", np.greater, ">", "max"),
        ]
        for limit, values, category, unit, cmp, sign, word in checks:
            if limit is None:
                continue
            for i in np.flatnonzero(cmp(values, limit) & result.keep):
                v = int(values[i])
                label = "too short" if category == "too_short" else "too long"
                only = " (emoji/symbols only)" if not normalized[i] else ""  # no words left after the empty rule
                result.drop(int(i), category, f"{label}: {v} {unit} {sign} {word} {limit}{only}", v)

    def _rule_echo(self, result: GateResult, rows: pd.DataFrame) -> None:
        c = self.config
        if c.instruction_column not in rows or c.response_column not in rows:
            return
        instructions = rows[c.instruction_column].tolist()
        responses = rows[c.response_column].tolist()
        for i in np.flatnonzero(result.keep):
            response = normalize_text(responses[i])
            if not response:
                raw = "" if is_missing(responses[i]) else str(responses[i])
                if not has_symbol_content(raw):
                    result.drop(int(i), "empty", f'empty: response column "{c.response_column}" has no words', 0.0)
                elif not normalize_text(instructions[i]) and _symbols_equal(raw, instructions[i]):
                    result.drop(int(i), "echo", "echo: response identical to instruction (normalised)", 1.0)
            elif response == normalize_text(instructions[i]):
                result.drop(int(i), "echo", "echo: response identical to instruction (normalised)", 1.0)

    def _scan(
        self, result: GateResult, texts: list[str], normalized: list[str]
    ) -> tuple[list[tuple[int, str, str, float]], int]:
        """Per-row rules (meta-prompt leak, repetition, language) on the rows still kept, in forked workers for
        large tables. Returns the findings and the number of processes used. The findings are applied by
        :meth:`_apply` in rule order, so a row is still reported under the first rule it fails."""
        todo = [int(i) for i in np.flatnonzero(result.keep)]
        workers = self.config.num_workers or min(4, os.cpu_count() or 1)
        forkable = "fork" in mp.get_all_start_methods() and threading.active_count() == 1
        if workers <= 1 or len(todo) < self.config.parallel_min_rows or not forkable:
            return self._scan_rows(todo, texts, normalized), 1
        return _scan_forked(self, todo, texts, normalized, workers), workers

    @staticmethod
    def _apply(result: GateResult, findings: list[tuple[int, str, str, float]], categories: tuple[str, ...]) -> None:
        for i, category, reason, score in findings:
            if category in categories:
                result.drop(i, category, reason, score)

    def _scan_rows(self, idx: list[int], texts: list[str], normalized: list[str]) -> list[tuple[int, str, str, float]]:
        """Findings ``(row, category, reason, score)`` of the per-row rules for rows ``idx`` (at most one per
        row: meta-prompt leak, else repetition, else wrong language)."""
        findings: list[tuple[int, str, str, float]] = []
        rest = []
        c = self.config
        screen = token_screen(
            [normalized[i] for i in idx],
            c.max_token_run,
            c.ngram_rules_min_words,
            c.top_ngram_max_char_fraction,
            c.duplicate_ngram_max_char_fraction,
        )
        for i, maybe in zip(idx, screen.tolist()):
            leak = self._meta_prompt(texts[i])
            if leak is not None:
                findings.append((i, "meta_prompt_leak", leak, 1.0))
                continue
            found = self._repetition(texts[i], normalized[i], words_may_repeat=maybe)
            if found is None:
                rest.append(i)
            else:
                findings.append((i, "repetition", found[0], float(found[1])))
        findings.extend(self._language_findings(rest, texts))
        return findings

    def _repetition(self, text: str, normalized: str, words_may_repeat: bool = True) -> tuple[str, float] | None:
        """The first repetition rule ``text`` fails, as ``(reason, measured value)``, or ``None``.

        ``words_may_repeat=False`` (from :func:`token_screen`) skips the word-level rules, which it proved pass.
        """
        c = self.config
        if text.count("\n") + 1 >= self._min_lines:
            found = self._line_repetition(text)
            if found is not None:
                return found
        if not words_may_repeat:
            return None
        tokens = normalized.split(" ")
        counts = Counter(tokens)
        if len(counts) == len(tokens):
            return None  # no word repeats: no run, no repeated n-gram
        if c.max_token_run is not None and max(counts.values()) > c.max_token_run:
            run = longest_token_run(tokens, c.max_token_run, c.token_run_skip_numbers)
            if run is not None:
                return f'repetition: token "{run[0]}" repeated {run[1]} times in a row > max {c.max_token_run}', run[1]
        if len(tokens) >= c.ngram_rules_min_words:
            return self._ngram_repetition(tokens, counts, len(normalized) - len(tokens) + 1)
        return None

    def _line_repetition(self, text: str) -> tuple[str, float] | None:
        c = self.config
        n_lines, n_dup, chars, dup_chars = duplicate_line_stats(text)
        if n_lines < 2 or n_dup == 0:
            return None
        frac = n_dup / n_lines
        if c.max_duplicate_line_fraction is not None and frac > c.max_duplicate_line_fraction:
            a, b = _pct(frac, c.max_duplicate_line_fraction)
            return f"repetition: {a} duplicate lines > {b} ({n_dup} of {n_lines} lines)", frac
        char_frac = dup_chars / chars
        if c.max_duplicate_line_char_fraction is not None and char_frac > c.max_duplicate_line_char_fraction:
            a, b = _pct(char_frac, c.max_duplicate_line_char_fraction)
            return f"repetition: {a} of characters in duplicate lines > {b}", char_frac
        return None

    def _ngram_repetition(self, tokens: list[str], counts: Counter[str], total: int) -> tuple[str, float] | None:
        """Top and duplicate n-gram rules, exact but cheap on ordinary text thanks to two bounds from one token
        count. With ``M1`` the largest ``count(w) * len(w)`` and ``R`` the characters of repeated token
        occurrences (all but the first of each token): the top n-gram covers at most ``n * M1`` characters (each
        of its ``c`` occurrences puts token ``g_j`` at a distinct position, so ``c * len(g_j) <= M(g_j)``), and
        duplicate n-grams cover at most ``R`` (every covered word repeats an earlier occurrence of itself).

        Args:
            tokens: the words of the normalised text; counts: their ``Counter``; total: their characters.
        """
        c = self.config
        top_rules, dup_rules = c.top_ngram_max_char_fraction, c.duplicate_ngram_max_char_fraction
        m1 = max(map(operator.mul, map(len, counts), counts.values()))
        for n, limit in top_rules.items():
            if n * m1 <= limit * total:
                continue
            found = top_ngram(tokens, n)
            if found is None:
                continue
            gram, count = found
            frac = count * sum(map(len, gram)) / total
            if frac > limit:
                a, b = _pct(frac, limit)
                return f'repetition: top {n}-gram "{" ".join(gram)}" ({count}x) covers {a} of characters > {b}', frac
        bound = 1.0 - sum(map(len, counts)) / total
        for n, limit in dup_rules.items():
            if bound <= limit:
                continue  # coverage <= R, and coverage only shrinks as n grows
            frac = bound = duplicate_ngram_chars(tokens, n) / total
            if frac > limit:
                a, b = _pct(frac, limit)
                return f"repetition: duplicate {n}-grams cover {a} of characters > {b}", frac
        return None

    def _language_findings(self, idx: list[int], texts: list[str]) -> list[tuple[int, str, str, float]]:
        c = self.config
        if c.expected_language is None:
            return []
        idx = [i for i in idx if len(texts[i].strip()) >= c.language_min_chars]
        if not idx:
            return []
        detected = _batch_identifier().classify_many([texts[i].strip()[: c.language_max_chars] for i in idx])
        findings = []
        for i, (lang, prob) in zip(idx, detected):
            if lang != c.expected_language and prob >= c.language_min_confidence:
                reason = f"wrong language: detected {lang} ({prob:.2f}) ≠ {c.expected_language}"
                findings.append((i, "wrong_language", reason, prob))
        return findings


def _symbols_equal(a: Any, b: Any) -> bool:
    """Two word-less texts (emoji / symbols) are equal up to Unicode compatibility forms and spacing."""
    fold = lambda t: "".join(unicodedata.normalize("NFKC", "" if is_missing(t) else str(t)).split())  # noqa: E731
    return fold(a) == fold(b)


#: (gate, texts, normalized) visible to forked workers without pickling the table.
_FORK_STATE: tuple[QualityGate, list[str], list[str]] | None = None


def _scan_worker(idx: list[int]) -> list[tuple[int, str, str, float]]:
    assert _FORK_STATE is not None
    gate, texts, normalized = _FORK_STATE
    return gate._scan_rows(idx, texts, normalized)


def _scan_forked(
    gate: QualityGate, idx: list[int], texts: list[str], normalized: list[str], workers: int
) -> list[tuple[int, str, str, float]]:
    """:meth:`QualityGate._scan_rows` over ``idx`` split across forked processes (input shared copy-on-write)."""
    global _FORK_STATE
    chunks = [list(c) for c in np.array_split(np.asarray(idx, dtype=np.int64), workers * 4) if len(c)]
    _FORK_STATE = (gate, texts, normalized)
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_scan_worker, [[int(i) for i in c] for c in chunks])
    finally:
        _FORK_STATE = None
    return [f for part in parts for f in part]

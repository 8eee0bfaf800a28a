"""CSV export / import of review items, for reviewers who work offline in a spreadsheet.

:func:`export_csv` writes a batch's items that still need a decision (key columns, display fields, then empty
``verdict``, ``reason_category``, ``reason_text``, ``reviewer_id`` columns); the reviewer fills those in;
:func:`import_csv` validates the whole file first and records decisions only if every row is valid.

Double review (:mod:`synqa_dagster.review.agreement`): the work file never shows another reviewer's verdict, nor
which rows are double-reviewed (independence); export it for one reviewer (``reviewer_hmac``) to leave out the rows
they decided already. Import refuses a second, different decision by the same reviewer on a row (the line, the
field ``reviewer_id`` and the row are named); importing the same file twice records nothing new. The owner's view
of every reviewer's decision per row is :func:`export_decisions_csv` (not for reviewers: it shows the verdicts).

Rows are hostile text. To stop spreadsheet formula injection (OWASP "CSV Injection",
https://owasp.org/www-community/attacks/CSV_Injection) every cell starting with ``=``, ``+``, ``-``, ``@``, tab or
carriage return is written with a leading ``'``; a cell that already starts with ``'`` gets one more, so import
can strip exactly one leading ``'`` from any cell and get the original text back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from synqa_dagster.errors import utf8_problem
from synqa_dagster.review.store import ReviewStore, validate_decision

KEY_COLUMNS = ("batch", "row_id", "sample_version", "slice_key")
DECISION_COLUMNS = ("verdict", "reason_category", "reason_text", "reviewer_id")
DISPLAY_ORDER = ("seed_id", "seed_text", "technique", "intent", "locale", "prompt_template_id", "instruction",
                 "response", "conversation")
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"
ENCODING = "utf-8-sig"  # BOM so spreadsheet programs read UTF-8; reading accepts files with or without it


DECISIONS_EXPORT_COLUMNS = (
    "batch", "row_id", "sample_version", "slice_key", "double_review", "state", "final_verdict",
    "final_reason_category", "final_reason_text", "final_reviewer_hmac",
    *(f"review_{n}_{field}" for n in (1, 2, 3)
      for field in ("reviewer_hmac", "verdict", "reason_category", "reason_text", "decided_at")),
)
"""Columns of :func:`export_decisions_csv`: one line per sampled row, its resolved decision, then each review."""


@dataclass(frozen=True)
class ImportResult:
    """Outcome of :func:`import_csv`.

    Attributes:
        recorded: decisions recorded.
        already_decided: rows that needed no more decisions, or that this file's reviewer had decided the same way
            before (e.g. the file imported twice); nothing changed for them.
        errors: one message per problem, each naming the file, the line and the field. When validation finds
            any, nothing is recorded (``recorded == already_decided == 0``).
        skipped: rows left undecided in the file (all four decision cells blank).
    """

    recorded: int
    already_decided: int
    errors: tuple[str, ...]
    skipped: int = 0

    @property
    def ok(self) -> bool:
        """True when there were no errors."""
        return not self.errors


def escape_cell(text: str) -> str:
    """Prefix ``'`` to a cell that a spreadsheet would run as a formula (or that starts with ``'``)."""
    return ESCAPE + text if text.startswith(FORMULA_TRIGGERS + (ESCAPE,)) else text


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell`: drop one leading ``'``."""
    return text[1:] if text.startswith(ESCAPE) else text


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    try:
        if pd.isna(value):  # NaN, pd.NA, NaT
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _display_columns(columns: list[str]) -> list[str]:
    rest = [c for c in columns if c not in KEY_COLUMNS and c not in DISPLAY_ORDER]
    scores = sorted(c for c in rest if c.startswith("score_"))
    return ([c for c in DISPLAY_ORDER if c in columns] + [c for c in rest if c not in scores and c != "sample_position"]
            + scores)


def export_csv(store: ReviewStore, batch: str, path: str | os.PathLike[str], *,
               reviewer_hmac: str | None = None) -> int:
    """Write ``batch``'s items of the current sample that still need a decision to ``path`` (atomically: temp
    file, then replace).

    An item needs a decision while it is undecided or, when double-reviewed, waiting for its second or third
    reviewer. With ``reviewer_hmac`` (the HMAC of the reviewer the file is for), items that reviewer has decided
    already are left out. The file holds no verdict and no sign of which items are double-reviewed.

    Columns: batch, row_id, sample_version, slice_key, the display fields (seed, technique, ..., conversation as
    JSON, score_* last), then the empty decision columns verdict, reason_category, reason_text, reviewer_id.
    Display fields named like a key or decision column are written as ``item_<name>``.

    Returns:
        the number of items written.
    Raises:
        UnknownBatchError: the batch has no sample in the store.
    """
    items = store.items(batch)
    status = store.row_status(batch, str(items["sample_version"].iloc[0]) if len(items) else None)
    open_rows = set(status.loc[status["state"] != "complete", "row_id"])
    if reviewer_hmac is not None:
        decided = store.all_decisions(batch)
        open_rows -= set(decided.loc[decided["reviewer_hmac"] == reviewer_hmac, "row_id"])
    rows = [r for r in items.to_dict(orient="records") if r["row_id"] in open_rows]
    display = _display_columns([str(c) for c in items.columns])
    header = [*KEY_COLUMNS, *(f"item_{c}" if c in DECISION_COLUMNS else c for c in display), *DECISION_COLUMNS]
    body = [[escape_cell(_cell(v)) for v in [batch, row["row_id"], row["sample_version"], row["slice_key"],
                                             *(row.get(c) for c in display)]] + [""] * len(DECISION_COLUMNS)
            for row in rows]
    _write_private_csv(Path(path), header, body)
    return len(rows)


def export_decisions_csv(store: ReviewStore, batch: str, path: str | os.PathLike[str]) -> int:
    """Write every sampled row of ``batch``'s current sample with each reviewer's decision to ``path`` (the
    owner's view for checking agreement; owner-only file, written atomically, cells escaped as in
    :func:`export_csv`).

    Columns (:data:`DECISIONS_EXPORT_COLUMNS`): batch, row_id, sample_version, slice_key, double_review (yes/no),
    state (undecided / awaiting_second / awaiting_third / complete), the resolved decision (``final_*``, empty
    until the row is complete; see :func:`~synqa_dagster.review.agreement.resolve_decisions`), then per review
    round 1-3 the reviewer's HMAC id, verdict, reason category, reason text and time.

    Returns:
        the number of rows written (the sample size).
    Raises:
        UnknownBatchError: the batch has no sample in the store.
    """
    status = store.row_status(batch)
    version = store.progress(batch).sample_version
    every = store.all_decisions(batch, version)
    final = store.decisions(batch, version).set_index("row_id")
    by_row: dict[str, dict[int, dict]] = {}
    for record in every.to_dict(orient="records"):
        by_row.setdefault(record["row_id"], {})[int(record["review_round"])] = record
    body = []
    for row in status.to_dict(orient="records"):
        row_id = row["row_id"]
        resolved = final.loc[row_id] if row_id in final.index else None
        cells = [batch, row_id, version, row["slice_key"], "yes" if row["double_review"] else "no", row["state"],
                 *((resolved[c] if resolved is not None else None)
                   for c in ("verdict", "reason_category", "reason_text", "reviewer_hmac"))]
        for n in (1, 2, 3):
            review = by_row.get(row_id, {}).get(n, {})
            cells += [review.get(c) for c in ("reviewer_hmac", "verdict", "reason_category", "reason_text",
                                              "decided_at")]
        body.append([escape_cell(_cell(v)) for v in cells])
    _write_private_csv(Path(path), list(DECISIONS_EXPORT_COLUMNS), body)
    return len(body)


def _write_private_csv(target: Path, header: list[str], rows: list[list[str]]) -> None:
    """Write a CSV owner-only (0600 whatever the umask: it holds sampled rows) via a temp file and a replace."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding=ENCODING, newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Pending:
    line: int
    batch: str
    row_id: str
    sample_version: str
    verdict: str
    reason_category: str | None
    reason_text: str
    reviewer_id: str


class _BatchFacts:
    """Per-batch facts needed to validate rows, fetched once per batch: the current version, its row ids, and
    each row's decisions by reviewer HMAC (verdict, category, text)."""

    def __init__(self, store: ReviewStore):
        self._store = store
        self._known = set(store.batches())
        self._cache: dict[str, tuple[str, set[str], dict[tuple[str, str], tuple]]] = {}

    def get(self, batch: str) -> tuple[str, set[str], dict[tuple[str, str], tuple]] | None:
        if batch not in self._known:
            return None
        if batch not in self._cache:
            version = self._store.progress(batch).sample_version
            decided = self._store.all_decisions(batch, version)
            by_reviewer = {(r, h): (v, c, t) for r, h, v, c, t in zip(
                decided["row_id"], decided["reviewer_hmac"], decided["verdict"], decided["reason_category"],
                decided["reason_text"])}
            self._cache[batch] = (version, set(self._store.items(batch, version)["row_id"]), by_reviewer)
        return self._cache[batch]


def import_csv(store: ReviewStore, path: str | os.PathLike[str], reviewer_hash: Callable[[str], str]) -> ImportResult:
    """Validate a filled-in export and record its decisions (all or nothing on validation errors).

    Each row with a ``verdict`` becomes one :meth:`ReviewStore.record_decision` with
    ``reviewer_hmac = reviewer_hash(reviewer_id)``; the reviewer must be registered (``add_reviewer``). Rows
    with all four decision cells blank are skipped. Checks per row: known batch, current ``sample_version``,
    a ``row_id`` of that sample, no row twice, valid verdict / category / text (see
    :func:`~synqa_dagster.review.store.validate_decision`), known reviewer, and no second decision by the same
    reviewer on a row (a double-reviewed row's second review must come from another reviewer; the same decision
    again, e.g. the file imported twice, counts as already decided). Cells are un-escaped first
    (:func:`unescape_cell`).

    Returns:
        :class:`ImportResult`; if any row is invalid, ``errors`` lists every problem ("FILE, line N, field F: ...")
        and nothing is recorded. A sample replaced between validation and recording shows up as an error for the
        affected lines (other lines are recorded).
    """
    source = str(path)
    errors: list[str] = []
    pending: list[_Pending] = []
    skipped = 0

    def fail(line: int, field: str, message: str) -> None:
        errors.append(f"{source}, line {line}, field {field}: {message}")

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return ImportResult(0, 0, (f"{source}: cannot read: {exc.strerror or exc}",))
    problem = utf8_problem(data, skip_bom=True)
    if problem is not None:
        bad_line, column, offset, shown = problem
        return ImportResult(0, 0, (f"{source}, line {bad_line}: not valid UTF-8 (byte(s) {shown} at offset {offset}, "
                                   f"column {column}); save the file as UTF-8",))
    records = _read_records(io.StringIO(data.decode(ENCODING), newline=""), source, errors)
    if records is None:
        return ImportResult(0, 0, tuple(errors))

    reviewers = set(store.reviewers())
    facts = _BatchFacts(store)
    already = 0
    seen: dict[tuple[str, str], int] = {}
    for line, row in records:
        if not any(row[c].strip() for c in DECISION_COLUMNS):
            skipped += 1
            continue
        before = len(errors)
        batch, row_id, version = row["batch"], row["row_id"], row["sample_version"]
        known = facts.get(batch)
        if known is None:
            fail(line, "batch", f"unknown batch {batch!r}")
        elif version != known[0]:
            fail(line, "sample_version", f"{version!r} is not the current sample of batch {batch!r} "
                                         f"({known[0]!r}); export the batch again")
        elif row_id not in known[1]:
            fail(line, "row_id", f"{row_id!r} is not in the sample of batch {batch!r}")
        if (batch, row_id) in seen:
            fail(line, "row_id", f"{row_id!r} appears again (first on line {seen[(batch, row_id)]})")
        seen.setdefault((batch, row_id), line)
        try:
            verdict, category, text = validate_decision(row["verdict"], row["reason_category"], row["reason_text"])
        except ValueError as exc:
            fail(line, getattr(exc, "field", "verdict"), str(exc))
        reviewer_id = row["reviewer_id"].strip()
        if not reviewer_id:
            fail(line, "reviewer_id", "required for a decision")
        elif reviewer_id not in reviewers:
            fail(line, "reviewer_id", f"{reviewer_id!r} is not a registered reviewer "
                                      f"(synqa review add-reviewer {reviewer_id!r})")
        elif len(errors) == before and known is not None:
            earlier = known[2].get((row_id, reviewer_hash(reviewer_id)))
            if earlier == (verdict, category, text):
                already += 1  # the same decision again (the file imported twice): nothing to record
                continue
            if earlier is not None:
                fail(line, "reviewer_id", f"{reviewer_id!r} already decided row {row_id!r} of batch {batch!r} "
                                          f"({earlier[0]}); nobody decides a row twice, and a second review must "
                                          f"come from another reviewer")
        if len(errors) == before:
            pending.append(_Pending(line, batch, row_id, version, verdict, category, text, reviewer_id))
    if errors:
        return ImportResult(0, 0, tuple(errors), skipped)

    recorded = 0
    for p in pending:
        outcome = store.record_decision(p.batch, p.row_id, sample_version=p.sample_version,
                                        reviewer_hmac=reviewer_hash(p.reviewer_id), verdict=p.verdict,
                                        reason_category=p.reason_category, reason_text=p.reason_text)
        if outcome == "recorded":
            recorded += 1
        elif outcome == "already_decided":
            already += 1
        elif outcome == "reviewer_already_decided":  # decided between validation and recording (e.g. in the app)
            fail(p.line, "reviewer_id", f"not recorded: {p.reviewer_id!r} already decided row {p.row_id!r} of "
                                        f"batch {p.batch!r}")
        else:
            fail(p.line, "sample_version" if outcome == "stale_sample" else "row_id", f"not recorded: {outcome}")
    return ImportResult(recorded, already, tuple(errors), skipped)


def _read_records(handle, source: str, errors: list[str]) -> list[tuple[int, dict[str, str]]] | None:
    """Parse the CSV into (first line of the record, un-escaped cells by column); None if the file is unusable."""
    reader = csv.reader(handle, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        errors.append(f"{source}, line 1: malformed CSV header ({exc})")
        return None
    if header is None:
        errors.append(f"{source}, line 1: empty file (expected a header row)")
        return None
    header = [unescape_cell(h).strip() for h in header]
    missing = [c for c in ("batch", "row_id", "sample_version", *DECISION_COLUMNS) if c not in header]
    if missing:
        for column in missing:
            errors.append(f"{source}, line 1, field {column}: column missing from the header")
        return None
    index = {name: header.index(name) for name in ("batch", "row_id", "sample_version", *DECISION_COLUMNS)}
    records = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"{source}, line {line}: malformed CSV ({exc})")
            return None
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            errors.append(f"{source}, line {line}: expected {len(header)} fields as in the header, got {len(cells)}")
            continue
        records.append((line, {name: unescape_cell(cells[i]) for name, i in index.items()}))
    return records

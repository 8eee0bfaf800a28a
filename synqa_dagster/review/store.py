"""The human review store: sampled rows, reviewer decisions and reviewer tokens in SQLite or PostgreSQL.

One SQL schema and one set of statements serve both databases (:class:`ReviewStore`); the two subclasses only say
how to open a transaction, how parameters are written and how a row is locked:

* :class:`SQLiteReviewStore` (``sqlite:///abs/path.db``): WAL journal; every write runs in ``BEGIN IMMEDIATE``,
  which takes the database write lock up front, so "pick the next item and lease it" is atomic across threads
  and processes.
* :class:`PostgresReviewStore` (``postgresql://user@host:port/db``): ``SELECT ... FOR UPDATE SKIP LOCKED`` hands
  two reviewers asking at the same moment two different items.

Tables (all keyed by ``batch`` and ``sample_version``; old versions are kept but only the current one counts):

``review_batches``   batch -> current sample version
``review_samples``   one row per pushed (batch, sample_version): push time, review deadline and the
                     ``disagreement_policy`` of its double-reviewed rows (see :mod:`synqa_dagster.review.agreement`)
``review_slices``    the sampling plan per slice (lot size, sample size, acceptance / rejection numbers)
``review_items``     one row per sampled row: slice, position, display payload (JSON), ``double_review`` (0/1: the
                     row gets a second, independent reviewer), the current lease
``review_decisions`` one row per reviewer decision: ``review_round`` 1, 2 or 3 (a single-reviewed row has one
                     round; a double-reviewed row two, or three when the first two disagree under the
                     ``third_reviewer`` policy). PRIMARY KEY (batch, sample_version, row_id, review_round) and
                     UNIQUE (batch, sample_version, row_id, reviewer_hmac), with ``INSERT ... ON CONFLICT DO
                     NOTHING``: racing reviewers never lose or double-count a round, and nobody decides a row twice
``reviewers``        reviewer id (needed to sign in) and sha256 of the reviewer's token (the token is never stored)
``review_sessions``  one row per web-app sign-in: sha256 of the random session id (the id itself lives only in the
                     reviewer's cookie), reviewer id, sha256 of the token signed in with, created / expires /
                     revoked times (Unix seconds). A session is live while it is unrevoked, unexpired and its
                     reviewer still holds that token; signing out revokes it, re-adding or removing the reviewer
                     revokes all of theirs. Expired rows are deleted at the next sign-in.

Every table is created with ``CREATE TABLE IF NOT EXISTS``, so a database made by an older version of this module
gains the tables it lacks when opened (``review_sessions`` was added without changing :data:`SCHEMA_VERSION`:
the change is additive, and older code reading a newer database simply ignores the table).

Schema version 2 (double review) is not additive: a version 1 database (one decision per row) is migrated when
opened, in the schema-creating transaction (all or nothing; PostgreSQL serialises it with an advisory lock):
``review_items`` gains ``double_review`` (0 for every existing row), ``review_samples`` gains
``disagreement_policy``, and ``review_decisions`` is rebuilt with ``review_round`` (every existing decision becomes
round 1, so existing samples keep their decisions and their progress). Code that reads version 1 refuses a version 2
database with a message naming both versions instead of miscounting double-reviewed rows.

SQLite file permissions: the database file is created owner-only (0600) whatever the umask, in a folder created
0700 when it does not exist yet; SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files the database file's
permissions. Opening an existing database whose file (or side file) is readable or writable by group/others
tightens it to owner-only (``mode & 0o700``) instead of refusing: databases made before this rule were created
0644 under the usual umask, and the fix is the same ``chmod`` an operator would run. An existing folder is left as
it is (it may be shared and hold other files).

Decisions never hold a raw reviewer id: callers pass ``reviewer_hmac`` (an HMAC of the id under a secret key, see
``synqa_dagster.lineage.keys.hmac_id``).

References: SQLite "BEGIN IMMEDIATE" (https://sqlite.org/lang_transaction.html), upsert
(https://sqlite.org/lang_upsert.html); PostgreSQL "The Locking Clause" / SKIP LOCKED
(https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE) and ``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pandas as pd

from synqa_dagster.review.agreement import (  # DECISION_COLUMNS is re-exported (it was defined here)
    ALL_DECISION_COLUMNS, DECISION_COLUMNS, DEFAULT_POLICY, check_policy, resolve_decisions, rounds_needed, row_state,
)

REASON_CATEGORIES = ("factual_error", "wrong_label", "not_real_world", "unsafe", "other")
"""Why a reviewer rejected a row (the web app shows them as "factual error", "wrong label", ...)."""

REASON_LABELS = {
    "factual_error": "factual error",
    "wrong_label": "wrong label",
    "not_real_world": "not real-world relevant",
    "unsafe": "unsafe",
    "other": "other (explain)",
}
"""Human-readable label of each reason category, in :data:`REASON_CATEGORIES` order."""

VERDICTS = ("accept", "reject")
MAX_REASON_TEXT = 4000
ITEM_KEYS = ("row_id", "slice_key", "sample_position", "sample_version")
SLICE_NUMBERS = ("lot_size", "sample_size", "acceptance_number", "rejection_number")
SLICE_COLUMNS = ("slice_key", *SLICE_NUMBERS, "plan")
ROW_STATUS_COLUMNS = ("row_id", "slice_key", "sample_position", "double_review", "decisions", "state")
RESERVED_ITEM_COLUMNS = ("double_review",)
SCHEMA_VERSION = "2"

_DECISIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {name} (batch TEXT NOT NULL, sample_version TEXT NOT NULL, row_id TEXT NOT NULL,"
    " review_round INTEGER NOT NULL CHECK (review_round BETWEEN 1 AND 3), verdict TEXT NOT NULL,"
    " reason_category TEXT, reason_text TEXT NOT NULL, reviewer_hmac TEXT NOT NULL, decided_at TEXT NOT NULL,"
    " PRIMARY KEY (batch, sample_version, row_id, review_round), UNIQUE (batch, sample_version, row_id, reviewer_hmac))"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS review_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS review_batches (batch TEXT PRIMARY KEY, current_version TEXT NOT NULL,"
    " updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS review_samples (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " pushed_at TEXT NOT NULL, deadline TEXT, disagreement_policy TEXT NOT NULL DEFAULT 'third_reviewer',"
    " PRIMARY KEY (batch, sample_version))",
    "CREATE TABLE IF NOT EXISTS review_slices (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " slice_key TEXT NOT NULL, lot_size INTEGER NOT NULL, sample_size INTEGER NOT NULL,"
    " acceptance_number INTEGER NOT NULL, rejection_number INTEGER NOT NULL, plan TEXT NOT NULL,"
    " details TEXT NOT NULL, PRIMARY KEY (batch, sample_version, slice_key))",
    "CREATE TABLE IF NOT EXISTS review_items (batch TEXT NOT NULL, sample_version TEXT NOT NULL,"
    " row_id TEXT NOT NULL, slice_key TEXT NOT NULL, sample_position INTEGER NOT NULL, payload TEXT NOT NULL,"
    " lease_holder TEXT, lease_until DOUBLE PRECISION, double_review INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (batch, sample_version, row_id))",
    "CREATE INDEX IF NOT EXISTS review_items_order ON review_items (batch, sample_version, sample_position)",
    _DECISIONS_TABLE.format(name="review_decisions"),
    "CREATE TABLE IF NOT EXISTS reviewers (reviewer_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL,"
    " created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS review_sessions (session_sha256 TEXT PRIMARY KEY, reviewer_id TEXT NOT NULL,"
    " token_sha256 TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
    " revoked_at DOUBLE PRECISION)",
    "CREATE INDEX IF NOT EXISTS review_sessions_reviewer ON review_sessions (reviewer_id)",
)
_MIGRATE_1_TO_2 = (
    "ALTER TABLE review_items ADD COLUMN double_review INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE review_samples ADD COLUMN disagreement_policy TEXT NOT NULL DEFAULT 'third_reviewer'",
    _DECISIONS_TABLE.format(name="review_decisions_v2"),
    "INSERT INTO review_decisions_v2 (batch, sample_version, row_id, review_round, verdict, reason_category,"
    " reason_text, reviewer_hmac, decided_at) SELECT batch, sample_version, row_id, 1, verdict, reason_category,"
    " reason_text, reviewer_hmac, decided_at FROM review_decisions",
    "DROP TABLE review_decisions",
    "ALTER TABLE review_decisions_v2 RENAME TO review_decisions",
    "UPDATE review_meta SET value = '2' WHERE key = 'schema_version'",
)
"""Version 1 -> 2, run in one transaction when a version 1 database is opened (see the module docstring)."""
MAX_SESSION_ID = 128  # longer "session ids" are refused without a lookup (ours are 43 characters)
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


class UnknownBatchError(KeyError):
    """Raised when a batch has never been pushed to the store (a ``KeyError`` naming the batch)."""


class ReviewFieldError(ValueError):
    """An invalid input field (a ``ValueError``); ``field`` names it ("verdict", "reason_category", ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ReviewProgress:
    """How far the review of one batch's current sample has got.

    Attributes:
        batch: the batch (partition key).
        sample_version: the current sample version of the batch (older versions are not counted).
        total: sampled rows to review.
        decided: rows whose review is complete (:func:`~synqa_dagster.review.agreement.row_state`: one decision,
            or for a double-reviewed row two that agree, or two / three after a disagreement, by policy);
            ``accepted + rejected == decided``, counted on the resolved decision
            (:func:`~synqa_dagster.review.agreement.resolve_decisions`).
        accepted: rows resolved to accept.
        rejected: rows resolved to reject.
        complete: ``decided == total and total > 0`` (a double-reviewed row waiting for its second or third
            reviewer keeps the batch incomplete).
        deadline: when the review is due (aware UTC datetime) or None.
        decisions_digest: sha256 (hex) over the sorted ``(row_id, verdict, reason_category, reason_text)`` of every
            decision of the current version (each reviewer's, so a second or third review changes it too); a
            sensor cursor can key on it.
        double_review: rows flagged for a second, independent reviewer.
        awaiting_second: double-reviewed rows with one decision.
        awaiting_third: double-reviewed rows whose two decisions disagree, waiting for a third reviewer
            (``third_reviewer`` policy only).
        undecided: rows without any decision (``total == decided + awaiting_second + awaiting_third + undecided``).
        reviews: decisions recorded (every reviewer's; >= ``decided``).
        disagreement_policy: the sample's policy (see :mod:`synqa_dagster.review.agreement`).
    """

    batch: str
    sample_version: str
    total: int
    decided: int
    accepted: int
    rejected: int
    complete: bool
    deadline: datetime | None
    decisions_digest: str
    double_review: int = 0
    awaiting_second: int = 0
    awaiting_third: int = 0
    undecided: int = 0
    reviews: int = 0
    disagreement_policy: str = DEFAULT_POLICY


def validate_decision(verdict: Any, reason_category: Any, reason_text: Any) -> tuple[str, str | None, str]:
    """Check one decision's fields; returns them normalised ``(verdict, reason_category or None, reason_text)``.

    ``verdict`` is "accept" or "reject" (case and surrounding space ignored). A reject needs a category from
    :data:`REASON_CATEGORIES`; "other" also needs a non-blank ``reason_text``. An accept takes no category
    (``None`` or ""); its text is an optional note. ``reason_text`` is at most :data:`MAX_REASON_TEXT` characters
    and holds no NUL character.

    Raises:
        ReviewFieldError: a ValueError whose message starts with, and whose ``field`` is, the offending field
            (``verdict``, ``reason_category`` or ``reason_text``).
    """
    if not isinstance(verdict, str) or verdict.strip().lower() not in VERDICTS:
        raise ReviewFieldError("verdict", f"verdict must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    verdict = verdict.strip().lower()
    if reason_text is None:
        reason_text = ""
    if not isinstance(reason_text, str):
        raise ReviewFieldError("reason_text", f"reason_text must be a string; got {type(reason_text).__name__}")
    if len(reason_text) > MAX_REASON_TEXT or "\x00" in reason_text:
        raise ReviewFieldError("reason_text",
                               f"reason_text must be at most {MAX_REASON_TEXT} characters without NUL characters")
    category = reason_category.strip().lower() if isinstance(reason_category, str) else reason_category
    if category in ("", None):
        category = None
    if verdict == "accept":
        if category is not None:
            raise ReviewFieldError("reason_category",
                                   f"reason_category must be empty for an accept; got {reason_category!r}")
        return verdict, None, reason_text
    if category not in REASON_CATEGORIES:
        raise ReviewFieldError("reason_category", f"reason_category must be one of {', '.join(REASON_CATEGORIES)} "
                                                  f"for a reject; got {reason_category!r}")
    if category == "other" and not reason_text.strip():
        raise ReviewFieldError("reason_text", "reason_text is required when reason_category is 'other'")
    return verdict, category, reason_text


def decisions_digest(rows: Sequence[tuple[str, str, str | None, str]]) -> str:
    """sha256 (hex) of the sorted ``(row_id, verdict, reason_category, reason_text)`` tuples, JSON-encoded."""
    canonical = sorted((str(r), str(v), c or "", t or "") for r, v, c, t in rows)
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode("utf-8")).hexdigest()


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***`` (for logs, reprs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class ReviewStore(ABC):
    """Review store API shared by the SQLite and PostgreSQL back ends (use :meth:`from_url`).

    Every method opens its own connection and transaction, so one store object may be shared by threads and
    several processes may work on the same database. Subclasses provide :meth:`_transaction` and the two SQL
    dialect attributes below; all statements are written once, with ``?`` parameters.

    Attributes:
        url: the store URL as given (includes any password; ``repr`` and :attr:`redacted_url` hide it).
    """

    _lock_clause = ""  # appended to the "next item" SELECT (PostgreSQL: FOR UPDATE SKIP LOCKED)
    _schema_lock_sql: str | None = None  # serialises concurrent schema creation (PostgreSQL advisory lock)

    def __init__(self, url: str):
        self._url = url
        self._ensure_schema()

    # ----------------------------------------------------------------------------------------------- plumbing
    @classmethod
    def from_url(cls, url: str) -> ReviewStore:
        """Open (creating the schema if needed) the store at ``url``.

        ``sqlite:///abs/path.db`` opens a SQLite file (parent folders are created); ``postgresql://...`` or
        ``postgres://...`` (any libpq URI, e.g. ``postgresql://user@host:5432/db``) opens a PostgreSQL database.

        Raises:
            ValueError: for another scheme or a relative SQLite path.
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme == "sqlite":
            return SQLiteReviewStore(url)
        if scheme in ("postgresql", "postgres"):
            return PostgresReviewStore(url)
        raise ValueError(f"review store URL must start with sqlite:/// or postgresql://; got {redact_url(url)!r}")

    @property
    def url(self) -> str:
        """The store URL (with its password, if any: pass it on, do not print it; see :attr:`redacted_url`)."""
        return self._url

    @property
    def redacted_url(self) -> str:
        """The store URL with its password replaced by ``***``."""
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.redacted_url!r})"

    @abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager[_Tx]:
        """A transaction on a fresh connection (``write``: take the write lock up front); each dialect's own."""

    def _ensure_schema(self) -> None:
        with self._transaction(write=True) as tx:
            if self._schema_lock_sql:
                tx.execute(self._schema_lock_sql)
            for statement in _SCHEMA:
                tx.execute(statement)
            tx.execute("INSERT INTO review_meta (key, value) VALUES ('schema_version', ?) "
                       "ON CONFLICT (key) DO NOTHING", (SCHEMA_VERSION,))
            found = tx.execute("SELECT value FROM review_meta WHERE key = 'schema_version'").fetchone()[0]
            if found == "1":  # one decision per row: migrate to double review (see the module docstring)
                for statement in _MIGRATE_1_TO_2:
                    tx.execute(statement)
                found = tx.execute("SELECT value FROM review_meta WHERE key = 'schema_version'").fetchone()[0]
        if found != SCHEMA_VERSION:
            raise RuntimeError(f"review store {self.redacted_url} has schema version {found}; "
                               f"this code reads version {SCHEMA_VERSION}")

    @staticmethod
    def _current_version(tx: _Tx, batch: str) -> str | None:
        row = tx.execute("SELECT current_version FROM review_batches WHERE batch = ?", (batch,)).fetchone()
        return row[0] if row else None

    def _require_version(self, tx: _Tx, batch: str) -> str:
        version = self._current_version(tx, batch)
        if version is None:
            raise UnknownBatchError(f"batch {batch!r} has no sample in the review store {self.redacted_url}")
        return version

    # ------------------------------------------------------------------------------------------------ samples
    def push_sample(self, batch: str, sample_version: str, items: pd.DataFrame, slices: pd.DataFrame,
                    deadline: datetime | None = None, *, double_review: Iterable[Any] | None = None,
                    disagreement_policy: str = DEFAULT_POLICY) -> bool:
        """Store a batch's sample for review; the pushed version becomes the batch's current one.

        Args:
            batch: the batch (partition key).
            sample_version: identifies this sample (e.g. a hash of sampling inputs); any non-empty string.
            items: one row per sampled row: ``row_id`` (unique), ``slice_key`` (one of ``slices``),
                ``sample_position`` (review order, an integer); every other column is display payload
                (instruction, response, conversation, seed_id, seed_text, technique, intent, locale,
                prompt_template_id, score_* ...) kept as one JSON document per item (missing values become null).
                Optional ``batch`` / ``sample_version`` columns must match the arguments. A ``double_review``
                column is refused (pass the flags as the ``double_review`` argument: a payload column would be
                shown to reviewers).
            slices: one row per slice: ``slice_key``, ``lot_size``, ``sample_size``, ``acceptance_number``,
                ``rejection_number`` (non-negative integers), ``plan`` (text); extra columns are kept too.
            deadline: when the review is due; a naive datetime is taken as UTC.
            double_review: row ids (a subset of ``items.row_id``) that get a second, independent reviewer, e.g.
                :func:`synqa_dagster.review.agreement.select_double_review`; None or empty: none.
            disagreement_policy: ``third_reviewer`` or ``defect`` (what a disagreement on a double-reviewed row
                leads to); recorded with the sample, so the web app, progress and :meth:`decisions` all apply it.

        Returns:
            True if stored, made current again, or its double-review flags / policy changed; False if this
            (batch, sample_version) is already the current sample with the same flags and policy (nothing
            changes). Pushing an earlier version again makes it current again, with its decisions. Pushing a
            version again with other flags or another policy updates them in place (the decisions are kept: a
            row that is no longer flagged resolves to its first decision). Other versions' items and decisions are
            kept, tagged with their version, but not counted.

        Raises:
            ValueError: naming the column and row of invalid input, a double_review id that is not sampled, or
                an unknown policy.
        """
        batch = _require_text("batch", batch)
        sample_version = _require_text("sample_version", sample_version)
        policy = check_policy(disagreement_policy)
        reserved = [c for c in RESERVED_ITEM_COLUMNS if c in getattr(items, "columns", ())]
        if reserved:
            raise ValueError(f"items has a {reserved[0]!r} column; pass the flags as push_sample(double_review=...)")
        item_rows = _item_rows(items, batch, sample_version)
        slice_rows = _slice_rows(slices)
        unknown = sorted({row[1] for row in item_rows} - {row[0] for row in slice_rows})
        if unknown:
            raise ValueError(f"items.slice_key has values not in slices.slice_key: {unknown[:5]}")
        flagged = {str(r) for r in (double_review if double_review is not None else ())}
        not_sampled = sorted(flagged - {row[0] for row in item_rows})
        if not_sampled:
            raise ValueError(f"double_review names row ids that are not in items.row_id: {not_sampled[:5]}")
        now = _utcnow_iso()
        with self._transaction(write=True) as tx:
            cursor = tx.execute("INSERT INTO review_samples (batch, sample_version, pushed_at, deadline, "
                                "disagreement_policy) VALUES (?, ?, ?, ?, ?) "
                                "ON CONFLICT (batch, sample_version) DO NOTHING",
                                (batch, sample_version, now, _deadline_iso(deadline), policy))
            if cursor.rowcount != 1:
                # Pushed before: nothing to store, but it becomes current again (e.g. a reverted recipe change
                # brings back an earlier sample, whose decisions count again).
                changed = self._update_flags(tx, batch, sample_version, flagged, policy)
                if self._current_version(tx, batch) == sample_version:
                    return changed
                tx.execute("UPDATE review_batches SET current_version = ?, updated_at = ? WHERE batch = ?",
                           (sample_version, now, batch))
                return True
            tx.executemany("INSERT INTO review_slices (batch, sample_version, slice_key, lot_size, sample_size, "
                           "acceptance_number, rejection_number, plan, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(batch, sample_version, *row) for row in slice_rows])
            tx.executemany("INSERT INTO review_items (batch, sample_version, row_id, slice_key, sample_position, "
                           "payload, double_review) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(batch, sample_version, *row, int(row[0] in flagged)) for row in item_rows])
            tx.execute("INSERT INTO review_batches (batch, current_version, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (batch) DO UPDATE SET current_version = excluded.current_version, "
                       "updated_at = excluded.updated_at", (batch, sample_version, now))
        return True

    @staticmethod
    def _update_flags(tx: _Tx, batch: str, version: str, flagged: set[str], policy: str) -> bool:
        """Make a stored sample's double-review flags and policy those given; True if anything changed."""
        stored = {r[0] for r in tx.execute("SELECT row_id FROM review_items WHERE batch = ? AND sample_version = ? "
                                           "AND double_review = 1", (batch, version)).fetchall()}
        known = {r[0] for r in tx.execute("SELECT row_id FROM review_items WHERE batch = ? AND sample_version = ?",
                                          (batch, version)).fetchall()}
        flagged = flagged & known  # a re-push of the same version with other items keeps the stored items
        old_policy = tx.execute("SELECT disagreement_policy FROM review_samples WHERE batch = ? "
                                "AND sample_version = ?", (batch, version)).fetchone()[0]
        if stored == flagged and old_policy == policy:
            return False
        tx.executemany("UPDATE review_items SET double_review = ? WHERE batch = ? AND sample_version = ? "
                       "AND row_id = ?", [(int(r in flagged), batch, version, r) for r in sorted(stored ^ flagged)])
        tx.execute("UPDATE review_samples SET disagreement_policy = ? WHERE batch = ? AND sample_version = ?",
                   (policy, batch, version))
        return True

    def batches(self) -> list[str]:
        """Every batch with a sample in the store, sorted."""
        with self._transaction(write=False) as tx:
            return [r[0] for r in tx.execute("SELECT batch FROM review_batches ORDER BY batch").fetchall()]

    def disagreement_policy(self, batch: str, sample_version: str | None = None) -> str:
        """The disagreement policy recorded with a sample (default the batch's current one)."""
        with self._transaction(write=False) as tx:
            version = sample_version or self._require_version(tx, batch)
            return self._policy(tx, batch, version)

    @staticmethod
    def _policy(tx: _Tx, batch: str, version: str) -> str:
        row = tx.execute("SELECT disagreement_policy FROM review_samples WHERE batch = ? AND sample_version = ?",
                         (batch, version)).fetchone()
        return str(row[0]) if row and row[0] else DEFAULT_POLICY

    def progress(self, batch: str) -> ReviewProgress:
        """Review progress of ``batch``'s current sample (raises :class:`UnknownBatchError` if never pushed)."""
        with self._transaction(write=False) as tx:
            return self._progress(tx, batch)

    def all_progress(self) -> list[ReviewProgress]:
        """:meth:`progress` of every batch, in batch order (one consistent transaction)."""
        with self._transaction(write=False) as tx:
            batches = [r[0] for r in tx.execute("SELECT batch FROM review_batches ORDER BY batch").fetchall()]
            return [self._progress(tx, batch) for batch in batches]

    def _progress(self, tx: _Tx, batch: str) -> ReviewProgress:
        version = self._require_version(tx, batch)
        deadline = tx.execute("SELECT deadline FROM review_samples WHERE batch = ? AND sample_version = ?",
                              (batch, version)).fetchone()[0]
        policy = self._policy(tx, batch, version)
        status = self._row_status(tx, batch, version, policy)
        decisions = self._all_decisions(tx, batch, version)
        resolved = resolve_decisions(decisions, policy)
        states = {state: 0 for state in ("undecided", "awaiting_second", "awaiting_third", "complete")}
        for record in status:
            states[record[-1]] += 1
        accepted = int((resolved["verdict"] == "accept").sum())
        total = len(status)
        return ReviewProgress(
            batch=batch, sample_version=version, total=total, decided=len(resolved), accepted=accepted,
            rejected=len(resolved) - accepted, complete=total > 0 and len(resolved) == total,
            deadline=datetime.fromisoformat(deadline) if deadline else None,
            decisions_digest=decisions_digest(list(zip(decisions["row_id"], decisions["verdict"],
                                                       decisions["reason_category"], decisions["reason_text"]))),
            double_review=sum(1 for record in status if record[3]), awaiting_second=states["awaiting_second"],
            awaiting_third=states["awaiting_third"], undecided=states["undecided"], reviews=len(decisions),
            disagreement_policy=policy)

    def row_status(self, batch: str, sample_version: str | None = None) -> pd.DataFrame:
        """Where each sampled row stands, in review order: :data:`ROW_STATUS_COLUMNS` (row_id, slice_key,
        sample_position, double_review (bool), decisions (how many reviewers decided it), state: "undecided",
        "awaiting_second", "awaiting_third" or "complete"). For the owner's tools: it tells which rows are being
        double-reviewed, so do not show it to reviewers."""
        with self._transaction(write=False) as tx:
            version = sample_version or self._require_version(tx, batch)
            rows = self._row_status(tx, batch, version, self._policy(tx, batch, version))
        return pd.DataFrame(rows, columns=list(ROW_STATUS_COLUMNS)).astype({"double_review": bool, "decisions": int})

    @staticmethod
    def _row_status(tx: _Tx, batch: str, version: str, policy: str) -> list[tuple]:
        items = tx.execute("SELECT row_id, slice_key, sample_position, double_review FROM review_items "
                           "WHERE batch = ? AND sample_version = ? ORDER BY sample_position, row_id",
                           (batch, version)).fetchall()
        verdicts: dict[str, list[str]] = {}
        for row_id, verdict in tx.execute("SELECT row_id, verdict FROM review_decisions WHERE batch = ? AND "
                                          "sample_version = ? ORDER BY row_id, review_round",
                                          (batch, version)).fetchall():
            verdicts.setdefault(row_id, []).append(verdict)
        out = []
        for row_id, slice_key, position, double in items:
            mine = verdicts.get(row_id, [])
            out.append((row_id, slice_key, int(position), bool(double), len(mine),
                        row_state(bool(double), mine, policy)))
        return out

    # ------------------------------------------------------------------------------------------------- items
    def next_item(self, batch: str, reviewer_hmac: str, lease_seconds: float = 600) -> dict | None:
        """Lease the next item for a reviewer and return it, or None when no item is free for them.

        Picks the first item of the current sample (``sample_position`` order) that still needs a decision
        (:func:`~synqa_dagster.review.agreement.rounds_needed`: undecided, or double-reviewed and waiting for its
        second or, after a disagreement under ``third_reviewer``, third reviewer), that ``reviewer_hmac`` has NOT
        decided already (so the second and third reviewers of a row are always other people), and that no OTHER
        reviewer holds an unexpired lease on; and leases it to ``reviewer_hmac`` for ``lease_seconds``. Atomic:
        two reviewers asking at once get different items (SQLite ``BEGIN IMMEDIATE``; PostgreSQL
        ``FOR UPDATE SKIP LOCKED``). A reviewer asking again gets the item they hold (unless an earlier one was
        freed). None means every item is complete, decided by this reviewer, or leased by someone else (see
        :meth:`progress`). The item carries no trace of other reviewers' decisions, nor whether it is
        double-reviewed.

        Returns:
            the item as :meth:`get_item` returns it.

        Raises:
            UnknownBatchError: if the batch was never pushed. ValueError: empty ``reviewer_hmac`` or a negative
            ``lease_seconds``.
        """
        reviewer_hmac = _require_text("reviewer_hmac", reviewer_hmac)
        if not isinstance(lease_seconds, (int, float)) or not math.isfinite(lease_seconds) or lease_seconds < 0:
            raise ValueError(f"lease_seconds must be a non-negative number; got {lease_seconds!r}")
        now = time.time()
        same_row = "d.batch = i.batch AND d.sample_version = i.sample_version AND d.row_id = i.row_id"
        with self._transaction(write=True) as tx:
            version = self._require_version(tx, batch)
            # a disagreement (two different verdicts in rounds 1-2) needs a third round under third_reviewer only
            third = (f"WHEN (SELECT COUNT(DISTINCT d.verdict) FROM review_decisions d WHERE {same_row} "
                     "AND d.review_round <= 2) > 1 THEN 3 "
                     if self._policy(tx, batch, version) == "third_reviewer" else "")
            row = tx.execute(
                "SELECT i.row_id, i.slice_key, i.sample_position, i.sample_version, i.payload FROM review_items i "
                f"WHERE i.batch = ? AND i.sample_version = ? AND NOT EXISTS (SELECT 1 FROM review_decisions d "
                f"WHERE {same_row} AND d.reviewer_hmac = ?) "
                f"AND (SELECT COUNT(*) FROM review_decisions d WHERE {same_row}) < "
                f"CASE WHEN i.double_review = 0 THEN 1 {third}ELSE 2 END "
                "AND (i.lease_holder IS NULL OR i.lease_holder = ? OR i.lease_until < ?) "
                "ORDER BY i.sample_position, i.row_id LIMIT 1" + self._lock_clause,
                (batch, version, reviewer_hmac, reviewer_hmac, now)).fetchone()
            if row is None:
                return None
            tx.execute("UPDATE review_items SET lease_holder = ?, lease_until = ? "
                       "WHERE batch = ? AND sample_version = ? AND row_id = ?",
                       (reviewer_hmac, now + lease_seconds, batch, version, row[0]))
        return _item_dict(row)

    def get_item(self, batch: str, row_id: str) -> dict | None:
        """One item of the batch's current sample, or None (unknown batch or row).

        Returns:
            ``{"row_id", "slice_key", "sample_position", "sample_version", **payload}`` (payload values as pushed,
            after a JSON round trip: numpy scalars become numbers, missing values None).
        """
        with self._transaction(write=False) as tx:
            version = self._current_version(tx, batch)
            if version is None:
                return None
            row = tx.execute("SELECT row_id, slice_key, sample_position, sample_version, payload FROM review_items "
                             "WHERE batch = ? AND sample_version = ? AND row_id = ?",
                             (batch, version, str(row_id))).fetchone()
        return _item_dict(row) if row else None

    def items(self, batch: str, sample_version: str | None = None) -> pd.DataFrame:
        """A sample's items in review order: row_id, slice_key, sample_position, sample_version and one column per
        payload field (union over items, in first-seen order). ``sample_version`` defaults to the current one.
        The double-review flags are not among them (see :meth:`row_status`)."""
        with self._transaction(write=False) as tx:
            version = sample_version or self._require_version(tx, batch)
            rows = tx.execute("SELECT row_id, slice_key, sample_position, sample_version, payload FROM review_items "
                              "WHERE batch = ? AND sample_version = ? ORDER BY sample_position, row_id",
                              (batch, version)).fetchall()
        records = [_item_dict(r) for r in rows]
        return pd.DataFrame.from_records(records, columns=_union_keys(ITEM_KEYS, records))

    def slices(self, batch: str) -> pd.DataFrame:
        """The current sample's sampling plan: slice_key, lot_size, sample_size, acceptance_number,
        rejection_number, plan, plus any extra slice columns that were pushed."""
        with self._transaction(write=False) as tx:
            version = self._require_version(tx, batch)
            rows = tx.execute("SELECT slice_key, lot_size, sample_size, acceptance_number, rejection_number, plan, "
                              "details FROM review_slices WHERE batch = ? AND sample_version = ? ORDER BY slice_key",
                              (batch, version)).fetchall()
        records = [{**dict(zip(SLICE_COLUMNS, r[:6])), **json.loads(r[6])} for r in rows]
        return pd.DataFrame.from_records(records, columns=_union_keys(SLICE_COLUMNS, records))

    # --------------------------------------------------------------------------------------------- decisions
    def record_decision(self, batch: str, row_id: str, *, sample_version: str, reviewer_hmac: str, verdict: str,
                        reason_category: str | None, reason_text: str = "") -> str:
        """Record one reviewer's verdict on one sampled row.

        A single-reviewed row takes one decision (the first wins); a double-reviewed row takes decisions from
        different reviewers until it is complete (:func:`~synqa_dagster.review.agreement.rounds_needed`); each is
        stored as the next ``review_round``.

        Args:
            batch, row_id: the item.
            sample_version: the sample version the reviewer saw (a decision on an older version is refused).
            reviewer_hmac: HMAC of the reviewer id (never the raw id).
            verdict, reason_category, reason_text: see :func:`validate_decision`.

        Returns:
            "recorded"; "reviewer_already_decided" (this reviewer has a decision on this row already: nobody
            decides a row twice, and a second or third review must come from someone else; nothing changes);
            "already_decided" (the row needs no more decisions, e.g. another reviewer decided it first; nothing
            changes); "unknown_row" (no such batch or row in the current sample); "stale_sample" (the batch has a
            newer sample version).

        Raises:
            ValueError: naming the invalid field.
        """
        verdict, category, reason_text = validate_decision(verdict, reason_category, reason_text)
        reviewer_hmac = _require_text("reviewer_hmac", reviewer_hmac)
        sample_version = _require_text("sample_version", sample_version)
        row_id = str(row_id)
        key = (batch, sample_version, row_id)
        with self._transaction(write=True) as tx:
            current = self._current_version(tx, batch)
            if current is None:
                return "unknown_row"
            if current != sample_version:
                return "stale_sample"
            item = tx.execute("SELECT double_review FROM review_items WHERE batch = ? AND sample_version = ? "
                              "AND row_id = ?", key).fetchone()
            if item is None:
                return "unknown_row"
            double, policy = bool(item[0]), self._policy(tx, batch, sample_version)
            votes = tx.execute("SELECT verdict, reviewer_hmac FROM review_decisions WHERE batch = ? "
                               "AND sample_version = ? AND row_id = ? ORDER BY review_round", key).fetchall()
            if any(r == reviewer_hmac for _, r in votes):
                return "reviewer_already_decided"
            verdicts = [v for v, _ in votes]
            if len(verdicts) >= rounds_needed(double, verdicts, policy):
                return "already_decided"
            cursor = tx.execute(
                "INSERT INTO review_decisions (batch, sample_version, row_id, review_round, verdict, reason_category, "
                "reason_text, reviewer_hmac, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (*key, len(votes) + 1, verdict, category, reason_text, reviewer_hmac, _utcnow_iso()))
            if cursor.rowcount == 1:
                after = [*verdicts, verdict]
                complete = len(after) >= rounds_needed(double, after, policy)
                # a complete row frees any lease; otherwise only this reviewer's own (another reviewer may be
                # looking at the row for its next round)
                tx.execute("UPDATE review_items SET lease_holder = NULL, lease_until = NULL "
                           "WHERE batch = ? AND sample_version = ? AND row_id = ? AND (? = 1 OR lease_holder = ?)",
                           (*key, int(complete), reviewer_hmac))
                return "recorded"
            # lost a race (PostgreSQL: another transaction took this round, or this reviewer decided in parallel)
            mine = tx.execute("SELECT 1 FROM review_decisions WHERE batch = ? AND sample_version = ? AND row_id = ? "
                              "AND reviewer_hmac = ?", (*key, reviewer_hmac)).fetchone()
            return "reviewer_already_decided" if mine else "already_decided"

    def decisions(self, batch: str, sample_version: str | None = None) -> pd.DataFrame:
        """The resolved decision of every complete row, in review order: row_id, slice_key, verdict,
        reason_category (None for accepts), reason_text, reviewer_hmac, decided_at (UTC ISO 8601).

        One row per complete row (:func:`~synqa_dagster.review.agreement.resolve_decisions` under the sample's
        disagreement policy: how verdict, category, text, reviewer and time are chosen for a double-reviewed row);
        a double-reviewed row still waiting for its second or third reviewer is left out. For a sample without
        double review this is every decision, as before. ``sample_version`` defaults to the current one (older
        versions' decisions are kept and can be read by naming their version). Every reviewer's decision:
        :meth:`all_decisions`.
        """
        with self._transaction(write=False) as tx:
            version = sample_version or self._require_version(tx, batch)
            policy = self._policy(tx, batch, version)
            frame = self._all_decisions(tx, batch, version)
        return resolve_decisions(frame, policy)

    def all_decisions(self, batch: str, sample_version: str | None = None) -> pd.DataFrame:
        """Every reviewer's decision, in review order then round: :data:`~synqa_dagster.review.agreement.
        ALL_DECISION_COLUMNS` (row_id, slice_key, double_review (bool), review_round (1-3), verdict,
        reason_category, reason_text, reviewer_hmac, decided_at). ``sample_version`` defaults to the current one.
        For agreement statistics and the owner's exports; never show it to a reviewer."""
        with self._transaction(write=False) as tx:
            version = sample_version or self._require_version(tx, batch)
            return self._all_decisions(tx, batch, version)

    @staticmethod
    def _all_decisions(tx: _Tx, batch: str, version: str) -> pd.DataFrame:
        rows = tx.execute(
            "SELECT d.row_id, i.slice_key, i.double_review, d.review_round, d.verdict, d.reason_category, "
            "d.reason_text, d.reviewer_hmac, d.decided_at FROM review_decisions d JOIN review_items i "
            "ON i.batch = d.batch AND i.sample_version = d.sample_version AND i.row_id = d.row_id "
            "WHERE d.batch = ? AND d.sample_version = ? ORDER BY i.sample_position, d.row_id, d.review_round",
            (batch, version)).fetchall()
        records = [(r[0], r[1], bool(r[2]), int(r[3]), *r[4:]) for r in rows]
        return pd.DataFrame(records, columns=list(ALL_DECISION_COLUMNS), dtype=object)

    # ------------------------------------------------------------------------------------------------ reviewers
    def add_reviewer(self, reviewer_id: str) -> str:
        """Register ``reviewer_id`` (or re-issue its token) and return a fresh random sign-in token.

        The token is shown once: only its sha256 is stored, and re-adding a reviewer replaces (revokes) the old
        token and revokes every web-app session of theirs, in the same transaction. ``reviewer_id``: 1-128
        printable characters, no surrounding space.
        """
        reviewer_id = _require_text("reviewer_id", reviewer_id)
        if len(reviewer_id) > 128 or reviewer_id != reviewer_id.strip() or not reviewer_id.isprintable():
            raise ValueError(f"reviewer_id must be 1-128 printable characters without surrounding space; "
                             f"got {reviewer_id!r}")
        token = secrets.token_urlsafe(32)
        with self._transaction(write=True) as tx:
            tx.execute("INSERT INTO reviewers (reviewer_id, token_sha256, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (reviewer_id) DO UPDATE SET token_sha256 = excluded.token_sha256, "
                       "created_at = excluded.created_at", (reviewer_id, _sha256(token), _utcnow_iso()))
            self._revoke_reviewer_sessions(tx, reviewer_id, time.time())
        return token

    def remove_reviewer(self, reviewer_id: str) -> bool:
        """Unregister ``reviewer_id``: their token stops working and every session of theirs is revoked.

        Their decisions stay (they only hold the reviewer's HMAC). Returns False if no such reviewer was registered
        (their sessions, if any, are revoked all the same).
        """
        with self._transaction(write=True) as tx:
            cursor = tx.execute("DELETE FROM reviewers WHERE reviewer_id = ?", (str(reviewer_id),))
            self._revoke_reviewer_sessions(tx, str(reviewer_id), time.time())
            return cursor.rowcount == 1

    def token_is_current(self, reviewer_id: str, token_sha256: str) -> bool:
        """Whether ``token_sha256`` is still ``reviewer_id``'s token (re-issuing a token ends older sessions)."""
        with self._transaction(write=False) as tx:
            row = tx.execute("SELECT token_sha256 FROM reviewers WHERE reviewer_id = ?", (reviewer_id,)).fetchone()
        return row is not None and hmac.compare_digest(str(row[0]).encode("ascii"), str(token_sha256).encode("ascii"))

    def reviewer_for_token(self, token: str) -> str | None:
        """The reviewer id whose token is ``token``, or None.

        Compares the token's sha256 with every stored hash using :func:`hmac.compare_digest` (no early exit), so
        the time taken does not depend on how much of a hash matched.
        """
        if not isinstance(token, str) or not token or len(token) > 512:
            return None
        with self._transaction(write=False) as tx:
            return self._reviewer_for_token(tx, token)

    @staticmethod
    def _reviewer_for_token(tx: _Tx, token: str) -> str | None:
        digest = _sha256(token)
        rows = tx.execute("SELECT reviewer_id, token_sha256 FROM reviewers").fetchall()
        found = None
        for reviewer_id, stored in rows:
            if hmac.compare_digest(stored.encode("ascii"), digest.encode("ascii")):
                found = reviewer_id
        return found

    # ------------------------------------------------------------------------------------------------- sessions
    def open_session(self, token: str, max_age: float) -> tuple[str, str] | None:
        """Sign in with ``token``: create a web-app session lasting ``max_age`` seconds.

        Checks the token (as :meth:`reviewer_for_token` does) and stores the new session in one write transaction,
        so a token re-issued at the same moment can never leave a session on the old token. Only the sha256 of
        the session id is stored. Sessions that have expired are deleted on the way.

        Returns:
            ``(reviewer_id, session_id)`` (the id is 43 URL-safe characters, 256 random bits: put it in the
            reviewer's cookie and nowhere else), or None when the token is not valid.
        Raises:
            ValueError: ``max_age`` is not a positive number.
        """
        if not isinstance(max_age, (int, float)) or not math.isfinite(max_age) or max_age <= 0:
            raise ValueError(f"max_age must be a positive number of seconds; got {max_age!r}")
        if not isinstance(token, str) or not token or len(token) > 512:
            return None
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        with self._transaction(write=True) as tx:
            reviewer_id = self._reviewer_for_token(tx, token)
            if reviewer_id is None:
                return None
            tx.execute("DELETE FROM review_sessions WHERE expires_at <= ?", (now,))
            tx.execute("INSERT INTO review_sessions (session_sha256, reviewer_id, token_sha256, created_at, "
                       "expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)",
                       (_sha256(session_id), reviewer_id, _sha256(token), now, now + max_age))
        return reviewer_id, session_id

    def session_reviewer(self, session_id: str) -> str | None:
        """The reviewer signed in by ``session_id`` while the session is live, else None.

        Live: the session exists, is not revoked, has not expired, and its reviewer is still registered with the
        token the session was opened with (so a token re-issued by code that does not revoke sessions still ends
        them).
        """
        if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID:
            return None
        with self._transaction(write=False) as tx:
            row = tx.execute(
                "SELECT s.reviewer_id FROM review_sessions s JOIN reviewers r ON r.reviewer_id = s.reviewer_id "
                "AND r.token_sha256 = s.token_sha256 WHERE s.session_sha256 = ? AND s.revoked_at IS NULL "
                "AND s.expires_at > ?", (_sha256(session_id), time.time())).fetchone()
        return None if row is None else str(row[0])

    def revoke_session(self, session_id: str) -> bool:
        """Revoke one session (sign-out): True if it was unrevoked until now, False for an unknown id or one
        already revoked. The row is kept (with ``revoked_at``) until it expires."""
        if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID:
            return False
        with self._transaction(write=True) as tx:
            cursor = tx.execute("UPDATE review_sessions SET revoked_at = ? WHERE session_sha256 = ? "
                                "AND revoked_at IS NULL", (time.time(), _sha256(session_id)))
            return cursor.rowcount == 1

    def revoke_sessions(self, reviewer_id: str) -> int:
        """Revoke every unrevoked session of ``reviewer_id`` ("sign out everywhere"); returns how many."""
        with self._transaction(write=True) as tx:
            return self._revoke_reviewer_sessions(tx, str(reviewer_id), time.time())

    @staticmethod
    def _revoke_reviewer_sessions(tx: _Tx, reviewer_id: str, now: float) -> int:
        cursor = tx.execute("UPDATE review_sessions SET revoked_at = ? WHERE reviewer_id = ? AND revoked_at IS NULL",
                            (now, reviewer_id))
        return max(int(cursor.rowcount), 0)

    def reviewers(self) -> list[str]:
        """Ids of all registered reviewers, sorted."""
        with self._transaction(write=False) as tx:
            return [r[0] for r in tx.execute("SELECT reviewer_id FROM reviewers ORDER BY reviewer_id").fetchall()]


class _Tx:
    """One open transaction: ``execute``/``executemany`` with ``?`` parameters, rewritten for the driver."""

    def __init__(self, conn: Any, placeholder: str = "?"):
        self._conn = conn
        self._placeholder = placeholder

    def _sql(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns the driver's cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        return self._conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per parameter row."""
        if rows:
            self._conn.cursor().executemany(self._sql(sql), [tuple(r) for r in rows])


class SQLiteReviewStore(ReviewStore):
    """Review store in a SQLite file (``sqlite:///abs/path.db``); WAL journal, writes in ``BEGIN IMMEDIATE``.

    The file is owner-only (0600; created so whatever the umask, tightened if an existing one is not, see the
    module docstring), and so are the ``-wal`` / ``-shm`` / ``-journal`` files SQLite makes next to it.

    Attributes:
        path: the database file.
    """

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urlsplit(url)
        raw = unquote(parts.path)
        if parts.netloc or not raw.startswith("/") or raw in ("/", "/:memory:"):
            raise ValueError(f"SQLite review store URL must be sqlite:///absolute/path.db; got {url!r}")
        self.path = Path(raw)
        self._timeout = timeout
        _prepare_private_database(self.path)
        conn = sqlite3.connect(self.path, timeout=timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        super().__init__(url)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[_Tx]:
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()


class PostgresReviewStore(ReviewStore):
    """Review store in a PostgreSQL database (``postgresql://user:password@host:port/db``, or ``postgres://``).

    Uses psycopg 3, one connection per call; the "next item" query locks with ``FOR UPDATE SKIP LOCKED``.
    """

    _lock_clause = " FOR UPDATE SKIP LOCKED"
    _schema_lock_sql = "SELECT pg_advisory_xact_lock(72161529)"  # arbitrary constant: "synqa review schema"

    def __init__(self, url: str, connect_timeout: int = 10):
        import psycopg  # imported here so SQLite users do not need libpq

        self._psycopg = psycopg
        self._connect_timeout = connect_timeout
        super().__init__(url)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[_Tx]:
        try:
            conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout)
        except self._psycopg.OperationalError as exc:
            message = str(exc).replace(self._url, self.redacted_url)
            raise ConnectionError(f"cannot connect to the review store {self.redacted_url}: {message}") from None
        try:
            with conn.transaction():
                yield _Tx(conn, "%s")
        finally:
            conn.close()


# ------------------------------------------------------------------------------------------------------ helpers
def _prepare_private_database(path: Path) -> None:
    """Make sure the SQLite file at ``path`` (and any side file already there) is owner-only before SQLite opens it.

    A missing folder is created 0700 (missing ancestors get the default mode, as ``mkdir -p`` does); a missing
    database file is created empty (an empty file is a valid empty SQLite database) through
    ``os.open(O_CREAT | O_EXCL, 0600)`` plus ``fchmod``, so the umask plays no part. SQLite then creates its
    ``-wal``, ``-shm`` and ``-journal`` files with the database file's permissions (its unix VFS copies them). An
    existing file with group/other bits gets them cleared (``mode & 0o700``).

    Raises:
        PermissionError: a file's mode cannot be changed (not ours); the message says what to run.
    """
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is subject to the umask
    # create it before SQLite does (an existing database is kept); the umask may widen the mode: tightened below
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        _tighten_to_owner_only(candidate)


def _tighten_to_owner_only(path: Path) -> None:
    """Clear the group/other permission bits of ``path`` if it exists and has any."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
    except PermissionError:
        raise PermissionError(f"{path} has mode {mode:04o} (group/others may read or write the review store) and "
                              f"this user cannot change it; run: chmod 600 {path}") from None


def _utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _deadline_iso(deadline: datetime | None) -> str | None:
    if deadline is None:
        return None
    if not isinstance(deadline, datetime):
        raise ValueError(f"deadline must be a datetime or None; got {type(deadline).__name__}")
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=timezone.utc)
    return deadline.astimezone(timezone.utc).isoformat()


def _require_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ReviewFieldError(field, f"{field} must be a non-empty string; got {value!r}")
    return value


def _jsonable(value: Any) -> Any:
    """Convert a DataFrame cell to plain JSON data (numpy scalars and arrays, timestamps, missing values)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (pd.Timestamp,)):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return None if pd.isna(value) else value.isoformat()
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    return str(value)


def _check_columns(frame: pd.DataFrame, name: str, required: Sequence[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {list(frame.columns)}")
    if frame.columns.duplicated().any():
        raise ValueError(f"{name} has duplicate column names: {sorted(set(frame.columns[frame.columns.duplicated()]))}")


def _as_int(value: Any, where: str, minimum: int | None = None) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be an integer; got {value!r}") from None
    if not math.isfinite(number) or number != int(number) or (minimum is not None and number < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{where} must be an integer{bound}; got {value!r}")
    return int(number)


def _item_rows(items: pd.DataFrame, batch: str, sample_version: str) -> list[tuple]:
    _check_columns(items, "items", ("row_id", "slice_key", "sample_position"))
    for column, expected in (("batch", batch), ("sample_version", sample_version)):
        if column in items.columns and not (items[column].astype(str) == expected).all():
            raise ValueError(f"items.{column} must equal the {column} argument {expected!r} on every row")
    payload_columns = [c for c in items.columns if c not in (*ITEM_KEYS, "batch")]
    rows, seen = [], set()
    for n, record in enumerate(items.to_dict(orient="records")):
        where = f"items row {n} (row_id {record.get('row_id')!r})"
        row_id = _jsonable(record["row_id"])
        if row_id is None or str(row_id).strip() == "" or "\x00" in str(row_id):
            raise ValueError(f"{where}: row_id must be a non-empty string")
        row_id = str(row_id)
        if row_id in seen:
            raise ValueError(f"{where}: row_id is duplicated")
        seen.add(row_id)
        slice_key = _jsonable(record["slice_key"])
        if slice_key is None or not str(slice_key).strip():
            raise ValueError(f"{where}: slice_key must be a non-empty string")
        position = _as_int(record["sample_position"], f"{where}: sample_position")
        payload = {str(c): _jsonable(record[c]) for c in payload_columns}
        rows.append((row_id, str(slice_key), position, json.dumps(payload, ensure_ascii=False, sort_keys=True)))
    return rows


def _slice_rows(slices: pd.DataFrame) -> list[tuple]:
    _check_columns(slices, "slices", SLICE_COLUMNS)
    extra = [c for c in slices.columns if c not in SLICE_COLUMNS]
    rows, seen = [], set()
    for n, record in enumerate(slices.to_dict(orient="records")):
        key = _jsonable(record["slice_key"])
        where = f"slices row {n} (slice_key {key!r})"
        if key is None or not str(key).strip():
            raise ValueError(f"{where}: slice_key must be a non-empty string")
        if str(key) in seen:
            raise ValueError(f"{where}: slice_key is duplicated")
        seen.add(str(key))
        numbers = [_as_int(record[c], f"{where}: {c}", minimum=0) for c in SLICE_NUMBERS]
        plan = _jsonable(record["plan"])
        details = json.dumps({str(c): _jsonable(record[c]) for c in extra}, ensure_ascii=False, sort_keys=True)
        rows.append((str(key), *numbers, "" if plan is None else str(plan), details))
    return rows


def _item_dict(row: Sequence[Any]) -> dict:
    row_id, slice_key, position, version, payload = row
    return {"row_id": row_id, "slice_key": slice_key, "sample_position": int(position), "sample_version": version,
            **json.loads(payload)}


def _union_keys(first: Sequence[str], records: list[dict]) -> list[str]:
    keys = dict.fromkeys(first)
    for record in records:
        keys.update(dict.fromkeys(record))
    return list(keys)


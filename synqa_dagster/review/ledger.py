"""The review programme's ledger: every slice's lot per batch and its switching state, in the review store.

:class:`SwitchingLedger` keeps one row per (slice, batch) in ``review_switching_lots``: the plan the lot was
sampled under (severity, n, Ac, Re, the tighter Ac of the switching score), what review found (reviewed rows,
defects, outcome) and the state the slice entered and left the batch in, with the reason and the standard's
counters. Corrective actions that resume a discontinued slice go in ``review_switching_resumptions``.

The states are never written from a single lot: every write replays the affected slices' lots in batch order
(:func:`synqa_dagster.review.switching.replay`) and rewrites all their states, inside the same transaction. So
the stored states always equal the replay of the stored lots, whatever order batches were run or backfilled in;
a lot sampled under a state the replay no longer gives is marked ``stale``. Writers are serialised (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so two batches recorded at once cannot
each replay without the other's lot.

Both tables are created with ``CREATE TABLE IF NOT EXISTS`` on first use, through the store's own transactions
(``ReviewStore._transaction``; ``?`` parameters, portable SQL for SQLite and PostgreSQL). They sit outside the
batch run's transaction, like the review samples themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from synqa_dagster.review.switching import (
    Lot, SliceState, Step, mark_production, production_steady_for, replay, state_before,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS review_switching_lots (slice_key TEXT NOT NULL, batch TEXT NOT NULL,"
    " sample_version TEXT NOT NULL, plan_kind TEXT NOT NULL, severity TEXT NOT NULL, code_letter TEXT,"
    " lot_size INTEGER NOT NULL, sample_size INTEGER NOT NULL, acceptance_number INTEGER NOT NULL,"
    " rejection_number INTEGER NOT NULL, tighter_acceptance_number INTEGER, reviewed INTEGER NOT NULL,"
    " defects INTEGER NOT NULL, outcome TEXT NOT NULL, production_steady INTEGER NOT NULL,"
    " state_entering TEXT NOT NULL, entering_reason TEXT NOT NULL, state_leaving TEXT NOT NULL,"
    " switched INTEGER NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL, counters TEXT NOT NULL,"
    " stale INTEGER NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (slice_key, batch))",
    "CREATE INDEX IF NOT EXISTS review_switching_lots_batch ON review_switching_lots (batch)",
    "CREATE TABLE IF NOT EXISTS review_switching_resumptions (slice_key TEXT NOT NULL, batch TEXT NOT NULL,"
    " note TEXT NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (slice_key, batch))",
)
_LOCK_SQL = "SELECT pg_advisory_xact_lock(72161530)"  # arbitrary constant: "synqa review switching ledger"

_LOT_COLUMNS = ("slice_key", "batch", "sample_version", "plan_kind", "severity", "code_letter", "lot_size",
                "sample_size", "acceptance_number", "rejection_number", "tighter_acceptance_number", "reviewed",
                "defects", "outcome")
_STATE_COLUMNS = ("production_steady", "state_entering", "entering_reason", "state_leaving", "switched", "reason",
                  "status", "counters", "stale")
PROGRAMME_COLUMNS = (*_LOT_COLUMNS, *_STATE_COLUMNS, "updated_at")
"""Columns of :meth:`SwitchingLedger.programme` / :meth:`SwitchingLedger.history` (one row per slice and batch)."""

_PLAN_COLUMNS = ("slice_key", "lot_size", "sample_size", "acceptance_number", "rejection_number")


class SwitchingLedger:
    """Per-slice lots and switching states of the review programme, stored in a review store.

    Args:
        store: an open :class:`~synqa_dagster.review.store.ReviewStore` (SQLite or PostgreSQL).
        allow_reduced: the config's ``allow_reduced`` (used by every replay this object runs).
    """

    def __init__(self, store: Any, allow_reduced: bool = False):
        self._store = store
        self.allow_reduced = bool(allow_reduced)
        self._postgres = getattr(store, "_schema_lock_sql", None) is not None
        with self._write() as tx:
            for statement in _SCHEMA:
                tx.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction of the store, serialised against other ledger writers."""
        with self._store._transaction(write=True) as tx:
            if self._postgres:
                tx.execute(_LOCK_SQL)
            yield tx

    # ------------------------------------------------------------------------------------------------ reads
    def states_for(self, batch: str, slice_keys: Iterable[str]) -> dict[str, SliceState]:
        """The state each slice enters ``batch`` in (derived from the lots of earlier batches only, see
        :func:`~synqa_dagster.review.switching.state_before`); a slice never seen is normal (9.1)."""
        keys = sorted({str(k) for k in slice_keys})
        with self._store._transaction(write=False) as tx:
            batches = self._batches(tx)
            out = {}
            for key in keys:
                lots = mark_production(self._lots(tx, key), batches)
                steady = production_steady_for(lots, batch, batches)
                out[key] = state_before(lots, batch, self.allow_reduced, self._resumptions(tx, key), steady)
        return out

    def programme(self, batch: str) -> pd.DataFrame:
        """This batch's rows (one per slice), :data:`PROGRAMME_COLUMNS`, sorted by slice."""
        with self._store._transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(PROGRAMME_COLUMNS)} FROM review_switching_lots WHERE batch = ? "
                              "ORDER BY slice_key", (batch,)).fetchall()
        return _frame(rows)

    def history(self, slice_key: str | None = None) -> pd.DataFrame:
        """Every stored lot (of one slice, or all), sorted by slice and batch."""
        sql = f"SELECT {', '.join(PROGRAMME_COLUMNS)} FROM review_switching_lots"
        params: tuple = ()
        if slice_key is not None:
            sql += " WHERE slice_key = ?"
            params = (slice_key,)
        with self._store._transaction(write=False) as tx:
            rows = tx.execute(sql + " ORDER BY slice_key, batch", params).fetchall()
        return _frame(rows)

    def lots(self, slice_key: str) -> list[Lot]:
        """The slice's lots as :class:`~synqa_dagster.review.switching.Lot` (batch order, production marked)."""
        with self._store._transaction(write=False) as tx:
            return mark_production(self._lots(tx, slice_key), self._batches(tx))

    # ----------------------------------------------------------------------------------------------- writes
    def record_plan(self, batch: str, sample_version: str, slices: pd.DataFrame) -> pd.DataFrame:
        """Record the plans this batch's sample was drawn with (``SampleDraw.slices``), replay and return
        :meth:`programme` of the batch.

        A slice keeps its review results when the same ``sample_version`` is recorded again; a new version starts
        it over (pending). Slices of an earlier recording of this batch that are not in ``slices`` are removed
        (the batch was re-run and the slice is gone).
        """
        missing = [c for c in _PLAN_COLUMNS if c not in slices.columns]
        if missing:
            raise ValueError(f"slices lack column {missing[0]!r}")
        records = slices.to_dict(orient="records")
        now = _now()
        with self._write() as tx:
            existing = dict(tx.execute("SELECT slice_key, sample_version FROM review_switching_lots WHERE batch = ?",
                                       (batch,)).fetchall())
            keys = {str(r["slice_key"]) for r in records}
            for gone in sorted(set(existing) - keys):
                tx.execute("DELETE FROM review_switching_lots WHERE slice_key = ? AND batch = ?", (gone, batch))
            for r in records:
                key = str(r["slice_key"])
                severity = str(r.get("severity") or "normal")
                tighter = r.get("tighter_acceptance_number")
                tighter = None if tighter is None or pd.isna(tighter) else int(tighter)
                letter = r.get("code_letter")
                letter = None if letter is None or (isinstance(letter, float) and pd.isna(letter)) else str(letter)
                values = (sample_version, str(r.get("plan_kind") or "iso2859"), severity, letter, int(r["lot_size"]),
                          int(r["sample_size"]), int(r["acceptance_number"]), int(r["rejection_number"]), tighter)
                if existing.get(key) == sample_version:
                    tx.execute("UPDATE review_switching_lots SET plan_kind = ?, severity = ?, code_letter = ?, "
                               "lot_size = ?, sample_size = ?, acceptance_number = ?, rejection_number = ?, "
                               "tighter_acceptance_number = ?, updated_at = ? WHERE slice_key = ? AND batch = ?",
                               (*values[1:], now, key, batch))
                    continue
                tx.execute("INSERT INTO review_switching_lots (slice_key, batch, sample_version, plan_kind, severity, "
                           "code_letter, lot_size, sample_size, acceptance_number, rejection_number, "
                           "tighter_acceptance_number, reviewed, defects, outcome, production_steady, state_entering, "
                           "entering_reason, state_leaving, switched, reason, status, counters, stale, updated_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 'pending', 1, ?, '', ?, 0, '', '', '{}', 0, ?) "
                           "ON CONFLICT (slice_key, batch) DO UPDATE SET sample_version = excluded.sample_version, "
                           "plan_kind = excluded.plan_kind, severity = excluded.severity, "
                           "code_letter = excluded.code_letter, lot_size = excluded.lot_size, "
                           "sample_size = excluded.sample_size, acceptance_number = excluded.acceptance_number, "
                           "rejection_number = excluded.rejection_number, "
                           "tighter_acceptance_number = excluded.tighter_acceptance_number, reviewed = 0, defects = 0, "
                           "outcome = 'pending', updated_at = excluded.updated_at",
                           (key, batch, *values, severity, severity, now))
            self._replay(tx, sorted(keys | set(existing)))
        return self.programme(batch)

    def record_results(self, batch: str, sample_version: str, verdicts: pd.DataFrame,
                       incomplete: bool = False) -> pd.DataFrame:
        """Record what review found for this batch's lots (:func:`~synqa_dagster.review.sampling.slice_verdicts`
        rows: slice_key, reviewed, defects), replay and return :meth:`programme` of the batch.

        Only rows recorded for ``sample_version`` are updated (decisions on another sample never count).
        ``incomplete``: the review deadline passed; a lot whose sample is not complete is then ``incomplete``
        rather than ``pending`` (undecided either way, unless its defects already reject it).
        """
        missing = [c for c in ("slice_key", "reviewed", "defects") if c not in verdicts.columns]
        if missing:
            raise ValueError(f"verdicts lack column {missing[0]!r}")
        now = _now()
        with self._write() as tx:
            plans = {r[0]: r[1:] for r in tx.execute(
                "SELECT slice_key, sample_size, acceptance_number, rejection_number FROM review_switching_lots "
                "WHERE batch = ? AND sample_version = ?", (batch, sample_version)).fetchall()}
            touched = []
            for r in verdicts.to_dict(orient="records"):
                key = str(r["slice_key"])
                if key not in plans:
                    continue
                n, ac, re = (int(x) for x in plans[key])
                reviewed, defects = int(r["reviewed"]), int(r["defects"])
                lot = Lot(batch, n, ac, re, reviewed, defects,
                          outcome="incomplete" if incomplete and reviewed < n else None)
                tx.execute("UPDATE review_switching_lots SET reviewed = ?, defects = ?, outcome = ?, updated_at = ? "
                           "WHERE slice_key = ? AND batch = ?", (reviewed, defects, lot.result, now, key, batch))
                touched.append(key)
            self._replay(tx, touched)
        return self.programme(batch)

    def record_resumption(self, slice_key: str, batch: str, note: str = "") -> None:
        """Record the corrective action that resumes a discontinued slice: its lots of ``batch`` and later are on
        tightened inspection (ISO 2859-1:1999 9.4). ``batch`` must come after the batch that discontinued it."""
        with self._write() as tx:
            tx.execute("INSERT INTO review_switching_resumptions (slice_key, batch, note, recorded_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (slice_key, batch) DO UPDATE SET note = excluded.note, "
                       "recorded_at = excluded.recorded_at", (slice_key, batch, str(note), _now()))
            self._replay(tx, [slice_key])

    # ---------------------------------------------------------------------------------------------- plumbing
    @staticmethod
    def _batches(tx) -> list[str]:
        return [r[0] for r in tx.execute("SELECT DISTINCT batch FROM review_switching_lots ORDER BY batch").fetchall()]

    @staticmethod
    def _resumptions(tx, slice_key: str) -> dict[str, str]:
        return dict(tx.execute("SELECT batch, note FROM review_switching_resumptions WHERE slice_key = ?",
                               (slice_key,)).fetchall())

    @staticmethod
    def _lots(tx, slice_key: str) -> list[Lot]:
        rows = tx.execute("SELECT batch, sample_size, acceptance_number, rejection_number, reviewed, defects, "
                          "severity, tighter_acceptance_number, outcome FROM review_switching_lots "
                          "WHERE slice_key = ? ORDER BY batch", (slice_key,)).fetchall()
        return [Lot(batch=r[0], sample_size=int(r[1]), acceptance_number=int(r[2]), rejection_number=int(r[3]),
                    reviewed=int(r[4]), defects=int(r[5]), severity=str(r[6]),
                    tighter_acceptance_number=None if r[7] is None else int(r[7]),
                    outcome="incomplete" if r[8] == "incomplete" else None) for r in rows]

    def _replay(self, tx, slice_keys: Sequence[str]) -> None:
        batches = self._batches(tx)
        now = _now()
        for key in sorted(set(slice_keys)):
            lots = mark_production(self._lots(tx, key), batches)
            for s in replay(lots, self.allow_reduced, self._resumptions(tx, key)):
                tx.execute("UPDATE review_switching_lots SET production_steady = ?, state_entering = ?, "
                           "entering_reason = ?, state_leaving = ?, switched = ?, reason = ?, status = ?, counters = ?, "
                           "stale = ?, updated_at = ? WHERE slice_key = ? AND batch = ?", _state_row(s, now, key))


def _state_row(s: Step, now: str, key: str) -> tuple:
    return (int(s.lot.production_steady), s.entering.state, s.entering.reason, s.leaving.state, int(s.switched),
            s.reason, s.leaving.status(), json.dumps(s.leaving.counters.as_dict(), sort_keys=True), int(s.stale),
            now, key, s.lot.batch)


def _frame(rows: list) -> pd.DataFrame:
    frame = pd.DataFrame.from_records([tuple(r) for r in rows], columns=list(PROGRAMME_COLUMNS))
    for column in ("production_steady", "switched", "stale"):
        frame[column] = frame[column].astype(bool)
    frame["counters"] = [json.loads(c) if c else {} for c in frame["counters"]]
    return frame


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["PROGRAMME_COLUMNS", "SwitchingLedger"]

"""The gate contract shared by every quality gate.

A gate is a pure, typed object (in the shape of datatrove's ``BaseFilter``): it looks at a table of candidate
rows and decides, per row, *keep* or *drop with an exact reason and a score*. It never touches Dagster, storage
or the network; the Dagster assets in ``synqa_dagster.assets`` are thin wrappers that load rows, call a gate,
write survivors and rejects, and report the counters.

Row contract: every row has ``row_id`` (str) and ``text`` (str: all turns of the example joined by newlines).
Gates may read other columns they document (``intent``, ``locale``...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

TEXT_COLUMN = "text"
ID_COLUMN = "row_id"

#: Columns added to rejected rows by :func:`split_rows` (the reject log schema).
REJECT_COLUMNS = ("gate", "reject_category", "reject_reason", "gate_score")


@dataclass
class GateResult:
    """Per-row decisions of one gate over one table of rows.

    Attributes:
        gate: the gate's name (e.g. ``"dedup"``).
        keep: boolean array, one entry per input row, True where the row survives.
        category: machine-readable drop category per row (``None`` for kept rows), e.g. ``"near_duplicate"``.
        reason: human-readable exact reason per row (``None`` for kept rows), e.g.
            ``"MinHash Jaccard 0.91 vs 3f2a… (batch 2026-11-20) — near-duplicate"``.
        score: float per row (NaN where the gate computed none); the gate's main score, kept for lineage.
        metrics: gate-level numbers for reporting (thresholds used, timings, rates...).
        rewrites: None for a gate that never changes rows (most gates); for a gate that may (PII redaction, a
            factuality rewrite) ``{row index: {column: new value}}`` — applied by :func:`decision_table`, so later
            gates, the accepted split and the reject log see the rewritten row, never the original.
        edits: ``{row index: [edit, ...]}``: what each rewrite changed (JSON-able dicts, e.g. ``{"kind": "email",
            "start": 12, "end": 31, "placeholder": "[EMAIL]"}``), stored as ``edits_<gate>`` and in lineage.
    """

    gate: str
    keep: np.ndarray
    category: list[str | None]
    reason: list[str | None]
    score: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)
    rewrites: dict[int, dict[str, Any]] | None = None
    edits: dict[int, list[dict[str, Any]]] | None = None

    @classmethod
    def all_kept(cls, gate: str, n: int) -> "GateResult":
        """A result that keeps ``n`` rows, to be refined with :meth:`drop`."""
        return cls(
            gate=gate,
            keep=np.ones(n, dtype=bool),
            category=[None] * n,
            reason=[None] * n,
            score=np.full(n, np.nan, dtype=float),
        )

    def __len__(self) -> int:
        return len(self.keep)

    def rewrite(self, index: int, values: dict[str, Any], edits: Sequence[dict[str, Any]]) -> None:
        """Replace columns of row ``index`` (``values``: column -> new value) and record what changed (``edits``).

        The row keeps its decision (a gate may rewrite a row and keep it, or rewrite it and drop it: a dropped row
        is logged in its rewritten form, so a reject log never holds what the rewrite removed)."""
        if self.rewrites is None:
            self.rewrites, self.edits = {}, {}
        self.rewrites.setdefault(int(index), {}).update(values)
        self.edits.setdefault(int(index), []).extend(dict(e) for e in edits)  # type: ignore[union-attr]

    def enable_rewrites(self) -> "GateResult":
        """Declare that this gate may rewrite rows (its decision table gets an ``edits_<gate>`` column even when
        no row of this batch was rewritten, so the schema does not depend on the batch)."""
        if self.rewrites is None:
            self.rewrites, self.edits = {}, {}
        return self

    @classmethod
    def concat(cls, gate: str, results: Sequence["GateResult"], metrics: dict[str, Any] | None = None) -> "GateResult":
        """One result from the results of consecutive row chunks (shards), in order; row indices of rewrites are
        shifted to the whole table. ``metrics``: the merged metrics (default: the first chunk's)."""
        if not results:
            return cls.all_kept(gate, 0)
        rewrites: dict[int, dict[str, Any]] | None = None
        edits: dict[int, list[dict[str, Any]]] | None = None
        offset = 0
        for r in results:
            if r.rewrites is not None:
                rewrites = {} if rewrites is None else rewrites
                edits = {} if edits is None else edits
                rewrites.update({offset + i: v for i, v in r.rewrites.items()})
                edits.update({offset + i: v for i, v in (r.edits or {}).items()})
            offset += len(r)
        return cls(
            gate=gate,
            keep=np.concatenate([np.asarray(r.keep, dtype=bool) for r in results]),
            category=[c for r in results for c in r.category],
            reason=[c for r in results for c in r.reason],
            score=np.concatenate([np.asarray(r.score, dtype=float) for r in results]),
            metrics=results[0].metrics if metrics is None else metrics,
            rewrites=rewrites,
            edits=edits,
        )

    def drop(self, index: int, category: str, reason: str, score: float | None = None) -> bool:
        """Drop row ``index`` unless an earlier rule of this gate already dropped it; returns True if dropped."""
        if not self.keep[index]:
            return False
        self.keep[index] = False
        self.category[index] = category
        self.reason[index] = reason
        if score is not None:
            self.score[index] = float(score)
        return True

    def drop_where(
        self,
        mask: np.ndarray | Sequence[bool],
        category: str,
        reasons: str | Sequence[str],
        scores: float | Sequence[float] | np.ndarray | None = None,
    ) -> int:
        """Vectorised :meth:`drop` for every row where ``mask`` is True; returns how many rows were newly dropped.

        ``reasons`` and ``scores`` are either one value for all rows or a sequence aligned with the input rows.
        """
        mask = np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(mask & self.keep)
        for i in idx:
            r = reasons if isinstance(reasons, str) else reasons[i]
            if scores is None:
                s = None
            elif np.isscalar(scores):
                s = float(scores)  # type: ignore[arg-type]
            else:
                s = float(scores[i])  # type: ignore[index]
            self.drop(int(i), category, r, s)
        return len(idx)

    def counters(self) -> dict[str, Any]:
        """Counters in the datatrove style: seen, kept, dropped and dropped per category."""
        dropped = Counter(c for c, k in zip(self.category, self.keep) if not k)
        return {
            "seen": int(len(self.keep)),
            "kept": int(self.keep.sum()),
            "dropped": int((~self.keep).sum()),
            "dropped_by_category": dict(sorted(dropped.items())),
        }


class Gate(ABC):
    """Base class of every gate: configure once (load heavy state in ``__init__``), then :meth:`evaluate` tables.

    Subclasses set ``name`` and implement :meth:`evaluate`. They must return one decision per input row, in
    input order, and must be deterministic for the same rows and configuration.
    """

    name: ClassVar[str] = "gate"

    @abstractmethod
    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        """Decide keep/drop for every row of ``rows`` (which has at least ``row_id`` and ``text``)."""

    def __call__(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, GateResult]:
        result = self.evaluate(rows)
        kept, rejected = split_rows(rows, result)
        return kept, rejected, result


def split_rows(rows: pd.DataFrame, result: GateResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``rows`` into survivors and rejects (see :func:`decision_table`, :func:`survivors`, :func:`rejects`).

    Both keep every input column plus ``score_<gate>``; the rejects additionally carry the reject-log columns
    ``gate``, ``reject_category``, ``reject_reason`` and ``gate_score``.
    """
    table = decision_table(rows, result)
    return survivors(table), rejects(table)


#: Columns a gate's decision table adds to the rows it saw.
DECISION_COLUMNS = ("kept", "gate", "reject_category", "reject_reason", "gate_score")


def edits_column(gate: str) -> str:
    """The decision-table column holding what a rewriting gate changed per row (JSON list, or NA)."""
    return f"edits_{gate}"


def decision_table(rows: pd.DataFrame, result: GateResult) -> pd.DataFrame:
    """Every row a gate saw, with ``score_<gate>`` and the decision columns :data:`DECISION_COLUMNS`.

    This is what each gate's Dagster asset stores: survivors are the rows with ``kept`` True (see
    :func:`survivors`); the others are the gate's rejects, each with its exact reason.
    """
    if len(rows) != len(result):
        raise ValueError(f"gate {result.gate!r} returned {len(result)} decisions for {len(rows)} rows")
    table = rows.reset_index(drop=True).copy()
    if result.rewrites is not None:
        import json

        for index, values in result.rewrites.items():
            for column, value in values.items():
                if column not in table.columns:
                    raise ValueError(f"gate {result.gate!r} rewrote column {column!r}, which the rows do not have")
                table.at[index, column] = value
        edits = [None] * len(table)
        for index, changes in (result.edits or {}).items():
            edits[index] = json.dumps(changes, sort_keys=True, ensure_ascii=False)
        table[edits_column(result.gate)] = pd.array(edits, dtype="string")
    table[f"score_{result.gate}"] = result.score
    table["kept"] = result.keep
    table["gate"] = result.gate
    table["reject_category"] = pd.array(result.category, dtype="string")
    table["reject_reason"] = pd.array(result.reason, dtype="string")
    table["gate_score"] = np.where(result.keep, np.nan, result.score)
    return table


def survivors(decisions: pd.DataFrame) -> pd.DataFrame:
    """The rows a gate kept (as the gate left them: rewritten where it rewrote), without its decision columns (its
    ``score_<gate>`` and ``edits_<gate>`` columns stay, for lineage)."""
    kept = decisions.loc[decisions["kept"].astype(bool)]
    return kept.drop(columns=list(DECISION_COLUMNS)).reset_index(drop=True)


def rejects(decisions: pd.DataFrame) -> pd.DataFrame:
    """The rows a gate dropped, with gate, category, reason and score."""
    dropped = decisions.loc[~decisions["kept"].astype(bool)]
    return dropped.drop(columns=["kept"]).reset_index(drop=True)


def result_from_decisions(decisions: pd.DataFrame, gate: str) -> GateResult:
    """Rebuild a :class:`GateResult` from a stored decision table (for checks that read the stored table; the
    rewrites are already applied to the table's rows, so none are carried)."""
    return GateResult(
        gate=gate,
        keep=decisions["kept"].astype(bool).to_numpy(),
        category=[None if pd.isna(c) else str(c) for c in decisions["reject_category"]],
        reason=[None if pd.isna(r) else str(r) for r in decisions["reject_reason"]],
        score=decisions[f"score_{gate}"].to_numpy(dtype=float),
    )

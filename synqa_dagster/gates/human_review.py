"""Gate 5 — human review: reviewers' decisions on a risk-tier-sized sample decide what ships.

Inputs are the batch's rows (the contamination gate's survivors), the sample that was pushed to the review store
(``row_id``, ``slice_key``), the per-slice sampling plans (``slice_key``, ``sample_size``, ``acceptance_number``...)
and the reviewers' decisions (``row_id``, ``verdict``, ``reason_category``, ``reason_text``, ``reviewer_hmac``).

Rules, in order:

1. A row a reviewer rejected is dropped with the reviewer's reason category and text
   (category ``human_<reason_category>``).
2. A slice whose sample defect count exceeds its plan's acceptance number is rejected as a whole and returned to
   synthesis (category ``returned_to_synthesis``); every row of the slice carries the reason, e.g.
   ``human review: slice refund_request/en-GB defect rate 4/50 > AQL plan 1/50``. This is decided as soon as the
   defects exceed the acceptance number, even before the sample is complete.

Rows outside the sample and rows of accepted slices pass. The gate also returns, per row, the review columns that
enter lineage (:data:`REVIEW_COLUMNS`): whether the row was sampled, the verdict, the reason category and the
reviewer's keyed HMAC (never the raw id).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from synqa_dagster.gates.base import Gate, GateResult
from synqa_dagster.review.sampling import slice_keys, slice_verdicts

#: Columns :meth:`HumanReviewGate.review_columns` adds to every row (lineage of the review).
REVIEW_COLUMNS = ("slice_key", "review_sampled", "review_verdict", "review_reason_category", "reviewer_id_hashed")
RETURNED_TO_SYNTHESIS = "returned_to_synthesis"


class HumanReviewGate(Gate):
    """Apply reviewers' decisions and per-slice sampling plans to a batch.

    Attributes:
        strata: the columns that define a slice (the same as the sampling config's ``strata``).
        sample: the sampled rows (``row_id``, ``slice_key``).
        slices: one row per slice with ``slice_key``, ``sample_size``, ``acceptance_number`` (and the plan text).
        decisions: reviewers' decisions on sampled rows (``row_id``, ``verdict`` in accept/reject,
            ``reason_category``, ``reason_text``, ``reviewer_hmac``).
    """

    name: ClassVar[str] = "human_review"

    def __init__(self, strata: list[str], sample: pd.DataFrame, slices: pd.DataFrame, decisions: pd.DataFrame):
        self.strata = list(strata)
        self.sample = sample
        self.slices = slices
        self.decisions = decisions
        self.verdicts = slice_verdicts(slices, _with_slice(decisions, sample))

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        """Drop reviewer-rejected rows and every row of a slice over its acceptance number.

        A reviewer-rejected row in a returned slice keeps its reviewer category, and its reason names both the
        reviewer's finding and the slice verdict, so every row of the slice carries the slice's reason.
        """
        result = GateResult.all_kept(self.name, len(rows))
        verdicts = self.verdicts
        returned = verdicts.loc[verdicts["rejected"].astype(bool)] if len(verdicts) else verdicts
        slice_reason = dict(zip(returned["slice_key"], returned["reason"])) if len(returned) else {}
        slice_rate = {r.slice_key: (r.defects / r.sample_size if r.sample_size else 1.0) for r in returned.itertuples()}
        keys = slice_keys(rows, self.strata).tolist() if slice_reason else [None] * len(rows)
        by_row = self.decisions.set_index("row_id") if len(self.decisions) else None
        for i, row_id in enumerate(rows["row_id"]):
            decision = by_row.loc[row_id] if by_row is not None and row_id in by_row.index else None
            slice_note = slice_reason.get(keys[i])
            if decision is not None:
                result.score[i] = 1.0 if decision["verdict"] == "reject" else 0.0
            if decision is not None and decision["verdict"] == "reject":
                category = str(decision.get("reason_category") or "other")
                text = str(decision.get("reason_text") or "").strip()
                reason = f"human review: rejected by a reviewer ({category})" + (f": {text}" if text else "")
                result.drop(i, f"human_{category}", reason + (f"; {slice_note}" if slice_note else ""), 1.0)
            elif slice_note:
                result.drop(i, RETURNED_TO_SYNTHESIS, slice_note, slice_rate[keys[i]])
        result.metrics = {
            "sampled": int(len(self.sample)),
            "reviewed": int(len(self.decisions)),
            "defects": int((self.decisions["verdict"] == "reject").sum()) if len(self.decisions) else 0,
            "slices": int(len(self.slices)),
            "slices_returned_to_synthesis": int(len(returned)),
            "returned_slices": sorted(slice_reason),
        }
        return result

    def review_columns(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The review lineage of each row: slice, sampled or not, verdict, reason category, reviewer HMAC."""
        sampled = set(self.sample["row_id"]) if len(self.sample) else set()
        by_row = self.decisions.set_index("row_id") if len(self.decisions) else pd.DataFrame()
        out = pd.DataFrame(index=rows.index)
        out["slice_key"] = slice_keys(rows, self.strata)
        out["review_sampled"] = rows["row_id"].isin(sampled).to_numpy()
        for column, source in (("review_verdict", "verdict"), ("review_reason_category", "reason_category"),
                               ("reviewer_id_hashed", "reviewer_hmac")):
            values = [by_row.at[r, source] if r in by_row.index else None for r in rows["row_id"]]
            out[column] = pd.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values], dtype="string")
        return out


def _with_slice(decisions: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """Decisions with the slice of their row (from the sample), whatever the store returned."""
    if "slice_key" in decisions.columns or not len(decisions):
        return decisions if "slice_key" in decisions.columns else decisions.assign(slice_key=pd.Series(dtype="string"))
    return decisions.merge(sample[["row_id", "slice_key"]], on="row_id", how="left")

"""Per-row lineage records and the data rows of a handover folder (Dagster-free).

One lineage record per candidate row — accepted and rejected alike (rejects are kept for audit) — holding what a
release review needs to trace a row without re-running anything: its seed, technique, generator id and version
with sampling parameters, prompt template ids, the recipe and gate config hashes, every gate's result and score
(``not_reached`` after the gate that dropped it), the human review of the row (sampled or not, verdict, reason
category and the reviewer's keyed HMAC — never a raw reviewer id) and ``content_digests``: the SHA-256 of the
canonical JSON of each data field, so ``synqa verify`` can tie every row of ``accepted.jsonl`` and
``rejected.jsonl`` to its signed record and name the field that changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from synqa_dagster.common import jsonable
from synqa_dagster.gates.base import edits_column
from synqa_dagster.lineage.pack import content_digests

#: The data fields of a row (what is trained on); each is digested into the row's lineage record.
DATA_FIELDS = ("instruction", "response", "messages", "text")
#: Descriptive columns shipped next to the data fields in accepted.jsonl / rejected.jsonl.
DESCRIPTIVE_FIELDS = ("row_id", "intent", "locale", "technique", "n_turns", "seed_id")
REJECT_FIELDS = ("gate", "reject_category", "reject_reason", "gate_score")


def clean(value: Any) -> Any:
    """A JSON-able version of a table cell: NaN/NA/±inf -> None (also inside lists and dicts), numpy scalars ->
    Python numbers. Canonical JSON has no non-finite numbers; a gate score of -inf means "no score"."""
    return jsonable(value)


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return clean(json.loads(value))
        except ValueError:
            return value
    return clean(value)


def data_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The shipped form of a row: descriptive fields + data fields (``messages`` = the parsed conversation)."""
    out = {f: clean(row.get(f)) for f in DESCRIPTIVE_FIELDS if f in row}
    out["instruction"] = clean(row.get("instruction"))
    out["response"] = clean(row.get("response"))
    out["messages"] = _json_field(row.get("conversation")) if row.get("conversation") is not None else None
    out["text"] = clean(row.get("text"))
    return out


def _records_of(table: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``row_id -> {column: value}`` for the given columns of ``table`` (absent columns read as None), built
    column-wise: a per-row ``.loc`` costs ~100x more on the wide decision tables."""
    ids = [str(r) for r in table["row_id"]]
    values = [table[c].tolist() if c in table.columns else [None] * len(table) for c in columns]
    return {rid: dict(zip(columns, vals)) for rid, *vals in zip(ids, *values)}


def _gate_index(gate: str, table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The lineage entry of every row a gate saw: kept or dropped, its score, the drop's category/reason, and —
    for a gate that rewrites rows (PII redaction) — ``edits``: what it changed (kind, column, span, placeholder)."""
    out: dict[str, dict[str, Any]] = {}
    edits = edits_column(gate)
    rewrites = edits in table.columns
    columns = ("kept", f"score_{gate}", "reject_category", "reject_reason") + ((edits,) if rewrites else ())
    for rid, r in _records_of(table, columns).items():
        kept = bool(r["kept"])
        entry = {"result": "kept" if kept else "dropped", "score": clean(r[f"score_{gate}"])}
        if not kept:
            entry.update(category=clean(r["reject_category"]), reason=clean(r["reject_reason"]))
        if rewrites and clean(r[edits]) is not None:
            entry["edits"] = _json_field(r[edits])
        out[rid] = entry
    return out


def final_content(candidates: pd.DataFrame, gate_tables: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """``row_id -> row`` for every row a gate rewrote: the row as the last rewriting gate that saw it left it.

    Gates that rewrite rows (a ``edits_<gate>`` column in their decision table) pass the rewritten row on, so a
    row ships — accepted, or in the reject log — in that form, never as generated (a redacted e-mail address must
    not come back through ``rejected.jsonl``)."""
    out: dict[str, dict[str, Any]] = {}
    for gate, table in gate_tables.items():
        edits = edits_column(gate)
        if edits not in table.columns:
            continue
        changed = table.loc[table[edits].notna()]
        for row in changed.to_dict("records"):
            out[str(row["row_id"])] = row
    return out


NOT_REACHED = {"result": "not_reached", "score": None}


def _gate_entries(row_id: str, indexes: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {gate: dict(index.get(row_id, NOT_REACHED)) for gate, index in indexes.items()}


#: Lineage key -> the human_review column holding it.
REVIEW_FIELDS = {"slice": "slice_key", "verdict": "review_verdict", "reason_category": "review_reason_category",
                 "reviewer_id_hashed": "reviewer_id_hashed"}


def _review_index(review: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """``row_id -> review entry`` for every row the review gate saw (sampled or not)."""
    if review is None:
        return {}
    rows = _records_of(review, ("review_sampled", *REVIEW_FIELDS.values()))
    return {rid: {"sampled": bool(r["review_sampled"]), **{k: clean(r[c]) for k, c in REVIEW_FIELDS.items()}}
            for rid, r in rows.items()}


def _review_entry(reviews: Mapping[str, dict[str, Any]], row_id: str) -> dict[str, Any]:
    """The review of one row: sampled or not, its slice, verdict, reason category and reviewer HMAC (rows the
    review gate never saw — dropped earlier — get an empty entry)."""
    found = reviews.get(row_id)
    return dict(found) if found is not None else {"sampled": False, **{k: None for k in REVIEW_FIELDS}}


def lineage_records(
    candidates: pd.DataFrame,
    gate_tables: Mapping[str, pd.DataFrame],
    *,
    gate_config_hash: str,
    seed_corpus_hash: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Lineage records for every candidate (sorted by ``row_id``) plus the accepted and rejected data rows.

    Args:
        candidates: the batch's ``generated_candidates``.
        gate_tables: gate name -> its stored decision table (the registry's order, :data:`synqa_dagster.stages.STAGES`);
            the human stage's table also carries the review columns (``review_sampled``, ``review_verdict``, ``review_reason_category``,
            ``reviewer_id_hashed``, ``slice_key``).
        gate_config_hash / seed_corpus_hash: versions that every record names.

    Returns:
        ``(records, accepted_rows, rejected_rows)``; a data row's ``content_digests`` equal its record's.
    """
    indexes = {g: _gate_index(g, t) for g, t in gate_tables.items()}
    # the human stage's table is the one carrying the review columns
    review = next((t for t in gate_tables.values() if "review_sampled" in t.columns), None)
    reviews = _review_index(review)
    rejects = {g: _records_of(t.loc[~t["kept"].astype(bool)], REJECT_FIELDS) for g, t in gate_tables.items()}
    rewritten = final_content(candidates, gate_tables)
    records, accepted, rejected = [], [], []
    ordered = candidates.sort_values("row_id")
    for row in ordered.to_dict("records"):
        row_id = str(row["row_id"])
        gates = _gate_entries(row_id, indexes)
        dropped = next((g for g, e in gates.items() if e["result"] == "dropped"), None)
        shipped = data_row(rewritten.get(row_id, row))
        digests = content_digests(shipped, DATA_FIELDS)
        record = {
            "row_id": row_id,
            "batch": clean(row["batch"]),
            "decision": "rejected" if dropped else "accepted",
            "rejected_by": dropped,
            "seed_id": clean(row["seed_id"]),
            "intent": clean(row["intent"]),
            "locale": clean(row["locale"]),
            "taxonomy_version": clean(row["taxonomy_version"]),
            "technique": clean(row["technique"]),
            "n_turns": clean(row["n_turns"]),
            "generator": {
                "id": clean(row["generator_id"]),
                "version": clean(row["generator_version"]),
                "sampling": _json_field(row["sampling"]),
            },
            "prompt_template_id": clean(row["prompt_template_id"]),
            "response_template_id": clean(row["response_template_id"]),
            "recipe_hash": clean(row["recipe_hash"]),
            "gate_config_hash": gate_config_hash,
            "seed_corpus_hash": seed_corpus_hash,
            "created_at": clean(row["created_at"]),
            "gates": gates,
            "review": _review_entry(reviews, row_id),
            "content_digests": digests,
        }
        records.append(record)
        if record["decision"] == "accepted":
            accepted.append(shipped)
        else:
            reject = {f: clean(v) for f, v in rejects[dropped][row_id].items()}
            rejected.append({**{k: shipped[k] for k in DESCRIPTIVE_FIELDS if k in shipped}, **reject,
                             **{k: shipped[k] for k in DATA_FIELDS}})
    return records, accepted, rejected

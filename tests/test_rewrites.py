"""Gates that rewrite rows (PII redaction): the rewrite reaches every later gate, the accepted split and the reject
log, survives sharding, is recorded in lineage, and a canary counts a redaction as caught."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synqa_dagster import canaries as planted
from synqa_dagster.engine import shards as sh
from synqa_dagster.gates.base import Gate, GateResult, decision_table, edits_column, rejects, survivors
from synqa_dagster.handover.records import lineage_records

SECRET = "jo.bloggs@example.com"


def _rows(n: int = 4) -> pd.DataFrame:
    texts = [f"mail me at {SECRET} about order {i}" if i % 2 == 0 else f"plain row {i}" for i in range(n)]
    return pd.DataFrame({
        "row_id": [f"r{i}" for i in range(n)], "batch": "b", "seed_id": "s", "intent": "x", "taxonomy_version": "v1",
        "locale": "en-GB", "technique": "self_instruct", "instruction": texts, "response": ["ok"] * n,
        "conversation": [json.dumps([{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]) for t in texts],
        "text": [f"{t}\nok" for t in texts], "n_turns": 1, "generator_id": "g", "generator_version": "v",
        "prompt_template_id": "p", "response_template_id": "r", "sampling": "{}", "recipe_hash": "h", "created_at": "t",
    })


class _Redactor(Gate):
    """Redacts SECRET in every text column; drops rows whose id ends in '2' (after redacting them)."""

    name = "pii"

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        result = GateResult.all_kept(self.name, len(rows)).enable_rewrites()
        for i, row in enumerate(rows.itertuples()):
            if SECRET in row.text:
                values = {c: getattr(row, c).replace(SECRET, "[EMAIL]") for c in ("instruction", "text", "conversation") if hasattr(row, c)}
                result.rewrite(i, values, [{"kind": "email", "column": "text", "start": row.text.index(SECRET),
                                            "end": row.text.index(SECRET) + len(SECRET), "placeholder": "[EMAIL]"}])
            if row.row_id.endswith("2"):
                result.drop(i, "pii_payment_card", "PII: payment_card (masked)", 1.0)
        return result


class _Later(Gate):
    name = "quality"

    def __init__(self, after_redaction: bool = True):
        self.after_redaction = after_redaction

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        result = GateResult.all_kept(self.name, len(rows))
        if self.after_redaction:
            assert not rows["text"].str.contains(SECRET).any(), "a later gate saw the unredacted row"
        result.drop(len(rows) - 1, "too_short", "planted drop")
        return result


def test_rewrites_reach_later_gates_and_both_outputs():
    rows = _rows(6)
    first = decision_table(rows, _Redactor().evaluate(rows))
    assert edits_column("pii") in first.columns
    assert first[edits_column("pii")].notna().sum() == 3
    assert not first["text"].str.contains(SECRET).any() and not first["conversation"].str.contains(SECRET).any()
    json.loads(first["conversation"].iloc[0])  # still valid JSON
    kept = survivors(first)
    second = decision_table(kept, _Later().evaluate(kept))
    assert not rejects(first)["text"].str.contains(SECRET).any()  # the reject log holds the redacted row only
    records, accepted, rejected = lineage_records(rows, {"pii": first, "quality": second}, gate_config_hash="g", seed_corpus_hash="s")
    shipped = json.dumps(accepted) + json.dumps(rejected)
    assert SECRET not in shipped and "[EMAIL]" in shipped
    by_id = {r["row_id"]: r for r in records}
    assert by_id["r0"]["gates"]["pii"]["edits"][0]["kind"] == "email"
    assert "edits" not in by_id["r1"]["gates"]["pii"]
    assert by_id["r2"]["decision"] == "rejected" and by_id["r2"]["rejected_by"] == "pii"


def test_a_gate_without_rewrites_keeps_its_schema():
    rows = _rows(3)
    table = decision_table(rows, _Later(after_redaction=False).evaluate(rows))
    assert not any(c.startswith("edits_") for c in table.columns)
    declared = decision_table(rows, GateResult.all_kept("pii", 3).enable_rewrites())
    assert declared[edits_column("pii")].isna().all()  # same columns whether or not this batch had a hit


def test_rewriting_a_column_the_rows_lack_is_an_error():
    rows = _rows(2)
    result = GateResult.all_kept("pii", 2)
    result.rewrite(0, {"no_such_column": "x"}, [])
    with pytest.raises(ValueError, match="no_such_column"):
        decision_table(rows, result)


def test_concat_shifts_rewrite_indices_and_shards_round_trip(tmp_path):
    rows = _rows(7)
    gate = _Redactor()
    parts = [gate.evaluate(rows.iloc[lo:hi].reset_index(drop=True)) for lo, hi in ((0, 3), (3, 5), (5, 7))]
    whole = gate.evaluate(rows)
    joined = GateResult.concat("pii", parts)
    assert joined.rewrites == whole.rewrites and joined.edits == whole.edits
    np.testing.assert_array_equal(joined.keep, whole.keep)
    fs = sh.folder(str(tmp_path / "run"))
    for rank, part in enumerate(parts):
        sh.write_result(fs, rank, part)
    read = sh.read_results(fs, "pii", len(parts))
    assert read.rewrites == whole.rewrites and read.edits == whole.edits
    assert decision_table(rows, read).equals(decision_table(rows, whole))


def test_a_canary_counts_a_redaction_as_caught():
    config = planted.CanaryConfig(per_kind=2)
    canary = planted.CanarySet("pii", planted._frame("pii", [
        {"kind": "email", "expected": planted.DROP, "instruction": f"reach me at {SECRET}", "response": "ok"},
        {"kind": "benign", "expected": planted.KEEP, "instruction": "how do I pause my plan?", "response": "ok"},
    ]))
    measured = planted.measure(_Redactor(), canary)
    assert measured.set_index("canary_kind")["dropped"].to_dict() == {"email": True, "benign": False}
    assert measured.set_index("canary_kind").loc["email", "reject_reason"].startswith("redacted: email")
    summary = planted.summarize(measured, config)
    assert summary.iloc[0]["recall"] == 1.0 and summary.iloc[0]["false_positive_rate"] == 0.0

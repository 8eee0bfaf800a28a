"""Glue between gates and assets: decision tables, survivors, the cross-batch dedup index, the funnel table."""

import numpy as np
import pandas as pd

from synqa_dagster.assets.gates import prior_accepted
from synqa_dagster.metadata import preview_markdown
from synqa_dagster.checks.invariants import accounting_violations
from synqa_dagster.funnel import funnel_table
from synqa_dagster.gates.base import GateResult, decision_table, rejects, result_from_decisions, survivors
from synqa_dagster.resources import StoreResource


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)], "batch": "b"})


def test_decision_table_round_trips_and_splits():
    rows = _rows(4)
    result = GateResult.all_kept("dedup", 4)
    result.drop(2, "near_duplicate", "near-duplicate: Jaccard 0.91 vs r0", 0.91)
    table = decision_table(rows, result)
    assert list(survivors(table)["row_id"]) == ["r0", "r1", "r3"]
    dropped = rejects(table)
    assert dropped.loc[0, "reject_reason"] == "near-duplicate: Jaccard 0.91 vs r0" and dropped.loc[0, "gate_score"] == 0.91
    back = result_from_decisions(table, "dedup")
    assert back.keep.tolist() == result.keep.tolist() and back.reason == result.reason


def test_dedup_prior_holds_only_batches_before_k(tmp_path):
    store = StoreResource(base_path=str(tmp_path))
    for batch in ("2026-11-01", "2026-11-02", "2026-11-04"):
        store.store.write("dedup_index", batch, pd.DataFrame({"row_id": [f"{batch}-a"], "batch": [batch], "text": ["x"]}))
    prior = prior_accepted(store, "2026-11-03")
    assert sorted(prior["batch"].unique()) == ["2026-11-01", "2026-11-02"]  # never 2026-11-04, even if it exists
    assert prior_accepted(store, "2026-11-01") is None


def test_funnel_table_adds_up():
    cands = _rows(10)
    q = decision_table(cands, _drop("quality", 10, [1, 2]))
    d = decision_table(survivors(q), _drop("dedup", 8, [0]))
    funnel = funnel_table(10, {"quality": q, "dedup": d})
    assert funnel["kept"].tolist() == [8, 7, 7]
    assert funnel.iloc[-1]["pass_rate"] == 0.7


def _drop(gate: str, n: int, idx: list[int]) -> GateResult:
    r = GateResult.all_kept(gate, n)
    for i in idx:
        r.drop(i, "x", f"reason {i}", 1.0)
    return r


def test_accounting_violations_name_the_rows():
    cands = pd.Series(["a", "b", "c", "d"])
    ok = accounting_violations(cands, pd.Series(["a", "b"]), pd.Series(["c", "d"]))
    assert not any(ok.values())
    bad = accounting_violations(cands, pd.Series(["a", "b", "b"]), pd.Series(["b", "z"]))
    assert bad["accepted_and_rejected"] == ["b"] and bad["unaccounted"] == ["c", "d"]
    assert bad["unknown_rows"] == ["z"] and bad["duplicated_in_accepted"] == ["b"]


def test_previews_render_hostile_rows_as_text():
    frame = pd.DataFrame({"text": ["<img src=x onerror=alert(1)> | **bold** [link](javascript:x)"]})
    md = preview_markdown(frame, ["text"])
    assert "<img" not in md and "&lt;img" in md and "\\*\\*bold\\*\\*" in md and "\\[link\\]" in md

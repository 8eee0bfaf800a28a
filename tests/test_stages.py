"""The stage registry: the funnel is declared once, and a new gate needs only its module, config and registry entry.

A small real gate (``PoliteOnlyGate`` below: drops rows without a polite marker) is added to the registry; the
Dagster definitions, the gate assets (materialized on a real instance), the reject log, the accepted split, the
outputs cleared on regenerate and ``synqa audit`` all pick it up with no other change.
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import dagster as dg
import pandas as pd
import pytest

from synqa_dagster.audit import ColumnMap, build_outputs, run_gates
from synqa_dagster.config import load_gate_config
from synqa_dagster.definitions import build_definitions
from synqa_dagster.gates.base import Gate, GateResult
from synqa_dagster.handover.records import lineage_records
from synqa_dagster.stages import (
    STAGES, GateStage, automatic_stages, batch_tables, gate_names, held_tables, input_asset, last_automatic, stage,
    validate_stages,
)
from synqa_dagster.storage import TableStore
from tests.conftest import write_recipe


class PoliteOnlyGate(Gate):
    """Drops rows whose text has no "please" (a toy, but real, gate: pure, deterministic, with a reason)."""

    name: ClassVar[str] = "polite_only"

    def __init__(self, config=None) -> None:
        self.config = config

    def evaluate(self, rows: pd.DataFrame) -> GateResult:
        result = GateResult.all_kept(self.name, len(rows))
        impolite = ~rows["text"].str.contains("please", case=False).to_numpy()
        result.drop_where(impolite, "impolite", "no polite marker (\"please\")", 1.0)
        return result


POLITE = GateStage(
    name="polite_only",
    asset="polite_only_gate",
    config_section="quality",  # a real gate would add its own section to GateConfig
    make_gate=lambda config, env: PoliteOnlyGate(config),
    describe=lambda config: "A toy gate added in a test: drops rows without a polite marker.",
)


def with_polite_after_quality() -> tuple[GateStage, ...]:
    stages = list(STAGES)
    stages.insert(gate_names().index("quality") + 1, POLITE)
    return tuple(stages)


def test_the_shipped_registry_is_well_formed():
    assert gate_names()[-1] == "human_review" and not stage("human_review").automatic
    assert last_automatic().name == automatic_stages()[-1].name
    assert input_asset(STAGES[0]) == "generated_candidates"
    for previous, current in zip(STAGES, STAGES[1:]):
        assert input_asset(current) == previous.asset
    tables = batch_tables()
    assert tables.index("drift_findings") < tables.index("review_queue") < tables.index("human_review")
    assert tables.index("candidate_embeddings") < tables.index("contamination_gate")
    assert held_tables() == ["human_review", "reject_log", "accepted_dataset", "dedup_index"]


def test_the_registry_refuses_a_malformed_funnel():
    with pytest.raises(ValueError, match="duplicate names"):
        validate_stages([*STAGES, dataclasses.replace(POLITE, name="quality")])
    with pytest.raises(ValueError, match="comes after a human stage"):
        validate_stages([*STAGES, POLITE])
    with pytest.raises(ValueError, match="unknown inputs"):
        dataclasses.replace(POLITE, inputs=("tea",))


def test_a_new_gate_appears_everywhere_the_funnel_is_walked(tmp_path):
    stages = with_polite_after_quality()
    defs = build_definitions(str(write_recipe(tmp_path / "r.yaml")), storage_base=str(tmp_path / "s"), stages=stages)
    graph = defs.resolve_asset_graph()

    def parents(asset: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(asset)).parent_keys}

    assert parents("polite_only_gate") == {"quality_gate"}
    assert parents("dedup_gate") == {"polite_only_gate"}
    for consumer in ("reject_log", "accepted_dataset", "handover_pack"):
        assert "polite_only_gate" in parents(consumer), consumer
    assert "polite_only_gate" in batch_tables(stages)  # cleared when the batch is regenerated
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == "polite_only_gate")
    assert spec.group_name == "gates" and "toy gate" in spec.description


def test_the_new_gate_runs_as_an_asset_and_its_rejects_reach_the_reject_log(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    stages = with_polite_after_quality()
    storage = tmp_path / "storage"
    defs = build_definitions(str(write_recipe(tmp_path / "r.yaml")), storage_base=str(storage), stages=stages)
    batch = "2026-11-02"
    candidates = pd.DataFrame({
        "row_id": ["a", "b", "c"], "batch": batch, "seed_id": "s1", "intent": "orders.order_status", "locale": "en-GB",
        "technique": "self_instruct",
        "instruction": ["Could you please tell me where my order is?", "Where is my order?", "Please cancel my order."],
        "response": ["Of course, please share the order number and I will check its status.",
                     "It should arrive within three to five working days.",
                     "Sure, please confirm the order number and I will cancel it."],
    })
    candidates["text"] = candidates["instruction"] + "\n" + candidates["response"]
    TableStore(str(storage)).write("generated_candidates", batch, candidates)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            defs.assets, selection=dg.AssetSelection.assets("pii_gate", "quality_gate", "polite_only_gate"),
            partition_key=batch, resources=defs.resources, instance=instance,
        )
    assert result.success
    table = TableStore(str(storage)).read("polite_only_gate", batch)
    quality = TableStore(str(storage)).read("quality_gate", batch)
    assert set(table["row_id"]) == set(quality.loc[quality["kept"], "row_id"])  # it read the previous survivors
    dropped = table.loc[~table["kept"]]
    assert "b" in set(dropped["row_id"]) and set(dropped["reject_category"]) == {"impolite"}

    # the outputs built from the stage tables name the new gate, in its place in the funnel
    upto = [s.name for s in stages].index("polite_only") + 1  # every stage up to the new one (pii, quality, polite_only)
    tables = {s.name: TableStore(str(storage)).read(s.asset, batch) for s in stages[:upto]}
    records, accepted, rejected = lineage_records(candidates.assign(
        taxonomy_version="v2", n_turns=1, generator_id="g", generator_version="1", sampling="{}",
        prompt_template_id="p", response_template_id="r", recipe_hash="h", created_at=batch, conversation=None),
        tables, gate_config_hash="g", seed_corpus_hash="s")
    by_id = {r["row_id"]: r for r in records}
    assert list(by_id["b"]["gates"]) == [s.name for s in stages[:upto]] and list(by_id["b"]["gates"])[-2:] == ["quality", "polite_only"]
    if by_id["b"]["gates"]["quality"]["result"] == "kept":
        assert by_id["b"]["rejected_by"] == "polite_only"


def test_synqa_audit_runs_the_same_registry(tmp_path):
    gate_config = load_gate_config()
    gate_config.contamination.use_embeddings = False  # keep this test fast: the n-gram check still runs
    rows = pd.DataFrame({
        "row_id": ["a", "b", "c"],
        "text": ["Could you please check the status of my parcel for me today?",
                 "Where is the parcel I ordered last week, it has not arrived yet?",
                 "Please tell me how to change the delivery address on my order."],
    })
    stages = with_polite_after_quality()
    run = run_gates(rows, gate_config, {}, ColumnMap(), show_progress=False, stages=stages)
    assert list(run.tables) == [s.name for s in stages if s.in_audit]
    accepted, log = build_outputs(run, rows)
    assert "b" in set(log.loc[log["gate"] == "polite_only", "row_id"])
    assert "b" not in set(accepted["row_id"])


def test_the_contamination_census_counts_leaks_that_an_earlier_gate_dropped_first():
    """A row the quality gate drops (it is too long a copy-paste) still counts as an eval-set leak on the card."""
    from synqa_dagster.gates.base import decision_table
    from synqa_dagster.resources import EmbedderResource
    from synqa_dagster.stages import census, earlier_drops

    gate_config = load_gate_config()
    contamination = stage("contamination")
    gate = contamination.build(gate_config, EmbedderResource())
    item = gate.eval_items.iloc[0]
    rows = pd.DataFrame({"row_id": ["leak", "fine"], "text": [str(item["text"]), "How do I change my email address?"]})
    quality = GateResult.all_kept("quality", 2)
    quality.drop(0, "too_long", "too long (planted)", 1.0)
    quality.drop(1, "too_short", "too short (planted)", 1.0)
    tables = {"quality": decision_table(rows, quality)}
    dropped = earlier_drops(contamination, tables)
    assert list(dropped["dropped_by"]) == ["quality", "quality"]
    verdicts = census(gate, dropped).set_index("row_id")
    assert verdicts.loc["leak", "hit"] and not verdicts.loc["fine", "hit"]
    assert verdicts.loc["leak", "dropped_by"] == "quality" and item["item_id"] in str(verdicts.loc["leak", "reason"])

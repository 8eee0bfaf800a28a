"""The drift / diversity / bias checks as real Dagster checks: run with ``dg.materialize`` on an ephemeral instance.

A small pipeline stands in for the funnel: ``generated_candidates`` → the last automatic gate (+
``candidate_embeddings``) → the real ``drift_findings`` asset → ``accepted_dataset``, with the real
``reference_corpus`` asset (validated, embedded, probes stored) built from part of the demo's reference sample. A drifting batch must fail ``distribution_drift`` with severity
ERROR, name the failing probes, and stop ``accepted_dataset``; a batch of held-out real messages must pass.
"""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from synqa_dagster.assets.drift import build_drift_findings_asset
from synqa_dagster.assets.reference import build_reference_asset
from synqa_dagster.config import GateConfig
from synqa_dagster.checks.drift import build_drift_checks
from synqa_dagster.gates.base import GateResult, decision_table
from synqa_dagster.resources import EmbedderResource, ParquetIOManager, StoreResource
from synqa_dagster.stages import last_automatic
from synqa_dagster.stats.config import DriftConfig
from synqa_dagster.stats.reference import ReferenceCorpusError, load_reference_corpus
from tests.stats.realdata import polite_long as _polite_long




@pytest.fixture(scope="module")
def demo_split(repo_root, tmp_path_factory):
    lines = (repo_root / "data" / "demo" / "reference_customers.jsonl").read_text().splitlines()
    folder = tmp_path_factory.mktemp("ref")
    (folder / "reference.jsonl").write_text("\n".join(lines[:250]) + "\n")
    held_out = pd.DataFrame([json.loads(line) for line in lines[250:330]])
    drift = DriftConfig(reference_path=str(folder / "reference.jsonl"))
    storage = folder / "storage"
    assets, _, resources = _defs(drift, held_out, storage)
    with dg.instance_for_test() as instance:  # the unpartitioned reference, built (validated, embedded) once
        dg.materialize([assets[0]], resources=resources, instance=instance)
    return drift, held_out, storage


LAST = last_automatic()  # the stage whose survivors the drift findings test


def _defs(drift: DriftConfig, batch: pd.DataFrame, storage):
    partitions = dg.DailyPartitionsDefinition(start_date="2026-11-01")
    common = dict(partitions_def=partitions, io_manager_key="parquet_io_manager")

    @dg.asset(name="generated_candidates", **common)
    def generated_candidates():
        return batch

    @dg.asset(name=LAST.asset, **common)  # the registry's last automatic stage (what the findings read)
    def last_gate(generated_candidates: pd.DataFrame):
        return decision_table(generated_candidates, GateResult.all_kept(LAST.name, len(generated_candidates)))

    @dg.asset(name="candidate_embeddings", **common)
    def candidate_embeddings(generated_candidates: pd.DataFrame):
        # stand-in: the checks compare the `instruction` column, which they embed themselves (the stored
        # vectors are of `text`, used only when text_column is "text")
        return pd.DataFrame({"row_id": generated_candidates["row_id"], "embedding": [np.zeros(384, np.float32)] * len(generated_candidates)})

    @dg.asset(name="accepted_dataset", deps=["drift_findings"], ins={"last": dg.AssetIn(LAST.asset)}, **common)
    def accepted_dataset(last: pd.DataFrame):
        return last

    findings = build_drift_findings_asset(None, GateConfig(drift=drift), partitions)
    assets = [build_reference_asset(drift), generated_candidates, last_gate, candidate_embeddings, findings, accepted_dataset]
    checks = build_drift_checks(drift, partitions)
    resources = {
        "parquet_io_manager": ParquetIOManager(base_path=str(storage)),
        "store": StoreResource(base_path=str(storage)),
        "embedder": EmbedderResource(),
    }
    return assets, checks, resources


def _batch(texts: list[str], intents: list[str]) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame({
        "row_id": [f"r{i}" for i in range(n)], "intent": intents, "instruction": texts,
        "text": [t + "\nSure, I can help with that." for t in texts],
    })


def _run(drift, batch, storage, partition):
    assets, checks, resources = _defs(drift, batch, storage)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*assets, *checks], partition_key=partition, resources=resources, instance=instance, raise_on_error=False,
            selection=dg.AssetSelection.assets(*assets[1:]),
        )
        evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        return evals, materialized


def test_drifting_batch_is_returned_to_synthesis(demo_split, tmp_path):
    drift, held_out, storage = demo_split
    texts = [_polite_long(t, i) for i, t in enumerate(held_out["text"])]
    evals, materialized = _run(drift, _batch(texts, held_out["label"].tolist()), storage, "2026-11-02")
    drift_eval = evals["distribution_drift"]
    assert not drift_eval.passed and drift_eval.severity == dg.AssetCheckSeverity.ERROR
    meta = drift_eval.metadata
    assert meta["verdict"].value == "returned_to_synthesis"
    failing = meta["failing_probes"].value
    assert {"chars", "tokens", "formality"} <= set(failing)
    table = meta["probes"].value
    for column in ("statistic", "p_adjusted", "effect", "threshold", "failed"):
        assert column in table
    assert meta["histogram_chars"].value.startswith("![chars")
    assert "data:image/png;base64," in meta["histogram_chars"].value
    # the blocking ERROR failed the run, so it was rolled back: its findings (and their PNGs) are in the run's
    # metadata in the UI, and nothing of the drifting batch was published
    assert not (storage / "drift_findings" / "batch=2026-11-02").exists()
    assert not (storage / LAST.asset / "batch=2026-11-02").exists()
    assert not evals["politeness_skew"].passed  # WARN-level screen flags the over-politeness too
    assert evals["politeness_skew"].severity == dg.AssetCheckSeverity.WARN
    assert "accepted_dataset" not in materialized  # the blocking ERROR stopped the batch
    assert LAST.asset in materialized and "drift_findings" in materialized


def test_similar_batch_passes(demo_split, tmp_path):
    drift, held_out, storage = demo_split
    evals, materialized = _run(drift, _batch(held_out["text"].tolist(), held_out["label"].tolist()), storage, "2026-11-03")
    assert evals["distribution_drift"].passed, evals["distribution_drift"].metadata["probes"].value
    assert evals["distribution_drift"].metadata["verdict"].value == "accepted"
    assert evals["diversity_collapse"].passed, evals["diversity_collapse"].metadata["metrics"].value
    assert evals["identity_term_rates"].passed and evals["politeness_skew"].passed
    assert "accepted_dataset" in materialized


def test_reference_validation_names_file_line_field(tmp_path, repo_root):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"message_id": "a", "label": "orders.order_status", "taxonomy_version": "v1", "locale": "en-GB", "text": "where is it"}\n'
        '{"message_id": "b", "label": "orders.nope", "taxonomy_version": "v1", "locale": "en-GB", "text": "hello"}\n'
    )
    with pytest.raises(ReferenceCorpusError, match=r"bad.jsonl: line 2: field label: is not a label of taxonomy v1"):
        load_reference_corpus(bad, repo_root / "data" / "demo" / "taxonomy")
    corpus = load_reference_corpus(repo_root / "data/demo/reference_customers.jsonl", repo_root / "data/demo/taxonomy", "v2")
    assert len(corpus.rows) == 461 and corpus.rows["intent"].notna().all() and len(corpus.content_hash) == 16
    assert "account.sign_in_problem" in set(corpus.rows["intent"])  # v1 labels carried to v2 by the explicit mapping

"""The batch's drift findings are computed once, and the reference's probes once: counted during a real run.

The whole funnel after generation runs on a real Dagster instance (gates, embeddings, reference, drift findings
and their five checks, review sample, human review, outputs, the signed handover and its card) over a stored
candidates table of held-out real customer messages, with counting wrappers around the findings code. Nothing
here depends on what a model writes.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import yaml

from synqa_dagster.definitions import build_definitions
from synqa_dagster.stats import findings, probes
from synqa_dagster.storage import TableStore
from tests.conftest import write_recipe

BATCH = "2026-11-02"


def _candidates(repo_root) -> pd.DataFrame:
    lines = (repo_root / "data" / "demo" / "reference_customers.jsonl").read_text().splitlines()[300:360]
    msgs = [json.loads(line) for line in lines]
    rows = []
    for i, m in enumerate(msgs):
        answer = f"Thanks for getting in touch. I have looked into request {i} and will update you within two working days."
        rows.append({
            "row_id": f"row{i:03d}", "batch": BATCH, "seed_id": f"s{i % 5}", "intent": m["label"], "taxonomy_version": "v2",
            "locale": m["locale"], "technique": "self_instruct", "instruction": m["text"], "response": answer,
            "conversation": json.dumps([{"role": "user", "content": m["text"]}, {"role": "assistant", "content": answer}]),
            "text": m["text"] + "\n" + answer, "n_turns": 1, "generator_id": "test", "generator_version": "0",
            "prompt_template_id": "p", "response_template_id": "r", "sampling": "{}", "recipe_hash": "h",
            "created_at": BATCH + "T00:00:00+00:00",
        })
    return pd.DataFrame(rows)


def test_drift_findings_and_reference_probes_are_computed_once_per_batch(tmp_path, monkeypatch, repo_root):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for key, value in {"DAGSTER_HOME": home, "SYNQA_HOME": tmp_path / "synqa_home", "SYNQA_STORAGE": tmp_path / "storage"}.items():
        monkeypatch.setenv(key, str(value))
    calls = {"distribution": 0, "diversity": 0, "politeness": 0, "reference_probes": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(findings, "distribution_finding", counting("distribution", findings.distribution_finding))
    monkeypatch.setattr(findings, "diversity_finding", counting("diversity", findings.diversity_finding))
    monkeypatch.setattr(findings, "politeness_finding", counting("politeness", findings.politeness_finding))
    real_compute = probes.compute_probes

    def compute(*args, **kwargs):
        if kwargs.get("is_reference") or (len(args) > 5 and args[5]):
            calls["reference_probes"] += 1
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(probes, "compute_probes", compute)

    # the reference sample: the first 300 messages; the candidates are held-out messages 300-360 (a reference that
    # held them would make every candidate a verbatim copy of real data, which the memorisation gate rejects)
    lines = (repo_root / "data" / "demo" / "reference_customers.jsonl").read_text().splitlines()
    (tmp_path / "reference.jsonl").write_text("\n".join(lines[:300]) + "\n")
    gates = yaml.safe_load((repo_root / "gates" / "default.yaml").read_text())
    gates["drift"]["reference_path"] = str(tmp_path / "reference.jsonl")
    (tmp_path / "gates.yaml").write_text(yaml.safe_dump(gates, sort_keys=False))
    defs = build_definitions(str(write_recipe(tmp_path / "r.yaml")), str(tmp_path / "gates.yaml"),
                             storage_base=str(tmp_path / "storage"), handover_base=str(tmp_path / "handover"))
    TableStore(str(tmp_path / "storage")).write("generated_candidates", BATCH, _candidates(repo_root))
    with dg.instance_for_test() as instance:
        selection = dg.AssetSelection.all() - dg.AssetSelection.assets("generated_candidates")
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks], selection=selection, partition_key=BATCH,
            resources=defs.resources, instance=instance, raise_on_error=False,
        )
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"drift_findings", "handover_pack", "accepted_dataset"} <= materialized, [e.message for e in result.all_events if e.is_failure]
    accepted = TableStore(str(tmp_path / "storage")).read("accepted_dataset", BATCH)
    assert len(accepted) >= 40  # the held-out messages are not copies of the reference: most of them ship
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert {"distribution_drift", "diversity_collapse", "identity_term_rates", "intent_coverage", "politeness_skew"} <= checks
    # five checks and the card reported the findings; each was computed exactly once
    assert calls == {"distribution": 1, "diversity": 1, "politeness": 1, "reference_probes": 1}, calls
    # and the card states the findings the checks reported
    stored = TableStore(str(tmp_path / "storage")).read("drift_findings", BATCH)
    drift_json = json.loads((tmp_path / "handover" / f"batch={BATCH}" / "drift.json").read_text())
    assert set(drift_json["checks"]) == set(stored["check"])
    for row in stored.itertuples():
        assert drift_json["checks"][row.check]["verdict"] == row.verdict

"""Per-batch canaries: seeded plantings per gate, measured through the real gates, and a check that fails a batch
whose gate is broken on purpose."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import yaml

from synqa_dagster import canaries
from synqa_dagster.config import load_gate_config
from synqa_dagster.definitions import build_definitions
from synqa_dagster.resources import EmbedderResource
from synqa_dagster.stages import STAGES, run_canaries, stage
from tests.conftest import REPO_ROOT, write_recipe


def test_plantings_are_seeded_per_batch_and_say_what_they_are():
    config = load_gate_config().canaries
    a = canaries.plant_quality("2026-11-02", config).rows
    b = canaries.plant_quality("2026-11-02", config).rows
    c = canaries.plant_quality("2026-11-03", config).rows
    pd.testing.assert_frame_equal(a, b)
    assert not a["response"].equals(c["response"])  # another batch draws other rows
    assert set(a["expected"]) == {"drop", "keep"} and a["row_id"].is_unique
    assert all(r.startswith("canary-quality-") for r in a["row_id"])


def test_dedup_canaries_sit_at_a_known_jaccard():
    rows = canaries.plant_dedup("2026-11-02", load_gate_config().canaries).rows
    near = rows[rows["canary_kind"] == "near_duplicate"]
    assert len(near) and all(0.85 <= float(d.split()[-1]) < 1.0 for d in near["detail"])
    exact = rows[rows["canary_kind"] == "exact_copy"]
    assert len(exact) and all(d == "Jaccard 1.00" for d in exact["detail"])


def test_every_automatic_gate_is_measured_on_its_canaries():
    import pandas as pd

    from synqa_dagster.corpus.real import real_rows

    gates = load_gate_config()
    demo = REPO_ROOT / "data" / "demo"
    real = real_rows(pd.read_json(demo / "seeds.jsonl", lines=True), pd.read_json(demo / "reference_customers.jsonl", lines=True))
    results = run_canaries("2026-11-02", gates, EmbedderResource(), real=real)
    summary = canaries.summarize(results, gates.canaries).set_index("gate")
    assert set(summary.index) == {s.name for s in STAGES if s.canaries is not None}
    for name in ("pii", "memorisation"):  # redactions count as caught; copies of real rows are named
        assert summary.loc[name, "recall"] == 1.0 and summary.loc[name, "false_positive_rate"] == 0.0, summary.loc[name].to_dict()
    for name in ("quality", "dedup", "contamination"):
        assert summary.loc[name, "recall"] == 1.0, (name, summary.loc[name].to_dict())
        assert summary.loc[name, "false_positive_rate"] == 0.0, (name, summary.loc[name].to_dict())
    kinds = set(results.loc[results["gate"] == "contamination", "canary_kind"])
    assert {"verbatim", "rewrapped", "truncated", "embedded"} <= kinds


def test_a_gate_broken_on_purpose_fails_the_summary():
    gates = load_gate_config()
    broken = gates.model_copy(update={"quality": gates.quality.model_copy(update={"meta_prompt_markers": (), "max_token_run": None,
                                                                                   "max_duplicate_line_fraction": None})})
    results = run_canaries("2026-11-02", broken, EmbedderResource(), [stage("quality")])
    summary = canaries.summarize(results, broken.canaries).set_index("gate")
    assert summary.loc["quality", "recall"] < 1.0 and not summary.loc["quality", "passed"]
    assert "meta_prompt_leak" in summary.loc["quality", "missed_kinds"]


def test_the_canary_check_stops_a_batch_whose_gate_is_broken(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    data = yaml.safe_load((REPO_ROOT / "gates" / "default.yaml").read_text())
    data["toxicity"]["backend"] = "profanity_check"
    data["toxicity"]["profanity_threshold"] = 1.0  # a toxicity gate that can no longer drop anything
    data["canaries"]["severity"] = "ERROR"  # the production default (the demo config reports at WARN)
    bad = tmp_path / "gates.yaml"
    bad.write_text(yaml.safe_dump(data))
    defs = build_definitions(str(write_recipe(tmp_path / "r.yaml")), str(bad), storage_base=str(tmp_path / "s"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks], selection=dg.AssetSelection.assets("seed_corpus", "reference_corpus", "gate_canaries"),
            partition_key="2026-11-02", resources=defs.resources, instance=instance, raise_on_error=False,
        )
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["gate_canary_recall"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["failing_gates"].value == ["toxicity"]
    assert evaluation.metadata["recall_toxicity"].value == 0.0


@pytest.mark.parametrize("name", ["quality", "dedup", "toxicity", "contamination"])
def test_planted_rows_never_look_like_batch_rows(name):
    rows = stage(name).canaries("2026-11-02", load_gate_config().canaries,
                               stage(name).build(load_gate_config(), EmbedderResource())).rows
    assert (rows["technique"] == "canary").all() and rows["row_id"].str.startswith("canary-").all()

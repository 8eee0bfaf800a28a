"""A batch end to end on a real Dagster instance with the real tiny LLM (SmolLM2-135M via llama.cpp).

One module-scoped run of the whole job (2 seeds, short completions) is shared by the assertions below; a second
generation of the same batch checks byte-identical determinism, and a recipe change checks staleness.
"""

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from synqa_dagster.batches import latest_batch_versions, stale_batches
from synqa_dagster.config import load_recipe
from synqa_dagster.definitions import BATCH_JOB, build_definitions
from synqa_dagster.generation.pipeline import CANDIDATE_COLUMNS
from synqa_dagster.storage import TableStore
from tests.conftest import REPO_ROOT, TINY, write_recipe

BATCH = "2026-11-02"


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {"DAGSTER_HOME": str(home), "SYNQA_STORAGE": str(tmp / "storage"), "SYNQA_HOME": str(tmp / "synqa_home")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    recipe_path = write_recipe(tmp / "tiny.yaml", **TINY)
    defs = build_definitions(str(recipe_path))
    instance = dg.DagsterInstance.get()
    result = defs.resolve_job_def(BATCH_JOB).execute_in_process(partition_key=BATCH, instance=instance, raise_on_error=False)
    yield {"tmp": tmp, "defs": defs, "instance": instance, "result": result, "recipe_path": recipe_path, "store": TableStore(env["SYNQA_STORAGE"])}
    instance.dispose()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_the_batch_materializes_every_asset_and_passes_its_checks(batch_run):
    result = batch_run["result"]
    failures = [e.message for e in result.all_events if e.is_failure]
    assert result.success, failures
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {
        "seed_corpus", "generated_candidates", "quality_gate", "dedup_gate", "toxicity_gate",
        "candidate_embeddings", "contamination_gate", "reject_log", "accepted_dataset", "dedup_index",
        "reference_corpus",
    }
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["every_candidate_accounted_once"] is True
    assert checks["no_eval_ngram_in_accepted"] is True
    assert "toxicity_slice_escalation" in checks
    assert {"distribution_drift", "diversity_collapse", "intent_coverage"} <= set(checks)


def test_candidates_carry_lineage_from_real_generation(batch_run):
    store: TableStore = batch_run["store"]
    rows = store.read("generated_candidates", BATCH)
    assert list(rows.columns) == CANDIDATE_COLUMNS
    assert set(rows["technique"]) == {"self_instruct", "evol_instruct", "magpie_single_turn", "magpie_multi_turn"}
    assert rows["row_id"].is_unique and rows["seed_id"].nunique() == 2
    assert rows["generator_version"].str.match(r"^sha256:[0-9a-f]{64}$").all()
    assert (rows["batch"] == BATCH).all() and (rows["created_at"] == "2026-11-02T00:00:00+00:00").all()
    recipe = load_recipe(batch_run["recipe_path"])
    assert (rows["recipe_hash"] == recipe.content_hash()).all()
    sampling = json.loads(rows["sampling"].iloc[0])
    assert sampling["max_new_tokens"] == TINY["generator.sampling.max_new_tokens"] and "seed" in sampling
    multi = rows[rows["technique"] == "magpie_multi_turn"]
    assert (multi["n_turns"] >= 2).any()  # a real multi-turn conversation came back
    assert rows["text"].str.len().gt(0).all()


def test_reject_log_and_accepted_split_account_for_every_candidate(batch_run):
    store: TableStore = batch_run["store"]
    candidates = store.read("generated_candidates", BATCH)
    accepted = store.read("accepted_dataset", BATCH)
    rejected = store.read("reject_log", BATCH)
    assert len(accepted) + len(rejected) == len(candidates)
    assert set(accepted["row_id"]).isdisjoint(rejected["row_id"])
    assert rejected["reject_reason"].notna().all() and rejected["reject_reason"].str.len().gt(5).all()
    assert {"seed_id", "technique", "generator_id", "prompt_template_id", "gate", "gate_score"} <= set(rejected.columns)
    assert {"score_quality", "score_dedup", "score_toxicity", "score_contamination"} <= set(accepted.columns)
    index = store.read("dedup_index", BATCH)
    assert sorted(index["row_id"]) == sorted(accepted["row_id"])


def test_metadata_tells_the_story_in_the_ui(batch_run):
    instance = batch_run["instance"]
    for asset in ("generated_candidates", "quality_gate", "accepted_dataset"):
        record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
        meta = record.asset_materialization.metadata
        assert {"dagster/row_count", "preview", "seconds", "recipe_hash"} <= set(meta)
    funnel = instance.fetch_materializations(dg.AssetKey("accepted_dataset"), limit=1).records[0].asset_materialization.metadata["funnel"]
    assert "candidates →" in funnel.value and "contamination" in funnel.value


def test_same_batch_same_recipe_gives_byte_identical_rows(batch_run, tmp_path):
    from synqa_dagster.generation.runner import run_in_subprocess

    store: TableStore = batch_run["store"]
    seeds = store.read("seed_corpus", BATCH)
    recipe = load_recipe(batch_run["recipe_path"])
    from synqa_dagster.generation.seeds import select_seeds

    chosen = select_seeds(seeds, BATCH, recipe.seed_corpus.seeds_per_batch, salt=recipe.generator.seed)
    again, _ = run_in_subprocess(recipe, chosen, BATCH, "2026-11-02T00:00:00+00:00", tmp_path / "cache", log=lambda _: None)
    first = store.read("generated_candidates", BATCH)
    pd.testing.assert_frame_equal(first, again)
    again_uri = TableStore(str(tmp_path / "s")).write("generated_candidates", BATCH, again)
    assert Path(again_uri).read_bytes() == Path(store.uri("generated_candidates", BATCH)).read_bytes()


def test_a_recipe_change_makes_the_batch_stale(batch_run):
    instance = batch_run["instance"]
    old = load_recipe(batch_run["recipe_path"])
    versions = latest_batch_versions(instance)
    assert versions[BATCH].recipe_hash == old.content_hash()
    assert stale_batches(instance, old.content_hash()) == []
    changed = write_recipe(batch_run["tmp"] / "changed.yaml", **{**TINY, "generator.sampling.temperature": 0.2})
    new_hash = load_recipe(changed).content_hash()
    assert new_hash != old.content_hash()
    assert [b.batch for b in stale_batches(instance, new_hash)] == [BATCH]
    new_defs = build_definitions(str(changed))
    assert new_defs.resolve_assets_def("generated_candidates").code_versions_by_key[dg.AssetKey("generated_candidates")] == new_hash
    # the sensor requests exactly one rebuild of the stale batch, keyed by batch and recipe
    sensor = new_defs.resolve_sensor_def("stale_batches_sensor")
    requests = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=new_defs)).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [(BATCH, f"{BATCH}@{new_hash}")]

"""The code location loads, and every asset tells its story in the UI (description, group, kinds, versions)."""

import dagster as dg

from synqa_dagster.config import load_gate_config, load_recipe
from synqa_dagster.definitions import BATCH_JOB, build_definitions, defs
from synqa_dagster.stages import EMBEDDINGS, STAGES, embeddings_stage, input_asset, last_automatic



def funnel_edges(stages=STAGES) -> list[tuple[str, str]]:
    """The edges the asset graph must have, derived from the stage registry (nothing here names a gate)."""
    edges = [("seed_corpus", "generated_candidates")]
    for s in stages:
        edges.append((input_asset(s, stages), s.asset))
        if EMBEDDINGS in s.inputs:
            edges.append(("candidate_embeddings", s.asset))
    first = embeddings_stage(stages)
    edges.append((input_asset(first, stages), "candidate_embeddings"))  # it embeds the first user's input rows
    tested = last_automatic(stages).asset
    for s in stages:
        if s.census:
            edges += [(e.asset, s.census_asset) for e in stages[: stages.index(s)]]
            edges += [(s.census_asset, "handover_pack")]
    edges += [("gate_canaries", "review_queue"), ("gate_canaries", "handover_pack")]
    edges += [(tested, "drift_findings"), ("reference_corpus", "drift_findings"), ("drift_findings", "review_queue"),
              (tested, "review_queue"), ("review_queue", "human_review")]
    for s in stages:
        edges += [(s.asset, "reject_log"), (s.asset, "accepted_dataset"), (s.asset, "handover_pack")]
    edges += [("accepted_dataset", "dedup_index"), ("accepted_dataset", "handover_pack"),
              ("drift_findings", "handover_pack"), ("handover_pack", "dataset_card")]
    return edges


# the drift checks on drift_findings block review_queue, so an ERROR stops the batch before review and shipping


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(BATCH_JOB)
    assert job.partitions_def is not None
    assert defs.resolve_schedule_def("synqa_batch_schedule").cron_schedule == "30 0 * * *"
    assert defs.resolve_sensor_def("stale_batches_sensor") is not None
    assert defs.resolve_sensor_def("review_decisions_sensor") is not None
    review_job = defs.resolve_job_def("synqa_review_job")
    assert {k.to_user_string() for k in review_job.asset_layer.selected_asset_keys} == {
        "human_review", "reject_log", "accepted_dataset", "dedup_index", "handover_pack", "dataset_card"}


def test_every_asset_has_description_group_kinds_and_the_recipe_version():
    recipe_hash = load_recipe().content_hash()
    gate_hash = load_gate_config().content_hash()
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    # the gates + their census tables + corpus, generation, embeddings, drift, canaries, review queue, outputs, handover
    assert len(specs) == len(STAGES) + sum(s.census for s in STAGES) + 12
    for name, spec in specs.items():
        if name in ("reference_corpus", "dataset_card"):  # shared across batches: unpartitioned
            assert spec.partitions_def is None and spec.description and spec.kinds
            continue
        assert spec.description and len(spec.description) > 40, name
        assert spec.group_name in {"corpus", "generation", "gates", "review", "outputs", "handover"}, name
        assert spec.kinds, name
        assert spec.partitions_def is not None, name
        assert spec.code_version in (recipe_hash, f"{recipe_hash}.{gate_hash}"), name
    assert specs["generated_candidates"].code_version == recipe_hash


def test_the_asset_graph_is_the_funnel():
    graph = defs.resolve_asset_graph()
    for upstream, downstream in funnel_edges():
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, (upstream, downstream)


def test_checks_are_partitioned_and_blocking():
    checks = {k.name: k for k in defs.resolve_asset_graph().asset_check_keys}
    assert set(checks) == {
        "toxicity_slice_escalation", "every_candidate_accounted_once", "no_eval_ngram_in_accepted",
        "distribution_drift", "diversity_collapse", "identity_term_rates", "intent_coverage", "politeness_skew",
        "gate_canary_recall",
    }
    for check_def in defs.asset_checks:
        for spec in check_def.check_specs:
            assert spec.blocking, spec.name


def test_cadence_comes_from_the_recipe(tmp_path):
    from tests.conftest import write_recipe

    hourly = write_recipe(tmp_path / "hourly.yaml", **{"batches.cadence": "hourly", "batches.start": "2026-11-20-00:00"})
    job = build_definitions(str(hourly)).resolve_job_def(BATCH_JOB)
    keys = job.partitions_def.get_partition_keys()
    assert keys[0] == "2026-11-20-00:00" and keys[1] == "2026-11-20-01:00"

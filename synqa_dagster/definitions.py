"""The synqa code location: assembles the per-stage assets, checks, jobs, schedule, sensor and resources.

``defs`` is built from the recipe and gate config named by ``$SYNQA_RECIPE`` / ``$SYNQA_GATES`` (defaults:
``recipes/demo.yaml`` and ``gates/default.yaml``). Tests and the CLI build other variants with
:func:`build_definitions`.
"""

from __future__ import annotations

import dagster as dg

from typing import Sequence

from synqa_dagster.assets.canaries import build_canary_asset
from synqa_dagster.assets.corpus import build_seed_corpus_asset
from synqa_dagster.assets.drift import build_drift_findings_asset
from synqa_dagster.assets.gates import build_gate_assets
from synqa_dagster.assets.generation import build_generation_asset
from synqa_dagster.assets.handover import build_handover_assets
from synqa_dagster.assets.outputs import build_output_assets
from synqa_dagster.assets.reference import build_reference_asset
from synqa_dagster.assets.review import build_review_assets
from synqa_dagster.checks.canaries import build_canary_checks
from synqa_dagster.checks.drift import build_drift_checks
from synqa_dagster.checks.invariants import build_invariant_checks
from synqa_dagster.checks.toxicity import build_toxicity_checks
from synqa_dagster.config import load_gate_config, load_recipe
from synqa_dagster.partitions import batch_partitions
from synqa_dagster.paths import default_handover_location, default_storage_base
from synqa_dagster.resources import (
    EmbedderResource, HandoverResource, ParquetIOManager, ReviewStoreResource, ScorerResource, StoreResource,
)
from synqa_dagster.resources.storage import s3_resource_from_env
from synqa_dagster.runs import build_run_recovery_sensor
from synqa_dagster.sensors import build_review_decisions_sensor, build_stale_batches_sensor
from synqa_dagster.stages import STAGES, GateStage, validate_stages

BATCH_JOB = "synqa_batch_job"
REVIEW_JOB = "synqa_review_job"


def build_definitions(
    recipe_path: str | None = None,
    gates_path: str | None = None,
    storage_base: str | None = None,
    review_store_url: str | None = None,
    handover_base: str | None = None,
    stages: Sequence[GateStage] = STAGES,
) -> dg.Definitions:
    """Definitions for one recipe + gate config; ``storage_base`` overrides ``$SYNQA_STORAGE``,
    ``review_store_url`` ``$SYNQA_REVIEW_STORE`` and ``handover_base`` ``$SYNQA_HANDOVER``. ``stages`` is the
    funnel (default: the registry, :data:`synqa_dagster.stages.STAGES`); every gate-related asset derives from it."""
    recipe = load_recipe(recipe_path)
    gates = load_gate_config(gates_path)
    stages = validate_stages(stages)
    partitions = batch_partitions(recipe.batches)
    assets = [
        build_seed_corpus_asset(recipe, partitions),
        build_generation_asset(recipe, partitions, stages),
        *build_gate_assets(recipe, gates, partitions, stages),
        build_drift_findings_asset(recipe, gates, partitions, stages),
        build_canary_asset(recipe, gates, partitions, stages),
        *build_review_assets(recipe, gates, partitions, stages),
        *build_output_assets(recipe, gates, partitions, stages),
        build_reference_asset(gates.drift, recipe),
        *build_handover_assets(recipe, gates, partitions, stages),
    ]
    checks = [
        *build_toxicity_checks(gates, partitions),
        *build_drift_checks(gates.drift, partitions),
        *build_invariant_checks(gates, partitions),
        *build_canary_checks(gates, partitions),
    ]
    batch_job = dg.define_asset_job(
        BATCH_JOB,
        selection=dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks(*checks),
        description="Generate and gate one batch end to end.",
        executor_def=dg.in_process_executor,
    )
    review_job = dg.define_asset_job(
        REVIEW_JOB,
        selection=dg.AssetSelection.assets(*(s.asset for s in stages if not s.automatic)).downstream(),
        description="Finish a batch after human review: apply the decisions and rebuild everything downstream.",
        executor_def=dg.in_process_executor,
    )
    schedule = dg.build_schedule_from_partitioned_job(
        batch_job,
        minute_of_hour=recipe.batches.schedule_offset_minutes,
        name="synqa_batch_schedule",
        description="Materializes the newest batch when its window closes.",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    base = storage_base or default_storage_base()
    # One setting picks the storage: an s3:// base (or handover base) wires dagster-aws's S3Resource (endpoint and
    # credentials as EnvVars) into the IO manager and the store; a local base needs no S3 at all.
    on_s3 = base.startswith("s3://") or (handover_base or default_handover_location(base)).startswith("s3://")
    s3 = s3_resource_from_env() if on_s3 else None
    store = StoreResource(base_path=base, s3=s3, handover_base=handover_base or "")
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[batch_job, review_job],
        schedules=[schedule],
        sensors=[
            build_stale_batches_sensor(BATCH_JOB, recipe.content_hash(), partitions),
            build_review_decisions_sensor(REVIEW_JOB, partitions),
            build_run_recovery_sensor(lambda: [store.store, store.published_folders()]),
        ],
        resources={
            "parquet_io_manager": ParquetIOManager(base_path=base, s3=s3),
            "store": store,
            "embedder": EmbedderResource.from_gate_config(gates),  # the gate config's embedding route
            "scorers": ScorerResource(),
            "review_store": ReviewStoreResource(url=review_store_url or ""),
            "handover": HandoverResource(base_path=handover_base or ""),
        },
        metadata={"recipe_hash": recipe.content_hash(), "gate_config_hash": gates.content_hash()},
    )


defs = build_definitions()

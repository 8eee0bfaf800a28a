"""Which batches exist and which recipe built them: find batches built with a recipe other than the current one.

Every materialization of ``generated_candidates`` records ``dagster/code_version`` = the recipe hash it ran
with, so a batch is *stale* when its latest materialization's code version differs from the current recipe's
hash. Used by ``synqa stale``, ``synqa backfill-stale`` and the ``stale_batches_sensor``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

GENERATION_ASSET = dg.AssetKey("generated_candidates")
CODE_VERSION_TAG = "dagster/code_version"


@dataclass(frozen=True)
class BatchVersion:
    """The latest materialization of one batch: its partition key, the recipe hash it ran with, and when."""

    batch: str
    recipe_hash: str | None
    timestamp: float
    run_id: str


def latest_batch_versions(instance: dg.DagsterInstance, asset_key: dg.AssetKey = GENERATION_ASSET) -> dict[str, BatchVersion]:
    """Latest materialization per batch of ``asset_key``, with the code version (recipe hash) it recorded."""
    latest: dict[str, BatchVersion] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=500, cursor=cursor)
        for record in result.records:
            mat = record.asset_materialization
            if mat is None or mat.partition is None or mat.partition in latest:
                continue  # descending order: the first one seen per partition is the latest
            latest[mat.partition] = BatchVersion(
                batch=mat.partition,
                recipe_hash=(mat.tags or {}).get(CODE_VERSION_TAG),
                timestamp=record.timestamp,
                run_id=record.run_id,
            )
        if not result.has_more:
            break
        cursor = result.cursor
    return dict(sorted(latest.items()))


def stale_batches(instance: dg.DagsterInstance, current_recipe_hash: str) -> list[BatchVersion]:
    """Batches whose latest generation ran with a recipe hash other than ``current_recipe_hash``."""
    return [v for v in latest_batch_versions(instance).values() if v.recipe_hash != current_recipe_hash]

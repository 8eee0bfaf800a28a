"""Which batches exist and which recipe built them: find batches built with a recipe other than the current one.

Every materialization of ``generated_candidates`` records ``dagster/code_version`` = the recipe hash it ran
with, so a batch is *stale* when its latest materialization's code version differs from the current recipe's
hash. Used by ``synqa stale``, ``synqa backfill-stale`` and the ``stale_batches_sensor``.

Only *committed* runs count (:func:`synqa_dagster.runs.committed`): a run that failed was rolled back, so its
materializations in the event log describe outputs that were never published.
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
    runs: dict[str, bool] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=500, cursor=cursor)
        for record in result.records:
            mat = record.asset_materialization
            if mat is None or mat.partition is None or mat.partition in latest:
                continue  # descending order: the first one seen per partition is the latest
            if record.run_id not in runs:
                runs[record.run_id] = _published_by(instance, record.run_id)
            if not runs[record.run_id]:
                continue  # a rolled-back (or still running) run published nothing
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


def latest_committed_record(instance: dg.DagsterInstance, asset: str, batch: str, also_run: str | None = None):
    """The event-log record of the newest materialization of ``asset`` for ``batch`` by a committed run (or by
    ``also_run``, the run asking), or None. ``.run_id`` and ``.asset_materialization`` say which and what."""
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[batch]), limit=50, cursor=cursor)
        for record in result.records:
            if record.asset_materialization is not None and (
                    record.run_id == also_run or _published_by(instance, record.run_id)):
                return record
        if not result.has_more:
            return None
        cursor = result.cursor


def _published_by(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a materialization recorded by ``run_id`` describes published outputs: the run committed, or the
    event came from outside any run of this instance (a runless report, e.g. ``report_runless_asset_event``)."""
    from synqa_dagster.runs import committed

    run = instance.get_run_by_id(run_id) if run_id else None
    return run is None or committed(run)
